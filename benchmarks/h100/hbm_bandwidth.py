"""Measured HBM bandwidth (device-to-device copy, bytes read + written) and the batch-1 decode limit.

    python3 -m benchmarks.h100.hbm_bandwidth [--preset llama-2-7b]

The decode limit of a bandwidth-bound batch-1 step is (weight bytes) / (measured bandwidth): every
weight is read once per generated token. Prints both (METHOD.md: measure the ceiling, don't quote it).
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama-2-7b")
    ap.add_argument("--gib", type=float, default=4.0)
    args = ap.parse_args()
    from llm_energy.measure.inference.presets import get_preset

    n = int(args.gib * 2**30) // 2
    src = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(20):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    times.sort()
    t = times[len(times) // 2]
    bw = 2 * n * 2 / t
    weights = get_preset(args.preset).n_params * 2
    print(f"hbm copy bandwidth: {bw / 1e12:.3f} TB/s (median of 20 copies of {args.gib:.0f} GiB, read + write)")
    print(f"{args.preset} bf16 weights: {weights / 1e9:.2f} GB -> batch-1 decode limit {1e3 * weights / bw:.2f} ms/step")


if __name__ == "__main__":
    main()
