"""The deployments file: which deployments the planner may use, with accuracy, nodes, hours and SLO.

YAML, loaded with ``yaml.safe_load``::

    hours: 1.0                      # optional default for every deployment
    deployments:
      - name: llama-2-7b            # the name plans use (unique)
        fit: llama-2-7b@a100x1/paper/b1   # the deployment key in FITS.json, as `predict` prints it
        accuracy: 50.97             # A_K, the accuracy score (e.g. the leaderboard mean)
        nodes: 2                    # optional: nodes serving it (default 1 when hours is given)
        hours: 1.0                  # optional: hours available; capacity = nodes x hours x 3600 s
        slo_s: 30                   # optional: a query may not go here if its predicted runtime exceeds this
        context_tokens: 2048        # optional: the longest tin + tout it serves (default: from the fits)
        batch: 64                   # optional: queries served together in one batch (default: the fit's batch,
                                    #   1 for a fit pooled over batch sizes, /b*); see below
        replicas: 4                 # optional (route): instances serving in parallel (default 1)
        max_batch: 1                # optional (route): queries one replica serves at once (default: batch, else 1)
        node_type: a100             # with an inventory: the node type one replica runs on
        replica_nodes: 1            # with an inventory: nodes one replica needs (default 1)
    inventory:                      # optional: the fleet; the planner then decides replicas per deployment
      a100: {nodes: 8, idle_w: 260} # nodes of this type that exist; idle_w (optional): W per idle node
      h100: {nodes: 4}

With an ``inventory`` the planner decides a whole number of replicas per deployment (within the nodes
of its type), each kept on over the window (``hours`` x 3600 s, or ``plan --window-s``) at its idle
power; a deployment may be off (``--min-share`` defaults to 0 there; give it to keep the paper's shares).

``batch`` b: the deployment serves its queries in batches of b. ``plan`` costs each query at the fit's
prediction at batch b: energy = the batch's energy / b, latency (what ``slo_s`` limits) = the batch's
runtime, and node-seconds (what the capacity counts) = the batch's runtime / b, since a node serving
batches of b finishes b queries per batch runtime. A fit made at one batch size (``/b8``) can only be
planned at that batch (a different one is an error naming the field); a fit pooled over batch sizes
(``/b*``) at any, beyond its fitted batch sizes flagged as extrapolation (``fitted_range``). ``route``'s
``max_batch`` defaults to ``batch``, so one key sets both; given both, ``plan`` uses ``batch`` and
``route`` ``max_batch``.

Every bad entry is a :class:`UserError` naming the file, the field (``deployments[1].accuracy``) and value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from llm_energy.errors import UserError, bad_value

DEPLOYMENT_KEYS = ("name", "fit", "accuracy", "nodes", "hours", "slo_s", "batch", "replicas", "max_batch",
                   "node_type", "replica_nodes", "context_tokens")
TOP_KEYS = ("deployments", "hours", "inventory")
NODE_TYPE_KEYS = ("nodes", "idle_w")


@dataclass(frozen=True)
class Deployment:
    """One deployment the planner may send queries to.

    ``accuracy``: A_K (any scale, e.g. percent); ``nodes``: nodes serving it; ``hours``: hours available;
    ``slo_s``: the latency SLO in seconds (None: none); ``batch``: the batch size ``plan`` plans it at
    (None: the fit's own, 1 for a pooled fit: :func:`llm_energy.plan.costs.plan_batches`); ``replicas``
    and ``max_batch`` (used by ``route``, ignored by ``plan``): instances serving in parallel and queries
    one serves at once (``max_batch`` defaults to ``batch``, else 1);
    ``context_tokens``: the longest tin + tout it can serve (None: the fits' context length of its model,
    :func:`llm_energy.plan.context.context_limits`); queries beyond it never go there.
    """

    name: str
    fit: str
    accuracy: float
    nodes: int | None = None
    hours: float | None = None
    slo_s: float | None = None
    batch: int | None = None
    replicas: int = 1
    max_batch: int = 1
    node_type: str | None = None
    replica_nodes: int = 1
    context_tokens: int | None = None

    @property
    def capacity_s(self) -> float | None:
        """Node-seconds available (nodes x hours x 3600), or None without ``hours`` (no capacity limit)."""
        if self.hours is None:
            return None
        return float(self.nodes or 1) * self.hours * 3600.0


@dataclass(frozen=True)
class NodeType:
    """One kind of node in the inventory: how many exist and, where known, the idle power of one (W)."""

    name: str
    nodes: int
    idle_w: float | None = None


@dataclass(frozen=True)
class DeploymentsFile:
    """The parsed deployments file: ``deployments`` in file order, ``path`` where it came from, and the
    ``inventory`` {node type: :class:`NodeType`} (None: no fleet, capacities from nodes x hours)."""

    path: str
    deployments: tuple[Deployment, ...]
    inventory: dict[str, NodeType] | None = None
    hours: float | None = None  # the file's top-level hours (an inventory plan's default window)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.deployments]

    def select(self, names: list[str], source: str = "--only") -> DeploymentsFile:
        """The deployments named in ``names`` (unknown names are a UserError)."""
        known = {d.name: d for d in self.deployments}
        for i, n in enumerate(names):
            if n in names[:i]:
                raise bad_value(source, n, "named twice")
            if n not in known:
                raise bad_value(source, n, f"unknown deployment; {self.path} defines {self.names}")
        return DeploymentsFile(self.path, tuple(known[n] for n in names), self.inventory, self.hours)


def _number(v: object, field: str, path: str, *, positive: bool, integer: bool = False) -> float:
    if isinstance(v, str):  # PyYAML (YAML 1.1) reads 1e-3 (no dot) as a string: accept numeric strings
        try:
            v = float(v)
        except ValueError:
            raise bad_value(field, v, "must be a finite number", source=path) from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise bad_value(field, v, "must be a finite number", source=path)
    if integer and float(v) != int(v):
        raise bad_value(field, v, "must be a whole number", source=path)
    if positive and v <= 0:
        raise bad_value(field, v, "must be > 0", source=path)
    return float(v)


def parse_deployments(doc: object, path: str = "<deployments>") -> DeploymentsFile:
    """Validate a loaded YAML document into a :class:`DeploymentsFile`."""
    if not isinstance(doc, dict) or "deployments" not in doc:
        raise UserError(f"{path}: expected a mapping with a 'deployments:' list")
    for k in doc:
        if k not in TOP_KEYS:
            raise bad_value(str(k), doc[k], f"unknown key; expected one of {', '.join(TOP_KEYS)}", source=path)
    default_hours = None
    if doc.get("hours") is not None:
        default_hours = _number(doc["hours"], "hours", path, positive=True)
    entries = doc["deployments"]
    if not isinstance(entries, list) or not entries:
        raise bad_value("deployments", entries, "must be a non-empty list", source=path)
    out: list[Deployment] = []
    seen: set[str] = set()
    for i, e in enumerate(entries):
        where = f"deployments[{i}]"
        if not isinstance(e, dict):
            raise bad_value(where, e, "must be a mapping with name, fit, accuracy", source=path)
        for k in e:
            if k not in DEPLOYMENT_KEYS:
                raise bad_value(f"{where}.{k}", e[k], f"unknown key; expected {', '.join(DEPLOYMENT_KEYS)}",
                                source=path)
        for k in ("name", "fit", "accuracy"):
            if k not in e:
                raise UserError(f"{path}: {where}: missing required key {k!r}")
        name, fit = e["name"], e["fit"]
        if not isinstance(name, str) or not name.strip():
            raise bad_value(f"{where}.name", name, "must be a non-empty string", source=path)
        if name in seen:
            raise bad_value(f"{where}.name", name, "duplicate deployment name", source=path)
        seen.add(name)
        if not isinstance(fit, str) or not fit.strip():
            raise bad_value(f"{where}.fit", fit, "must be a deployment key from FITS.json", source=path)
        acc = _number(e["accuracy"], f"{where}.accuracy", path, positive=False)
        if acc < 0:
            raise bad_value(f"{where}.accuracy", e["accuracy"], "must be >= 0", source=path)
        nodes = e.get("nodes")
        if nodes is not None:
            nodes = int(_number(nodes, f"{where}.nodes", path, positive=True, integer=True))
        hours = e.get("hours", default_hours)
        if hours is not None:
            hours = _number(hours, f"{where}.hours", path, positive=True)
        slo = e.get("slo_s")
        if slo is not None:
            slo = _number(slo, f"{where}.slo_s", path, positive=True)
        batch = None
        if e.get("batch") is not None:
            batch = int(_number(e["batch"], f"{where}.batch", path, positive=False, integer=True))
            if batch < 1:
                raise bad_value(f"{where}.batch", e["batch"], "must be >= 1 (queries served together in one batch)",
                                source=path)
        defaults = {"replicas": 1, "max_batch": batch or 1}  # route's slots per replica: the plan's batch
        whole = {k: int(_number(e.get(k, v), f"{where}.{k}", path, positive=False, integer=True))
                 for k, v in defaults.items()}
        for k, v in whole.items():
            if v < 1:
                raise bad_value(f"{where}.{k}", e[k], "must be >= 1", source=path)
        whole["replica_nodes"] = int(_number(e.get("replica_nodes", 1), f"{where}.replica_nodes", path, positive=True,
                                             integer=True))
        if e.get("context_tokens") is not None:
            whole["context_tokens"] = int(_number(e["context_tokens"], f"{where}.context_tokens", path, positive=True,
                                                  integer=True))
        node_type = e.get("node_type")
        if node_type is not None and (not isinstance(node_type, str) or not node_type.strip()):
            raise bad_value(f"{where}.node_type", node_type, "must be a node type of the inventory", source=path)
        out.append(Deployment(name=name, fit=fit, accuracy=acc, nodes=nodes, hours=hours, slo_s=slo, batch=batch,
                              node_type=node_type, **whole))
    inventory = _inventory(doc.get("inventory"), out, path)
    return DeploymentsFile(path=path, deployments=tuple(out), inventory=inventory, hours=default_hours)


def _inventory(doc: object, deps: list[Deployment], path: str) -> dict[str, NodeType] | None:
    """The ``inventory:`` section, checked against the deployments (each names a node type in it)."""
    if doc is None:
        for i, d in enumerate(deps):
            if d.node_type is not None or d.replica_nodes != 1:
                key = "node_type" if d.node_type is not None else "replica_nodes"
                raise bad_value(f"deployments[{i}].{key}", getattr(d, key), "needs an inventory: section", source=path)
        return None
    if not isinstance(doc, dict) or not doc:
        raise bad_value("inventory", doc, "must map node types to {nodes: N, idle_w: W}", source=path)
    inv = {}
    for name, e in doc.items():
        where = f"inventory.{name}"
        if not isinstance(e, dict) or "nodes" not in e:
            raise bad_value(where, e, "must be a mapping with nodes (and optionally idle_w)", source=path)
        for k in e:
            if k not in NODE_TYPE_KEYS:
                raise bad_value(f"{where}.{k}", e[k], f"unknown key; expected {', '.join(NODE_TYPE_KEYS)}", source=path)
        nodes = int(_number(e["nodes"], f"{where}.nodes", path, positive=False, integer=True))
        if nodes < 0:
            raise bad_value(f"{where}.nodes", e["nodes"], "must be >= 0", source=path)
        idle = None if e.get("idle_w") is None else _number(e["idle_w"], f"{where}.idle_w", path, positive=False)
        if idle is not None and idle < 0:
            raise bad_value(f"{where}.idle_w", e["idle_w"], "must be >= 0", source=path)
        inv[str(name)] = NodeType(str(name), nodes, idle)
    for i, d in enumerate(deps):
        if d.node_type not in inv:
            raise bad_value(f"deployments[{i}].node_type", d.node_type,
                            f"must name a node type of the inventory ({', '.join(inv)})", source=path)
        if d.nodes is not None:
            raise bad_value(f"deployments[{i}].nodes", d.nodes, "with an inventory the planner decides the "
                            "replicas (nodes = replicas x replica_nodes); drop nodes", source=path)
    return inv


def load_deployments(path: str | Path) -> DeploymentsFile:
    """Read and validate a deployments YAML file (``yaml.safe_load``)."""
    p = Path(path)
    if not p.is_file():
        raise bad_value("--deployments", str(p), "no such file")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_deployments(doc, str(p))
