#!/usr/bin/env bash
# GPU-machine steps for data/h200 (run through the device tool from the repo root; data/h200/README.md
# says which call ran which steps). usage: [BUDGET_S=575] bash benchmarks/gpu/session.sh STEP [STEP...]
#
# Steps: info | bw | dl:PRESET[:CAP_S] (decode-limit benchmark, static; cache if static fails or runs past
# CAP_S) | dltable | grid (llama-2-7b static, 81 cells, 2 repeats) | grid-cache (llama-2-7b cache, the same
# 81 cells, REPEATS, default 1) | third:PRESET:BACKEND[:CAP_S] (the 27-cell third of the grid,
# benchmarks/gpu/profile_cells.py) | batch:PRESET:BACKEND[:CAP_S] (batch sweep: BATCH_TIN x BATCH_TOUT x
# BATCHES) | refuse:PRESET:BACKEND:BATCH (the same sweep at a batch that must be refused before any work) |
# gputests (pytest -m gpu tests/test_gpu.py tests/test_static_recompile.py tests/test_static_eviction.py) | gputest:FILE[:CAP_S] (one file's).
# EXTRA: more profile options for the third step (falcon presets:
# EXTRA=--beyond-context, their 2048-token context is shorter than the grid's 4096).
# Issue 13's decode speed-ups (these run the tree's code, never SRC's: the variants exist only there):
# dlv:PRESET:VARIANTS[:CAP_S] (decode_limit --variants, e.g. dlv:llama-2-7b:base,fused,fused+cdt:420; rows in
# $OUT/decode_limit_variants.jsonl; DLV_ARGS: more decode_limit options, e.g. --kernels) | dlvtable |
# fusiontests (pytest -m gpu tests/test_fusion.py tests/test_packed_gqa.py tests/test_packed_gqa_math.py tests/test_cprefill.py tests/test_dynbatch.py) | gqabench[:CAP_S] (the decode
# attention alone, copy vs static+gqa vs gqa+math, grouped-query shapes, no model: benchmarks/gpu/gqa_attention.py;
# rows in $OUT/gqa_attention.jsonl) | dynbatch:PRESET[:CAP_S] (static vs static+dynbatch: compile s and ms/step at batches 16 /
# 2, 16, 64, benchmarks/gpu/dynbatch.py; rows in $OUT/dynbatch.jsonl; DYNBATCH_ARGS: more options).
# eager:PRESET[:CAP_S] (the cache backend's eager decode step (SDPA without cuDNN) at EAGER_LENGTHS, default 256,2048, against
# its loop with cuDNN attention allowed, generate() and an eager StaticCache: ms (new and seen key lengths), CPU ms, kernels, syncs, cudaMalloc
# per step; then at the first length the meter loops: the same cache loop while one poller runs (none, an empty thread,
# EstimateSampler, NvmlSampler at 20 / 100 ms, NVML from a spawned child, the profiler's samplers under a 1 ms GIL
# switch interval), with polls, CPU us a poll, NVML read latency (us) with and without the loop: benchmarks/gpu/eager_step.py,
# the tree's code; rows in $OUT/eager_step.jsonl; EAGER_ARGS: more options, e.g. --loops, --meter-lengths 256,2048).
# Code: SRC, default the frozen snapshot .gpu/src where it exists, else the tree itself.
# Every step runs under `timeout --signal=INT` inside one deadline (BUDGET_S from the start, RESERVE_S kept
# for packing): SIGINT stops the profiler cleanly and committed trials stay; a rerun resumes. The profile steps
# (grid, grid-cache, third, batch) also pass --time-budget-s = their cap (or the time left) - TB_MARGIN_S (15):
# the profiler defers a trial predicted not to finish in it (the one SIGINT would cut, lost) and runs the next that
# fits; the timeout stays as the backstop (a SRC snapshot without the option gets none). Stores land in
# $DEST (default data/h200/v2: the stores measured after the kv-cache-ignored fix; the first ones stay in
# data/h200/, flagged) and come back, with all of data/h200, as $OUT/h200.tgz; a machine still warm from the last call keeps its newest copy
# in /tmp/h200keep (every store, v2/ and any DEST's), which this script prefers over the tree's (FRESH=1: use the tree's).
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 COLUMNS=160
T0=$(date +%s); DEADLINE=$((T0 + ${BUDGET_S:-575})); RESERVE=${RESERVE_S:-30}
OUT=${OUT:-/tmp/out}; DEST=${DEST:-data/h200/v2}; mkdir -p "$OUT" data/h200 "$DEST"
exec > >(tee -a "$OUT/session.log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# which card this call runs on (every call, info or not: the lent machines of one kind are not one card)
nvidia-smi --query-gpu=index,uuid,serial,pci.bus_id --format=csv,noheader 2>/dev/null | sed 's/^/card: /'
# the frozen code snapshot (.gpu/src), not the tree's llm_energy: PYTHONSAFEPATH keeps the cwd off sys.path
if [ -z "${SRC:-}" ]; then if [ -d .gpu/src/llm_energy ]; then SRC=$PWD/.gpu/src; else SRC=$PWD; fi; fi
export PYTHONSAFEPATH=1 PYTHONPATH=/tmp/site:$SRC
LE="python3 -m llm_energy.cli"
KEEP=/tmp/h200keep
if [ -d "$KEEP" ] && [ -z "${FRESH:-}" ]; then
  for d in "$KEEP"/*/ "$KEEP"/*/*/; do [ -f "$d/manifest.json" ] || continue; n=${d#"$KEEP"/}; n=${n%/}; rm -rf "data/h200/$n"; mkdir -p "$(dirname "data/h200/$n")"; cp -a "$d" "data/h200/$n"; done
  echo "stores: the warm machine's copy from $KEEP"
fi
finish() {
  rm -rf "$KEEP"; mkdir -p "$KEEP"
  for d in data/h200/*/ data/h200/*/*/; do [ -f "$d/manifest.json" ] || continue; n=${d#data/h200/}; n=${n%/}; mkdir -p "$(dirname "$KEEP/$n")"; cp -a "$d" "$KEEP/$n"; done
  tar czf "$OUT/h200.tgz" --exclude=data/h200/plans data/h200 && ls -la "$OUT"
  echo "=== end $(date -u +%FT%TZ) after $(( $(date +%s) - T0 )) s"
}
trap finish EXIT
left() { echo $(( DEADLINE - RESERVE - $(date +%s) )); }
budget() {  # budget CAP_S CMD...: run CMD for at most CAP_S and at most the time left, SIGINT at the end
  local cap=$1; shift; local l; l=$(left); [ "$l" -lt "$cap" ] && cap=$l
  if [ "$cap" -lt 20 ]; then echo "--- skipped, ${l}s left: $*"; return 99; fi
  echo "--- $(date -u +%T) budget ${cap}s: $*"
  timeout --signal=INT -k 20 "$cap" "$@"; local rc=$?; echo "--- $(date -u +%T) rc=$rc"; return $rc
}
BW=${BW:-}
# PROFILE_ARGS: more options for every profile step (grid, grid-cache, third, batch), e.g. --sampler-process
# shellcheck disable=SC2206
PROFILE_COMMON=(--node-type h200 --idle-s 5 --no-live ${PROFILE_ARGS:-})
# `--time-budget-s N` for a profile step: its cap (or the time left, if less) minus TB_MARGIN_S; nothing for a SRC without it
tb() { grep -qs -- --time-budget-s "$SRC/llm_energy/cli/profile.py" || return 0; local c=$1 l m=${TB_MARGIN_S:-15}; l=$(left); [ "$l" -lt "$c" ] && c=$l; echo "--time-budget-s $(( c - m > 1 ? c - m : 1 ))"; }
for step in "$@"; do
  IFS=: read -r kind a b c <<< "$step"
  echo "=== step $step $(date -u +%FT%TZ) ($(left)s left)"
  case "$kind" in
    info)
      nvidia-smi --query-gpu=name,driver_version,pstate,power.draw,power.limit,temperature.gpu,clocks.sm,clocks.mem,clocks.max.sm,memory.total,memory.used --format=csv
      nvidia-smi | head -20; uname -r; nproc; free -g | head -2
      python3 -c "import sys, torch, transformers, polars, pynvml, llm_energy; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'polars', polars.__version__, 'nvml-py', getattr(pynvml, '__version__', '?'), 'llm_energy from', llm_energy.__file__)"
      $LE devices; $LE models ;;
    bw)
      BW=$(python3 -m benchmarks.gpu.decode_limit --bw-only | tee /dev/stderr | awk '/hbm copy bandwidth/ {print $4}')
      echo "BW=$BW TB/s" ;;
    dl)
      [ -n "$BW" ] || BW=$(python3 -m benchmarks.gpu.decode_limit --bw-only | awk '/hbm copy bandwidth/ {print $4}')
      budget "${b:-120}" python3 -m benchmarks.gpu.decode_limit --presets "$a" --bw "$BW" --jsonl "$OUT/decode_limit.jsonl"
      rc=$?
      if [ $rc -ne 0 ] && [ $rc -ne 99 ]; then
        echo "static did not finish for $a (rc=$rc): the cache backend instead"
        budget 60 python3 -m benchmarks.gpu.decode_limit --presets "$a" --backend cache --bw "$BW" --jsonl "$OUT/decode_limit.jsonl"
      fi ;;
    dltable)
      [ -f "$OUT/decode_limit.jsonl" ] && python3 -m benchmarks.gpu.decode_limit --table "$OUT/decode_limit.jsonl" ;;
    dlv)
      [ -n "$BW" ] || BW=$(python3 -m benchmarks.gpu.decode_limit --bw-only | awk '/hbm copy bandwidth/ {print $4}')
      budget "${c:-420}" env PYTHONPATH="/tmp/site:$PWD" python3 -m benchmarks.gpu.decode_limit --presets "$a" \
        --variants "$b" --bw "$BW" --jsonl "$OUT/decode_limit_variants.jsonl" ${DLV_ARGS:-} ;;
    dlvtable)
      [ -f "$OUT/decode_limit_variants.jsonl" ] && env PYTHONPATH="/tmp/site:$PWD" python3 -m benchmarks.gpu.decode_limit \
        --table "$OUT/decode_limit_variants.jsonl" ;;
    fusiontests)
      budget "${a:-180}" env PYTHONPATH="/tmp/site:$PWD" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_fusion.py tests/test_packed_gqa.py tests/test_packed_gqa_math.py tests/test_cprefill.py tests/test_dynbatch.py ;;
    grid)
      budget "${a:-600}" $LE profile --model llama-2-7b --backend static --tin 8..2048 --tout 8..2048 --repeats 2 \
        --warmups 0 --out "$DEST/grid-static" "${PROFILE_COMMON[@]}" $(tb "${a:-600}") ;;
    grid-cache)
      budget "${a:-600}" $LE profile --model llama-2-7b --backend cache --tin 8..2048 --tout 8..2048 --repeats ${REPEATS:-1} \
        --warmups 0 --out "$DEST/grid-cache" "${PROFILE_COMMON[@]}" $(tb "${a:-600}") ;;
    third)
      budget "${c:-600}" python3 -m benchmarks.gpu.profile_cells --cells third --model "$a" --backend "$b" --repeats 1 \
        --warmups 0 --out "$DEST/$a-$b" "${PROFILE_COMMON[@]}" ${EXTRA:-} $(tb "${c:-600}") ;;
    batch)
      budget "${c:-600}" $LE profile --model "$a" --backend "$b" --tin ${BATCH_TIN:-64,256} --tout ${BATCH_TOUT:-64,256} \
        --batch ${BATCHES:-1..256} --repeats 1 --warmups 0 --out "$DEST/batch-$a-$b" "${PROFILE_COMMON[@]}" $(tb "${c:-600}") ;;
    refuse)
      budget 60 $LE profile --model "$a" --backend "$b" --tin ${BATCH_TIN:-64,256} --tout ${BATCH_TOUT:-64,256} \
        --batch "$c" --repeats 1 --warmups 0 --out /tmp/refused "${PROFILE_COMMON[@]}"
      echo "refusal check $a $b batch $c: exit $? (2 = refused before any work)" ;;
    gqabench)
      budget "${a:-180}" python3 -m benchmarks.gpu.gqa_attention --bw "${BW:-4.24}" --jsonl "$OUT/gqa_attention.jsonl" ;;
    eager)
      budget "${b:-120}" env PYTHONPATH="/tmp/site:$PWD" python3 -m benchmarks.gpu.eager_step --preset "$a" \
        --lengths "${EAGER_LENGTHS:-256,2048}" --jsonl "$OUT/eager_step.jsonl" ${EAGER_ARGS:-} ;;
    dynbatch)
      budget "${b:-300}" env PYTHONPATH="/tmp/site:$PWD" python3 -m benchmarks.gpu.dynbatch --preset "$a" \
        --jsonl "$OUT/dynbatch.jsonl" ${DYNBATCH_ARGS:-} ;;
    gputest)  # gputest:FILE[:CAP_S]: one test file's GPU tests (e.g. the one a capped fusiontests step cut)
      budget "${b:-180}" env PYTHONPATH="/tmp/site:$PWD" python3 -m pytest -q -p no:cacheprovider -m gpu "$a" ;;
    gputests)
      budget "${a:-300}" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/test_static_recompile.py \
        tests/test_static_eviction.py ;;
    *) echo "unknown step $step" ;;
  esac
done
