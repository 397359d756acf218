"""``llm-energy models``: the shipped presets with their sizes and memory needs."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model presets with parameter counts and memory needs",
                       description="List the shipped model presets (real architectures, random weights) with "
                                   "parameter counts, bf16 weight size, KV-cache size and whether they fit here.")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from llm_energy.measure.inference.sizing import free_memory_bytes
    from llm_energy.measure.inference.presets import list_presets, memory_needed_bytes

    try:
        import torch

        devs = [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]
    except Exception:  # noqa: BLE001
        devs = ["cpu"]
    free = {d: free_memory_bytes(d) for d in devs}
    rows = []
    for p in list_presets():
        dtype = "bfloat16" if devs[0].startswith("cuda") else "float32"
        need, weights, _ = memory_needed_bytes(p.n_params, p.hf_config, dtype, 1, 4096)
        fits_one = [d for d in devs if free[d] >= need]
        rows.append({
            "preset": p.name, "family": p.family, "params": p.n_params,
            "weights_bf16_gib": p.n_params * 2 / 2**30, "kv_mib_per_1k_tokens": p.kv_bytes_per_token * 1000 / 2**20,
            "needs_gib": need / 2**30, "dtype_here": dtype,
            "fits_here": bool(fits_one) or (len(devs) > 1 and sum(free.values()) >= need and devs[0] != "cpu"),
            "description": p.description,
        })
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    from rich.table import Table

    from llm_energy.report.live import stdout_console

    tab = Table(title=f"model presets (memory here: {', '.join(f'{d} {free[d] / 2**30:.0f} GiB free' for d in devs)})")
    for c in ("preset", "family", "params", "bf16 weights GiB", "KV MiB/1k tok", "needs GiB here", "fits here"):
        tab.add_column(c, justify="right" if c not in ("preset", "family", "fits here") else "left")
    for r in rows:
        n = r["params"]
        tab.add_row(r["preset"], r["family"], f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M",
                    f"{r['weights_bf16_gib']:.2f}", f"{r['kv_mib_per_1k_tokens']:.1f}",
                    f"{r['needs_gib']:.1f} ({r['dtype_here']})", "yes" if r["fits_here"] else "no")
    stdout_console().print(tab)
    return 0
