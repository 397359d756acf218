#!/usr/bin/env bash
# One device call: the GPU tests, then a short llama-2-7b sweep per backend through the CLI, so code
# changed since data/h100/ was measured is proven on the hardware. Results come back under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LE="python3 -m llm_energy.cli"
echo "=== gpu tests $(date -u +%FT%TZ)"
timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
echo "=== devices"; $LE devices | tee "$OUT/devices.txt"
echo "=== refusal"; $LE profile --model llama-2-70b --tin 8 --tout 8 --out /tmp/r70 --no-live; echo "exit $?"
rm -rf /tmp/chk
for b in static cache; do
  echo "=== $b $(date -u +%FT%TZ)"
  timeout 200 $LE profile --model llama-2-7b --backend $b --tin 8,512 --tout 8,256 --repeats 1 --warmups 0 \
    --node-type h100 --out /tmp/chk --no-live --idle-s 3 2>&1 | tail -4
done
$LE show /tmp/chk --json > "$OUT/check_trials.json"
$LE check /tmp/chk | tail -12
