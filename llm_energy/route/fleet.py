"""The fleet ``route`` serves on: deployments with replicas, batch slots, idle power, and the predicted
energy and runtime of every query class on every deployment (computed once, as matrices).

Per query on deployment K (from :func:`llm_energy.fit.fits.predict`): runtime R = the fitted runtime at
batch b, energy E = the fitted (gross) energy at batch b divided by b, where b is ``max_batch`` for a
fit pooled over batch sizes (``/b*``) or fitted at that batch, and the fit's own batch otherwise (a
warning says so when that differs from ``max_batch``: each of the replica's slots then runs at that
batch's speed and energy). Negative predictions (the published fits have some) are clipped to 0, as
``plan`` does by default. A replica that is on but serves nothing draws ``idle_w`` (from the fits file
when it carries ``idle_w`` per deployment, else ``--idle-w``, else 0 with a warning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from llm_energy.errors import UserError, bad_value


@dataclass
class Fleet:
    """Deployments (K) and class predictions (C x K). ``qclass`` maps each query of the trace to its class."""

    names: tuple[str, ...]
    fit_keys: tuple[str, ...]
    accuracy: np.ndarray
    replicas: np.ndarray
    max_batch: np.ndarray
    idle_w: np.ndarray
    slo_cap: tuple[float | None, ...]
    tin: np.ndarray  # per class
    tout: np.ndarray
    count: np.ndarray
    energy_j: np.ndarray  # (C, K) J per query
    runtime_s: np.ndarray  # (C, K) s per query
    qclass: np.ndarray  # (N,) class of each query
    deployments: object = None  # the DeploymentsFile
    warnings: list[str] = field(default_factory=list)
    batch: np.ndarray | None = None  # (K,) the batch size each deployment's predictions are at
    context: tuple[int | None, ...] | None = None  # (K,) context lengths (plan.context.context_limits; None: unknown)

    @property
    def n_deployments(self) -> int:
        return len(self.names)

    @property
    def slots(self) -> np.ndarray:
        return (self.replicas * self.max_batch).astype(np.int64)

    @property
    def tokens(self) -> np.ndarray:
        return self.tin.astype(np.float64) + self.tout.astype(np.float64)

    @property
    def fits_context(self) -> np.ndarray:
        """(C, K): the class's tin + tout within the deployment's context length (a model cannot serve a
        longer query; everywhere True where no context is known)."""
        from llm_energy.plan.problem import context_mask

        return context_mask(self.tokens, self.context, self.n_deployments)

    @property
    def allowed(self) -> np.ndarray:
        """(C, K): the class fits the deployment's context and its own ``slo_s`` admits it (predicted
        runtime <= slo_s)."""
        ok = self.fits_context
        for k, s in enumerate(self.slo_cap):
            if s is not None:
                ok[:, k] &= self.runtime_s[:, k] <= s
        return ok

    def scales(self) -> tuple[float, float]:
        """(E_bar, A_bar) as the planner defines them (mean over queries and deployments)."""
        n, k = float(self.count.sum()), self.n_deployments
        e = float((self.count[:, None] * self.energy_j).sum() / (n * k))
        a = float(self.accuracy.mean() * (self.count * self.tokens).sum() / n)
        return (e if e > 0 else 1.0), (a if a > 0 else 1.0)

    def cost(self, zeta: float) -> np.ndarray:
        """The planner's per-query objective coefficient (C, K): zeta E/E_bar - (1-zeta) A_K tokens/A_bar."""
        e_bar, a_bar = self.scales()
        return zeta * self.energy_j / e_bar - (1.0 - zeta) * self.tokens[:, None] * self.accuracy[None, :] / a_bar

    def index(self, name: str, source: str = "--policy") -> int:
        if name not in self.names:
            raise bad_value(source, name, f"unknown deployment; the deployments are {', '.join(self.names)}")
        return self.names.index(name)


def parse_idle_w(spec: str | float | None, names: tuple[str, ...]) -> dict[str, float] | float | None:
    """``--idle-w``: one number of watts for every replica, or ``NAME=W,NAME=W``."""
    if spec is None or isinstance(spec, (int, float)):
        if spec is not None and not (math.isfinite(spec) and spec >= 0):
            raise bad_value("--idle-w", spec, "must be watts >= 0")
        return spec
    try:
        v = float(spec)
        return parse_idle_w(v, names)
    except ValueError:
        pass
    out: dict[str, float] = {}
    for part in str(spec).split(","):
        name, sep, w = part.partition("=")
        name = name.strip()
        if not sep or name not in names:
            raise bad_value("--idle-w", part.strip(), f"expected W or NAME=W with NAME among {', '.join(names)}")
        try:
            out[name] = float(w)
        except ValueError:
            raise bad_value("--idle-w", part.strip(), "watts must be a number") from None
        if not (math.isfinite(out[name]) and out[name] >= 0):
            raise bad_value("--idle-w", part.strip(), "must be watts >= 0")
    return out


