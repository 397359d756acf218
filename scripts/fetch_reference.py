"""`make reference`: fetch the authors' public measurement data (Wilkins, Keshav, Mortier 2024) into
``reference/wilkins2024/`` at the pinned commits, each file checked against its SHA-256.

The authors' repositories carry no licence, so the project never ships these files: each user fetches
them from the source. Tests that need them look in ``reference/`` (this script's output) and in
``../shared/reference/`` (a workplace copy), and skip with a pointer to this script otherwise.

Usage: python scripts/fetch_reference.py [--dest reference] [--base-url URL]
(``--base-url`` replaces ``https://github.com``, e.g. a mirror or a ``file://`` tree laid out as
``OWNER/REPO/raw/COMMIT/PATH``.)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import urllib.request
from pathlib import Path

ENERGY_INFERENCE = ("grantwilkins/energy-inference", "5c2cfa4a9bdb")
EASLI = ("grantwilkins/EASLI", "8887c48b6a9a")

# (destination under wilkins2024/, (repository, commit), path in the repository, sha256)
FILES = [
    ("grid/all-stats-raw.csv", ENERGY_INFERENCE, "plots/independence-test/all-stats-raw.csv",
     "d3642bc38713f6a4ca79263a92c4bc9da042d5a49be7794475ed289c2e5bf6be"),
    ("sweeps/all-input-stats.csv", ENERGY_INFERENCE, "plots/independence-test/all-input-stats.csv",
     "6f1a377d325a615304125540f493570efbf8087928fc8f4ce7346ed256d9cbad"),
    ("sweeps/all-output-stats.csv", ENERGY_INFERENCE, "plots/independence-test/all-output-stats.csv",
     "858811d1fb70a19ca2819dd77d2feca05b34218e119fc6da35bbe96fa3e29d50"),
    ("sweeps/all-input-scale-stats.csv", ENERGY_INFERENCE, "plots/parameter-scale-input-test/all-input-scale-stats.csv",
     "68d6ceec4006a8d5efe12cc230c0012d52b031520f4cd9165f1fc517e0d3915f"),
    ("sweeps/all-output-scale-stats.csv", ENERGY_INFERENCE,
     "plots/parameter-scale-output-test/all-output-scale-stats.csv",
     "a5f62c448781f5f08788af99c358fc520df69da3bd9010ad62dfc443a8d3152f"),
    ("served/mii-Llama-2-7b-chat-hf-1.csv", EASLI, "energy-measurements/mii-Llama-2-7b-chat-hf-1.csv",
     "8a610d0376c714367c0b9be3557d248501edeb8dd4a35ede7ac4209be218567c"),
    ("served/vllm-Llama-2-7b-chat-hf-1.csv", EASLI, "energy-measurements/vllm-Llama-2-7b-chat-hf-1.csv",
     "70059b1ff9d3066533afe8d4eeb4984f3cc1e5b719733e4ce9e998de7278fe35"),
    ("served/vllm-Llama-2-13b-chat-hf-1.csv", EASLI, "energy-measurements/vllm-Llama-2-13b-chat-hf-1.csv",
     "d46d2397680c79bb09883dc87fc452c62155b9635a194a1436f45e8a111fe0c5"),
    ("served/vllm-Llama-2-70b-chat-hf-2.csv", EASLI, "energy-measurements/vllm-Llama-2-70b-chat-hf-2.csv",
     "a08ceda1eb462516f56b7406ab0031074563f903f649e06dd787069b6d27ea07"),
    ("coefficients.json", EASLI, "routing/coefficients.json",
     "e8f494b559094c412b64922bb2571a07e0164c572126b88080e9c30368b252ff"),
]


def fetch(dest: Path, base_url: str = "https://github.com") -> int:
    """Fetch every missing or corrupt file; returns the number of files that could not be had."""
    bad = 0
    for rel, (repo, commit), path, sha in FILES:
        target = dest / "wilkins2024" / rel
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == sha:
            print(f"ok       {target}")
            continue
        url = f"{base_url.rstrip('/')}/{repo}/raw/{commit}/{path}"
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                data = r.read()
        except Exception as e:  # noqa: BLE001 - any network failure is one line
            print(f"FAILED   {url}: {e}", file=sys.stderr)
            bad += 1
            continue
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            print(f"FAILED   {url}: sha256 {got} != pinned {sha}; not written", file=sys.stderr)
            bad += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)
        print(f"fetched  {target} ({len(data):,} bytes)")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", default=str(Path(__file__).resolve().parents[1] / "reference"))
    ap.add_argument("--base-url", default="https://github.com")
    args = ap.parse_args(argv)
    bad = fetch(Path(args.dest), args.base_url)
    if bad:
        print(f"{bad} file(s) missing: tests that need them will skip", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
