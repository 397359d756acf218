#!/usr/bin/env bash
# GPU-machine steps (run through the device tool from the repo root; see benchmarks/h100/README.md).
# usage: bash benchmarks/h100/session.sh STEP [STEP...]; stores land in data/h100/ and come back as $OUT/h100.tgz
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" data/h100
LE="python3 -m llm_energy.cli"
budget() { timeout --signal=INT "$@"; }   # SIGINT: the profiler stops cleanly, committed trials stay
for step in "$@"; do
  echo "=== step $step $(date -u +%FT%TZ)"
  case "$step" in
    info)
      nvidia-smi --query-gpu=name,driver_version,power.draw,power.limit,temperature.gpu,clocks.sm --format=csv
      python3 -c "import torch, transformers, pynvml; print('torch', torch.__version__, 'transformers', transformers.__version__, 'nvml', pynvml.__version__ if hasattr(pynvml,'__version__') else '?')"
      $LE devices; $LE models ;;
    overhead-tiny)
      budget 150 python3 -m benchmarks.bench_sampler_overhead --model tiny-llama --backend cache --rounds 10 ;;
    overhead)
      budget 150 python3 -m benchmarks.bench_sampler_overhead --model tiny-llama --backend cache --rounds 10
      budget 240 python3 -m benchmarks.bench_sampler_overhead --model llama-2-7b --backend static --tout 256 --rounds 5 ;;
    static-quick)
      budget 300 $LE profile --model llama-2-7b --backend static --tin 8,64,512 --tout 8,64,512 --repeats 1 --warmups 0 \
        --node-type h100 --out data/h100/quick-static --no-live --idle-s 5 ;;
    issue3-cache)
      budget 560 $LE profile --model llama-2-7b --backend cache --tin 8,64,512 --tout 8,64,512 --repeats 2 --warmups 1 \
        --node-type h100 --out data/h100/issue3 --no-live --idle-s 5 ;;
    issue3-nocache)
      budget 560 $LE profile --model llama-2-7b --backend no-cache --tin 8,64,512 --tout 8,64,512 --repeats 2 --warmups 1 \
        --node-type h100 --out data/h100/issue3 --no-live --idle-s 5 ;;
    bw)
      python3 -m benchmarks.h100.hbm_bandwidth --preset llama-2-7b ;;
    static-grid)
      budget 560 $LE profile --model llama-2-7b --backend static --tin 8..2048 --tout 8..2048 --repeats ${REPEATS:-1} \
        --warmups 0 --node-type h100 --out data/h100/grid-static --no-live --idle-s 5 ;;
    cache-grid)
      budget 480 $LE profile --model llama-2-7b --backend cache --tin 8..2048 --tout 8..512 --repeats 1 --warmups 0 \
        --node-type h100 --out data/h100/grid-cache --no-live --idle-s 5 ;;
    nocache-sub)
      budget 200 $LE profile --model llama-2-7b --backend no-cache --tin 8,128,512,2048 --tout 8,32,128,256 --repeats 1 \
        --warmups 0 --node-type h100 --out data/h100/grid-nocache --no-live --idle-s 5 ;;
    batch-sub)
      budget 200 $LE profile --model llama-2-7b --backend cache --tin 64,512 --tout 64,256 --batch 1,4,16,64 --repeats 1 \
        --warmups 0 --node-type h100 --out data/h100/batch-cache --no-live --idle-s 5 ;;
    *) echo "unknown step $step" ;;
  esac
done
tar czf "$OUT/h100.tgz" data/h100 && ls -la "$OUT"
