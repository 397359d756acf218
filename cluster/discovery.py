"""Node discovery: every alive Ray node with its resources and node type, as typed records."""

from __future__ import annotations

from dataclasses import dataclass, field

import ray

from cluster.config import RESOURCE_PREFIX, PipelineConfig
from llm_energy.errors import UserError


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    address: str
    node_type: str | None  # from the custom resource "node_type:<name>"
    cpus: float
    gpus: float
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.node_type or '?'}/{self.node_id[:8]}"


def discover_nodes() -> list[NodeInfo]:
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = dict(n.get("Resources", {}))
        types = [k[len(RESOURCE_PREFIX):] for k in res if k.startswith(RESOURCE_PREFIX)]
        out.append(NodeInfo(n["NodeID"], n.get("NodeManagerAddress", ""), types[0] if types else None,
                            float(res.get("CPU", 0)), float(res.get("GPU", 0)), res))
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
