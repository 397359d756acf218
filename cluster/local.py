"""A local multi-raylet Ray cluster on this machine (tests and ``make demo``).

One machine only *simulates* heterogeneity: raylets differ by custom resources
(``node_type:<name>``), CPU counts and the presets the config gives each type, not by hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.config import RESOURCE_PREFIX


@dataclass(frozen=True)
class LocalNode:
    node_type: str
    num_cpus: int = 1


def start_local_cluster(nodes: list[LocalNode], *, head_type: str | None = None, dashboard: bool = False,
                        object_store_mb: int = 128, system_config: dict | None = None):
    """Start a head plus one raylet per entry; returns the ``ray.cluster_utils.Cluster``.

    The head gets the first entry's resources when ``head_type`` is None (so it also profiles) and
    runs the dashboard's job server when ``dashboard`` is True (``ray job submit`` needs it).
    """
    from ray.cluster_utils import Cluster

    first, rest = nodes[0], nodes[1:]
    head_args = {
        "num_cpus": first.num_cpus,
        "resources": {f"{RESOURCE_PREFIX}{head_type or first.node_type}": 1},
        "include_dashboard": dashboard,
        "object_store_memory": object_store_mb * 2**20,
    }
    if dashboard:
        head_args["dashboard_host"] = "127.0.0.1"
    if system_config:
        head_args["_system_config"] = system_config
    c = Cluster(initialize_head=True, head_node_args=head_args)
    for n in rest:
        c.add_node(num_cpus=n.num_cpus, resources={f"{RESOURCE_PREFIX}{n.node_type}": 1},
                   object_store_memory=object_store_mb * 2**20)
    c.wait_for_nodes()
    return c


def dashboard_url(cluster) -> str:
    from cluster.connect import connect

    ctx = connect(cluster.address)
    url = ctx.dashboard_url
    return url if url.startswith("http") else f"http://{url}"
