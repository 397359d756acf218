"""``llm-energy devices``: the devices and power meters found on this node, and why others were not."""

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

    from llm_energy.report.live import stdout_console

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
