"""Run every benchmark in benchmarks/ in turn (``make bench``); each prints its own figures."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    failed = []
    for name in names:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        r = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], cwd=here.parent)
        if r.returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    importlib.invalidate_caches()
    sys.exit(main())
