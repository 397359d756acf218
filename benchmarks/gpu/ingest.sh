#!/usr/bin/env bash
# Here, after a device call: bash benchmarks/gpu/ingest.sh FILES_AT CALL_NAME [STORE[=DEST]...]
# Unpacks FILES_AT/h200.tgz and keeps the call's log and result rows under data/h200/logs/ (CALL_NAME.log,
# CALL_NAME-decode_limit.jsonl, CALL_NAME-decode_limit_variants.jsonl, ...).
# With no STORE: every returned store (data/h200/*/, data/h200/*/*/: v2/ and any DEST= of session.sh) replaces the
# local one (the device's copy is a superset) and every store is compacted. With STOREs (paths under data/h200 in
# the archive, e.g. v2/mixtral-8x7b-static+gqa+math or v2ab/batch-mistral-7b-static=v2/ab-batch-mistral-7b-static):
# only those, each to DEST (default: the same path), checked at full resolution first (`llm-energy check`, kept as
# logs/SESSION-check-NAME-raw.txt, SESSION = CALL_NAME up to "-call", NAME = DEST's last part) and then compacted
# (--decimate-ms 100, as data/h100). Prints the stores' sizes. PY: the python to use (default .venv/bin/python).
set -euo pipefail
src=$1; name=$2; shift 2
PY=(${PY:-.venv/bin/python})
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tar xzf "$src/h200.tgz" -C "$tmp"
mkdir -p data/h200/logs
[ -f "$src/session.log" ] && cp "$src/session.log" "data/h200/logs/$name.log"
for f in "$src"/*.jsonl; do [ -f "$f" ] && cp "$f" "data/h200/logs/$name-$(basename "$f")"; done
take() {  # take REL DEST: one store of the archive to data/h200/DEST
  local from="$tmp/data/h200/$1" to="data/h200/$2"
  [ -f "$from/manifest.json" ] || { echo "ingest: $src/h200.tgz has no store data/h200/$1" >&2; exit 2; }
  rm -rf "$to"; mkdir -p "$(dirname "$to")"; cp -a "$from" "$to"; echo "store $2 <- $src ($1)"
}
if [ $# -eq 0 ]; then
  for d in "$tmp"/data/h200/*/ "$tmp"/data/h200/*/*/; do
    [ -f "$d/manifest.json" ] || continue; n=${d#"$tmp"/data/h200/}; take "${n%/}" "${n%/}"
  done
  for d in data/h200/*/ data/h200/*/*/; do
    [ -f "$d/manifest.json" ] && "${PY[@]}" -m llm_energy.cli compact "$d" --decimate-ms 100
  done
else
  session=${name%%-call*}
  for spec in "$@"; do
    rel=${spec%%=*}; dest=${spec#*=}; take "$rel" "$dest"
    raw="data/h200/logs/$session-check-$(basename "$dest")-raw.txt"
    "${PY[@]}" -m llm_energy.cli check "data/h200/$dest" > "$raw" 2>&1
    head -1 "$raw"
    "${PY[@]}" -m llm_energy.cli compact "data/h200/$dest" --decimate-ms 100
  done
fi
du -sh data/h200/* | sort -k2
