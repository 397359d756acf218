"""Measured HBM bandwidth (device-to-device copy, bytes read + written) and the batch-1 decode limit.

    python3 -m benchmarks.h100.hbm_bandwidth [--preset llama-2-7b]

The decode limit of a bandwidth-bound batch-1 step is (weight bytes) / (measured bandwidth): every
weight is read once per generated token. Prints both (METHOD.md: measure the ceiling, don't quote it).
"""

from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama-2-7b")
    ap.add_argument("--gib", type=float, default=4.0)
    args = ap.parse_args()
    from benchmarks.gpu.decode_limit import measure_bandwidth
    from llm_energy.measure.inference.presets import get_preset

    bw = measure_bandwidth(args.gib, reps=20)
    weights = get_preset(args.preset).n_params * 2
    print(f"hbm copy bandwidth: {bw / 1e12:.3f} TB/s (median of 20 copies of {args.gib:.0f} GiB, read + write)")
    print(f"{args.preset} bf16 weights: {weights / 1e9:.2f} GB -> batch-1 decode limit {1e3 * weights / bw:.2f} ms/step")


if __name__ == "__main__":
    main()
