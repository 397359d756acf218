#!/usr/bin/env bash
# Here, after a device call: bash benchmarks/gpu/ingest.sh FILES_AT CALL_NAME
# unpacks FILES_AT/h200.tgz into data/h200 store by store (each returned store replaces the local one: the
# device's copy is a superset), keeps the call's log and decode-limit results under data/h200/logs/,
# compacts every store (--decimate-ms 100, as data/h100; run `llm-energy check` on FILES_AT's raw stores first
# for full-resolution check figures) and prints the stores' sizes. PY: the python to use (default .venv/bin/python).
set -euo pipefail
src=$1; name=$2
tmp=$(mktemp -d); tar xzf "$src/h200.tgz" -C "$tmp"
mkdir -p data/h200/logs
for d in "$tmp"/data/h200/*/ "$tmp"/data/h200/v2/*/; do
  [ -f "$d/manifest.json" ] || continue; n=${d#"$tmp"/data/h200/}; n=${n%/}
  rm -rf "data/h200/$n"; mkdir -p "$(dirname "data/h200/$n")"; cp -a "$d" "data/h200/$n"; echo "store $n <- $src"
done
[ -f "$src/session.log" ] && cp "$src/session.log" "data/h200/logs/$name.log"
[ -f "$src/decode_limit.jsonl" ] && cp "$src/decode_limit.jsonl" "data/h200/logs/$name-decode_limit.jsonl"
rm -rf "$tmp"
PY=(${PY:-.venv/bin/python})
for d in data/h200/*/ data/h200/v2/*/; do
  [ -f "$d/manifest.json" ] || continue
  "${PY[@]}" -m llm_energy.cli compact "$d" --decimate-ms 100
done
du -sh data/h200/*
