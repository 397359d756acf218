"""The job config (YAML): node types and their deployments, the sweep, the workload, the planner.

::

    out: out/demo                       # where the store, fits, plan and report go (--out overrides)
    node_types:
      cpu-small:                        # matched to nodes by the custom resource "node_type:cpu-small"
        models: [tiny-llama]            # presets (or checkpoint dirs) profiled on every node of the type
        backend: cache                  # cache | no-cache | static
        threads: 1                      # torch threads on CPU nodes
        device: auto                    # auto | cpu | cuda
        gpus_per_actor: 1               # GPU nodes: one actor per this many GPUs (2 shards a model over 2)
    sweep: {tin: [8, 32, 128], tout: [8, 32], batch: [1], repeats: 2, warmups: 1, seed: 0,
            min_window_s: 0.3, idle_s: 1,
            max_concurrent: 1}          # slots profiling at once (default all; 1 where simulated nodes share CPUs)
    workload: {synth: chat, n: 2000, seed: 0}        # or {path: trace.csv}
    planner:
      zeta: 0.5
      min_share: 0.01
      solver: glpk
      pareto_steps: 11                  # optional: also sweep zeta over 11 points (the report's Pareto front)
      deployments:                      # which profiled (model, node type), accuracy A_K, nodes
        - {name: small, node_type: cpu-small, model: tiny-llama, accuracy: 50.0, nodes: 2}
    report: {grid_gco2_per_kwh: 400}    # optional: carbon beside energy, at this grid intensity

Every field is validated before any work starts; errors name the file and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from llm_energy.measure.inference.backends import BACKENDS
from llm_energy.measure.design import SweepDesign
from llm_energy.errors import UserError
from llm_energy.io import read_document
from llm_energy.measure.inference.presets import get_preset

RESOURCE_PREFIX = "node_type:"


@dataclass(frozen=True)
class NodeTypeConfig:
    name: str
    models: tuple[str, ...]
    backend: str = "cache"
    threads: int | None = None
    device: str = "auto"
    gpus_per_actor: int = 1


@dataclass(frozen=True)
class SweepConfig:
    tin: tuple[int, ...]
    tout: tuple[int, ...]
    batch: tuple[int, ...] = (1,)
    repeats: int = 2
    warmups: int = 1
    seed: int = 0
    min_window_s: float | None = None
    idle_s: float = 2.0
    sample_period_s: float = 0.02
    max_concurrent: int | None = None  # slots profiling at once, cluster-wide (None: all of them)

    def design(self) -> SweepDesign:
        return SweepDesign.grid(self.tin, self.tout, self.batch, self.repeats, self.warmups, self.seed)


@dataclass(frozen=True)
class PlanDeployment:
    name: str
    node_type: str
    model: str
    accuracy: float
    nodes: int | None = None
    hours: float | None = None
    slo_s: float | None = None


@dataclass(frozen=True)
class PlannerConfig:
    deployments: tuple[PlanDeployment, ...]
    zeta: float = 0.5
    min_share: float = 0.01
    solver: str = "glpk"
    pareto_steps: int | None = None


@dataclass(frozen=True)
class WorkloadConfig:
    synth: str | None = "chat"
    n: int = 1000
    seed: int = 0
    path: str | None = None


@dataclass(frozen=True)
class PipelineConfig:
    source: str
    out: str
    node_types: dict[str, NodeTypeConfig]
    sweep: SweepConfig
    workload: WorkloadConfig
    planner: PlannerConfig | None = None
    grid_gco2_per_kwh: float | None = None  # report: carbon at this grid intensity


def _get(d: dict, key: str, where: str, types, required: bool = True, default=None):
    if key not in d:
        if required:
            raise UserError(f"{where}.{key}: missing")
        return default
    v = d[key]
    ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)))
    if not ok:
        names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise UserError(f"{where}.{key}={v!r}: expected {names}")
    return v


def _int_list(v, where: str) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v):
        raise UserError(f"{where}={v!r}: expected a non-empty list of positive integers")
    return tuple(v)


def _only(d: dict, known: set[str], where: str) -> None:
    for k in d:
        if k not in known:
            raise UserError(f"{where}.{k}: unknown field (known: {', '.join(sorted(known))})")


def load_config(path: str | Path) -> PipelineConfig:
    p = Path(path)
    d = read_document(p, "config file")
    src = str(p)
    if not isinstance(d, dict):
        raise UserError(f"{src}: expected a mapping at the top level")
    _only(d, {"out", "node_types", "sweep", "workload", "planner", "report"}, src)
    nts_raw = _get(d, "node_types", src, dict)
    if not nts_raw:
        raise UserError(f"{src}: node_types: empty")
    node_types: dict[str, NodeTypeConfig] = {}
    for name, nt in nts_raw.items():
        where = f"{src}: node_types.{name}"
        if not isinstance(nt, dict):
            raise UserError(f"{where}: expected a mapping")
        _only(nt, {"models", "backend", "threads", "device", "gpus_per_actor"}, where)
        models = _get(nt, "models", where, list)
        if not models or not all(isinstance(m, str) for m in models):
            raise UserError(f"{where}.models={models!r}: expected a non-empty list of presets or checkpoint dirs")
        for m in models:
            if not Path(m).is_dir():
                try:
                    get_preset(m)
                except UserError:
                    raise UserError(f"{where}.models: {m!r} is not a preset or a directory") from None
        backend = _get(nt, "backend", where, str, False, "cache")
        if backend not in BACKENDS:
            raise UserError(f"{where}.backend={backend!r}: choose one of {', '.join(BACKENDS)}")
        device = _get(nt, "device", where, str, False, "auto")
        if device not in ("auto", "cpu", "cuda"):
            raise UserError(f"{where}.device={device!r}: choose auto, cpu or cuda")
        gpa = _get(nt, "gpus_per_actor", where, int, False, 1)
        if gpa < 1:
            raise UserError(f"{where}.gpus_per_actor={gpa}: expected a positive integer")
        node_types[str(name)] = NodeTypeConfig(str(name), tuple(models), backend, _get(nt, "threads", where, int, False, None),
                                               device, gpa)
    sw = _get(d, "sweep", src, dict)
    where = f"{src}: sweep"
    _only(sw, {"tin", "tout", "batch", "repeats", "warmups", "seed", "min_window_s", "idle_s", "sample_period_s",
               "max_concurrent"}, where)
    mw = _get(sw, "min_window_s", where, (int, float), False, None)
    mc = _get(sw, "max_concurrent", where, int, False, None)
    if mc is not None and mc < 1:
        raise UserError(f"{where}.max_concurrent={mc}: expected a positive integer (or leave it out: all slots at once)")
    sweep = SweepConfig(
        tin=_int_list(_get(sw, "tin", where, (list, int)), f"{where}.tin"),
        tout=_int_list(_get(sw, "tout", where, (list, int)), f"{where}.tout"),
        batch=_int_list(sw.get("batch", [1]), f"{where}.batch"),
        repeats=_get(sw, "repeats", where, int, False, 2), warmups=_get(sw, "warmups", where, int, False, 1),
        seed=_get(sw, "seed", where, int, False, 0), min_window_s=float(mw) if mw is not None else None,
        idle_s=float(_get(sw, "idle_s", where, (int, float), False, 2.0)),
        sample_period_s=float(_get(sw, "sample_period_s", where, (int, float), False, 0.02)),
        max_concurrent=mc,
    )
    try:
        sweep.design()
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    wl = d.get("workload") or {"synth": "chat", "n": 1000}
    where = f"{src}: workload"
    if not isinstance(wl, dict):
        raise UserError(f"{where}: expected a mapping")
    _only(wl, {"synth", "n", "seed", "path"}, where)
    workload = WorkloadConfig(synth=None if "path" in wl else str(wl.get("synth", "chat")),
                              n=_get(wl, "n", where, int, False, 1000), seed=_get(wl, "seed", where, int, False, 0),
                              path=_get(wl, "path", where, str, False, None))
    planner = None
    if d.get("planner") is not None:
        pl_ = d["planner"]
        where = f"{src}: planner"
        if not isinstance(pl_, dict):
            raise UserError(f"{where}: expected a mapping")
        _only(pl_, {"zeta", "min_share", "solver", "pareto_steps", "deployments"}, where)
        deps = []
        for i, e in enumerate(_get(pl_, "deployments", where, list)):
            w = f"{where}.deployments[{i}]"
            if not isinstance(e, dict):
                raise UserError(f"{w}: expected a mapping")
            _only(e, {"name", "node_type", "model", "accuracy", "nodes", "hours", "slo_s"}, w)
            nt = _get(e, "node_type", w, str)
            if nt not in node_types:
                raise UserError(f"{w}.node_type={nt!r}: unknown node type (configured: {', '.join(node_types)})")
            model = _get(e, "model", w, str)
            if model not in node_types[nt].models:
                raise UserError(f"{w}.model={model!r}: not profiled on node type {nt!r} "
                                f"(its models: {', '.join(node_types[nt].models)})")
            deps.append(PlanDeployment(_get(e, "name", w, str), nt, model, float(_get(e, "accuracy", w, (int, float))),
                                       _get(e, "nodes", w, int, False, None), _get(e, "hours", w, (int, float), False, None),
                                       _get(e, "slo_s", w, (int, float), False, None)))
        zeta = float(_get(pl_, "zeta", where, (int, float), False, 0.5))
        if not 0 <= zeta <= 1:
            raise UserError(f"{where}.zeta={zeta!r}: must be in [0, 1]")
        steps = _get(pl_, "pareto_steps", where, int, False, None)
        if steps is not None and steps < 2:
            raise UserError(f"{where}.pareto_steps={steps!r}: must be >= 2")
        planner = PlannerConfig(tuple(deps), zeta, float(_get(pl_, "min_share", where, (int, float), False, 0.01)),
                                str(_get(pl_, "solver", where, str, False, "glpk")), steps)
    grid = None
    if d.get("report") is not None:
        rep, where = d["report"], f"{src}: report"
        if not isinstance(rep, dict):
            raise UserError(f"{where}: expected a mapping")
        _only(rep, {"grid_gco2_per_kwh"}, where)
        grid = _get(rep, "grid_gco2_per_kwh", where, (int, float), False, None)
        if grid is not None and not (grid >= 0 and grid == grid and grid != float("inf")):
            raise UserError(f"{where}.grid_gco2_per_kwh={grid!r}: must be a finite number >= 0")
    return PipelineConfig(src, str(_get(d, "out", src, str, False, "out/pipeline")), node_types, sweep, workload, planner,
                          None if grid is None else float(grid))
