"""Exit 0 when eager_step.py's rows say the eager cache step does not grow with the key length.

Used between device calls (data/h200/README.md, "What remains"): the eager grid (``grid-cache``) is
measured only once the ``cache`` loop's step at the longest length is within ``--ratio`` of the shortest,
both cold (a new key length) and repeated, and under ``--max-ms``. Otherwise the eager step still has a
defect (as cuDNN's per-length graphs were, docs/h200.md "Sixth session") and the grid would measure it.

    python3 benchmarks/gpu/eager_gate.py OUT/eager_step.jsonl [--loop cache] [--ratio 1.3] [--max-ms 40]
"""
from __future__ import annotations

import argparse
import json
import sys


def gate(rows: list[dict], loop: str, ratio: float, max_ms: float) -> tuple[bool, str]:
    """(passes, one line saying why) for the rows of ``loop``."""
    by_len = {r["tin"]: r for r in rows if r.get("loop") == loop and r.get("wall_ms") is not None}
    if len(by_len) < 2:
        return False, f"{loop}: rows at {sorted(by_len)} key lengths, need two or more"
    short, long_ = by_len[min(by_len)], by_len[max(by_len)]
    base = min(short["wall_ms"], short.get("wall_ms_repeat") or short["wall_ms"])
    worst = max(long_["wall_ms"], long_.get("wall_ms_repeat") or 0.0)
    ok = worst <= ratio * base and worst <= max_ms
    return ok, (f"{loop}: {worst:.2f} ms/step at {max(by_len)} (worst of cold, repeat) against {base:.2f} at "
                f"{min(by_len)}: {worst / base:.2f}x, limits {ratio}x and {max_ms} ms -> {'pass' if ok else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("jsonl")
    p.add_argument("--loop", default="cache")
    p.add_argument("--ratio", type=float, default=1.3)
    p.add_argument("--max-ms", type=float, default=40.0)
    a = p.parse_args(argv)
    try:
        with open(a.jsonl) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        print(f"eager gate: {a.jsonl}: {e} -> FAIL")
        return 1
    ok, line = gate(rows, a.loop, a.ratio, a.max_ms)
    print(f"eager gate: {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
