"""Node discovery: every alive Ray node with its resources, node type and hardware, as typed records.

The hardware (CPU model, memory, GPU kinds and memory from NVML, power meters) comes from a small
task pinned to each node that runs :func:`llm_energy.measure.hardware.probe_hardware` there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.config import RESOURCE_PREFIX, PipelineConfig
from llm_energy.errors import UserError
from llm_energy.measure.hardware import NodeHardware, probe_hardware

PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    address: str
    node_type: str | None  # from the custom resource "node_type:<name>"
    cpus: float
    gpus: float
    resources: dict[str, float] = field(default_factory=dict)
    hardware: NodeHardware | None = None  # None when discovered without probing

    @property
    def label(self) -> str:
        return f"{self.node_type or '?'}/{self.node_id[:8]}"


@ray.remote(num_cpus=0, max_retries=0)
def _probe() -> NodeHardware:
    return probe_hardware()


def discover_nodes(probe: bool = False) -> list[NodeInfo]:
    """Alive nodes; with ``probe`` each one also runs the hardware probe (in parallel, pinned)."""
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = dict(n.get("Resources", {}))
        types = [k[len(RESOURCE_PREFIX):] for k in res if k.startswith(RESOURCE_PREFIX)]
        out.append(NodeInfo(n["NodeID"], n.get("NodeManagerAddress", ""), types[0] if types else None,
                            float(res.get("CPU", 0)), float(res.get("GPU", 0)), res))
    if probe and out:
        refs = [_probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)).remote()
                for n in out]
        hw = ray.get(refs, timeout=PROBE_TIMEOUT_S)
        out = [dataclasses.replace(n, hardware=h) for n, h in zip(out, hw)]
    return sorted(out, key=lambda x: (x.node_type or "", x.node_id))


def nodes_by_type(cfg: PipelineConfig, nodes: list[NodeInfo]) -> dict[str, list[NodeInfo]]:
    """The config's node types matched to live nodes; a configured type with no node is an error."""
    out: dict[str, list[NodeInfo]] = {t: [n for n in nodes if n.node_type == t] for t in cfg.node_types}
    missing = [t for t, ns in out.items() if not ns]
    if missing:
        seen = sorted({n.node_type for n in nodes if n.node_type})
        raise UserError(f"{cfg.source}: node_types.{missing[0]}: no alive node has the resource "
                        f"'{RESOURCE_PREFIX}{missing[0]}' (node types in the cluster: {', '.join(seen) or 'none'})")
    return out
