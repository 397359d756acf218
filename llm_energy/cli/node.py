"""The node-facing commands: what this node has and what it can run.

* ``llm-energy devices``: the devices and power meters found on this node, and why others were not.
* ``llm-energy models``: the shipped presets with their sizes and memory needs (and whether they fit here).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from dataclasses import asdict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list this node's devices and power meters",
                       description="List the devices and power meters (NVML, RAPL, estimate) found on this node, "
                                   "and why the missing ones were not found.")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of tables")
    p.set_defaults(func=cmd_devices)
    p = sub.add_parser("models", help="list model presets with parameter counts and memory needs",
                       description="List the shipped model presets (real architectures, random weights) with "
                                   "parameter counts, bf16 weight size, KV-cache size and whether they fit here.")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_models)


def cmd_devices(args: argparse.Namespace) -> int:
    from llm_energy.measure.samplers.discover import describe_meters
    from llm_energy.measure.samplers.estimate import cpu_model

    node = socket.gethostname()
    reports = describe_meters(node)
    try:
        import torch

        cuda = {"available": torch.cuda.is_available(), "count": torch.cuda.device_count(), "torch": torch.__version__}
    except Exception as e:  # noqa: BLE001
        cuda = {"available": False, "count": 0, "error": str(e)}
    info = {
        "node": node, "cpu": cpu_model(), "logical_cores": os.cpu_count(), "cuda": cuda,
        "meters": [{"meter": r.meter, "found": r.found, "why": r.why} for r in reports],
        "devices": [asdict(d) for r in reports for d in r.devices],
    }
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    from rich.table import Table

    from llm_energy.report.tables import stdout_console

    con = stdout_console()
    con.print(f"node {node}: {info['cpu']}, {info['logical_cores']} logical cores; torch CUDA "
              f"{'available, ' + str(cuda['count']) + ' GPU(s)' if cuda['available'] else 'not available'}")
    tab = Table(title="devices and meters")
    for c in ("device", "name", "kind", "source", "memory GiB (free/total)", "power limit W", "note"):
        tab.add_column(c)
    for d in info["devices"]:
        mem = (f"{d['memory_free_b'] / 2**30:.1f}/{d['memory_total_b'] / 2**30:.1f}" if d["memory_total_b"] else "-")
        lim = f"{d['power_limit_w']:.0f}" if d["power_limit_w"] else "-"
        tab.add_row(d["device"], d["name"], d["kind"], d["source"], mem, lim, d["note"])
    con.print(tab)
    for r in reports:
        if not r.found:
            con.print(f"{r.meter}: not found: {r.why}")
        elif r.meter == "estimate":
            con.print("estimate: CPU energy here is utilisation x TDP, NOT a measurement; it is labelled 'estimate'")
    return 0


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

    from llm_energy.report.tables import stdout_console

    tab = Table(title=f"model presets (memory here: {', '.join(f'{d} {free[d] / 2**30:.0f} GiB free' for d in devs)})")
    # a preset name is what the user types next: never cut (issue 16: "falcon-4…" at 80 columns)
    tab.add_column("preset", no_wrap=True, min_width=max((len(r["preset"]) for r in rows), default=6))
    for c in ("family", "params", "bf16 weights GiB", "KV MiB/1k tok", "needs GiB here", "fits here"):
        tab.add_column(c, justify="right" if c not in ("family", "fits here") else "left", overflow="fold")
    for r in rows:
        n = r["params"]
        tab.add_row(r["preset"], r["family"], f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M",
                    f"{r['weights_bf16_gib']:.2f}", f"{r['kv_mib_per_1k_tokens']:.1f}",
                    f"{r['needs_gib']:.1f} ({r['dtype_here']})", "yes" if r["fits_here"] else "no")
    stdout_console().print(tab)
    return 0