def _batch_used(dep_fit, max_batch: int, name: str, warnings: list[str]) -> int:
    fb = getattr(dep_fit, "batch", 1)
    if fb == "*" or fb == max_batch:
        return int(max_batch)
    if max_batch != fb:
        warnings.append(f"{name}: max_batch={max_batch} but its fit is at batch {fb} only: each of its "
                        f"{max_batch} slots per replica runs at batch-{fb} speed and energy")
    return int(fb)


def build_fleet(fits, deployments, tin: np.ndarray, tout: np.ndarray, *, idle_w=None,
                fits_source: str = "--fits") -> Fleet:
    """Classes of the queries, their predictions on every deployment, and the fleet's sizes."""
    from llm_energy.fit.fits import errata_warning, predict
    from llm_energy.plan.context import context_limits
    from llm_energy.plan.workload import Workload, aggregate

    cls = aggregate(Workload(np.asarray(tin, dtype=np.int64), np.asarray(tout, dtype=np.int64)))
    ds = deployments.deployments
    names = tuple(d.name for d in ds)
    idle = parse_idle_w(idle_w, names)
    warnings: list[str] = []
    e = np.empty((cls.n_classes, len(ds)))
    r = np.empty_like(e)
    idle_arr = np.zeros(len(ds))
    batch = np.ones(len(ds), dtype=np.int64)
    missing_idle = []
    for j, d in enumerate(ds):
        if d.fit not in fits.deployments:
            raise UserError(f"{deployments.path}: deployments[{j}].fit={d.fit!r}: not in {fits_source} "
                            f"(it has {sorted(fits.deployments)})")
        df = fits.deployments[d.fit]
        b = batch[j] = _batch_used(df, d.max_batch, d.name, warnings)
        pf = predict(fits, d.fit, cls.tin.astype(np.float64), cls.tout.astype(np.float64),
                     None if df.batch != "*" else b)
        e[:, j] = pf["energy_j"].to_numpy() / b
        r[:, j] = pf["runtime_s"].to_numpy()
        w = getattr(df, "idle_w", None)
        if isinstance(idle, dict) and d.name in idle:
            w = idle[d.name]
        elif w is None and isinstance(idle, (int, float)):
            w = float(idle)
        if w is None:
            missing_idle.append(d.name)
        idle_arr[j] = float(w or 0.0)
    erratum = errata_warning(fits, {d.fit for d in ds})
    if erratum:
        warnings.append(erratum)
    if missing_idle:
        warnings.append(f"no idle_w for {', '.join(missing_idle)} in {fits_source} and no --idle-w: idle replicas "
                        "counted at 0 W (idle_energy_j = 0 there)")
    neg_e, neg_r = (e < 0).any(axis=1), (r < 0).any(axis=1)
    if neg_e.any() or neg_r.any():
        warnings.append(f"{int(cls.count[neg_e].sum())} queries have negative predicted energy and "
                        f"{int(cls.count[neg_r].sum())} negative predicted runtime on some deployment: clipped to 0, "
                        "as plan does (the fits extrapolate badly there)")
    return Fleet(names=names, fit_keys=tuple(d.fit for d in ds), accuracy=np.array([d.accuracy for d in ds], float),
                 replicas=np.array([d.replicas for d in ds], np.int64),
                 max_batch=np.array([d.max_batch for d in ds], np.int64), idle_w=idle_arr,
                 slo_cap=tuple(d.slo_s for d in ds), tin=cls.tin, tout=cls.tout, count=cls.count,
                 energy_j=np.maximum(e, 0.0), runtime_s=np.maximum(r, 0.0), qclass=cls.query_class,
                 deployments=deployments, warnings=warnings, batch=batch, context=context_limits(fits, deployments))


def check_slo(fleet: Fleet, slo_s: float | None) -> None:
    """``--slo-s`` must be > 0 and met by every query on some (admissible) deployment when it is idle."""
    if slo_s is None:
        return
    if not (math.isfinite(slo_s) and slo_s > 0):
        raise bad_value("--slo-s", slo_s, "must be seconds > 0")
    fastest = np.where(fleet.allowed, fleet.runtime_s, np.inf).min(axis=1)
    bad = fastest > slo_s
    if bad.any():
        c = int(np.argmax(np.where(bad, fastest, -np.inf)))
        raise bad_value("--slo-s", slo_s, f"no deployment meets it even when idle for {int(fleet.count[bad].sum())} "
                        f"queries (e.g. tin={fleet.tin[c]}, tout={fleet.tout[c]} takes at least {fastest[c]:.4g} s); "
                        f"the least SLO every query can meet is {float(fastest.max()):.4g} s")


def rate_for_load(fleet: Fleet, load: float) -> float:
    """The arrival rate (queries/s) at which the fleet's slots would be ``load`` busy if every query ran
    on its fastest admissible deployment: load x total slots / mean fastest runtime."""
    if not (math.isfinite(load) and load > 0):
        raise bad_value("--load", load, "must be > 0 (the share of the fleet's slots kept busy)")
    fastest = np.where(fleet.allowed, fleet.runtime_s, np.inf).min(axis=1)
    mean = float((fleet.count * fastest).sum() / fleet.count.sum())
    if not mean > 0:
        raise bad_value("--load", load, "every query takes no time on its fastest deployment: give --rate")
    return load * float(fleet.slots.sum()) / mean
