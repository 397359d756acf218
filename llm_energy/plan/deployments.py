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
        replicas: 4                 # optional (route): instances serving in parallel (default 1)
        max_batch: 1                # optional (route): queries one replica serves at once (default 1)

Every bad entry is a :class:`UserError` naming the file, the field (``deployments[1].accuracy``) and value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from llm_energy.errors import UserError, bad_value

DEPLOYMENT_KEYS = ("name", "fit", "accuracy", "nodes", "hours", "slo_s", "replicas", "max_batch")
TOP_KEYS = ("deployments", "hours")


@dataclass(frozen=True)
class Deployment:
    """One deployment the planner may send queries to.

    ``accuracy``: A_K (any scale, e.g. percent); ``nodes``: nodes serving it; ``hours``: hours available;
    ``slo_s``: the latency SLO in seconds (None: none); ``replicas`` and ``max_batch`` (used by
    ``route``, ignored by ``plan``): instances serving in parallel and queries one serves at once.
    """

    name: str
    fit: str
    accuracy: float
    nodes: int | None = None
    hours: float | None = None
    slo_s: float | None = None
    replicas: int = 1
    max_batch: int = 1

    @property
    def capacity_s(self) -> float | None:
        """Node-seconds available (nodes x hours x 3600), or None without ``hours`` (no capacity limit)."""
        if self.hours is None:
            return None
        return float(self.nodes or 1) * self.hours * 3600.0


@dataclass(frozen=True)
class DeploymentsFile:
    """The parsed deployments file: ``deployments`` in file order, ``path`` where it came from."""

    path: str
    deployments: tuple[Deployment, ...]

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
        return DeploymentsFile(self.path, tuple(known[n] for n in names))


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
        whole = {k: int(_number(e.get(k, 1), f"{where}.{k}", path, positive=False, integer=True))
                 for k in ("replicas", "max_batch")}
        for k, v in whole.items():
            if v < 1:
                raise bad_value(f"{where}.{k}", e[k], "must be >= 1", source=path)
        out.append(Deployment(name=name, fit=fit, accuracy=acc, nodes=nodes, hours=hours, slo_s=slo, **whole))
    return DeploymentsFile(path=path, deployments=tuple(out))


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
