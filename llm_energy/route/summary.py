"""What ``route`` reports, as typed records: :class:`RouteSummary` (summary.json, ``route --json``),
per policy a :class:`PolicyMetrics`, per rate scale of a sweep a :class:`RatePoint`.

``to_dict()`` is summary.json exactly (its keys, their order and values); ``from_dict`` / ``load``
read one back, so the CLI tables, the report, the demo and the jobs read fields, not string keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_energy.errors import UserError
from llm_energy.io import read_document, to_json


@dataclass(frozen=True)
class DeploymentLoad:
    """One deployment's part of a policy's routing: ``count`` queries, their ``share`` and ``energy_j``."""

    count: int
    share: float
    energy_j: float


@dataclass
class PolicyMetrics:
    """One policy on one trace. Energy in J (``energy_j`` active, ``idle_energy_j`` of replicas on but
    idle, their sum), ``accuracy`` token-weighted, latencies and waits in s, ``slo_violations`` (None
    without an SLO), ``objective`` the planner's (zeta-weighted, normalised), ``regret_pct`` and
    ``energy_vs_offline_pct`` against ``offline`` (None without it), ``info`` what the policy itself
    reports (e.g. ``dual``'s windows, ``threshold``'s chosen threshold), kept as it said it."""

    energy_j: float
    idle_energy_j: float
    total_energy_j: float
    accuracy: float
    objective: float
    latency_p50_s: float
    latency_p99_s: float
    latency_mean_s: float
    wait_p50_s: float
    wait_p99_s: float
    wait_mean_s: float
    slo_violations: int | None
    makespan_s: float
    deployments: dict[str, DeploymentLoad]
    info: dict[str, Any] = field(default_factory=dict)
    served_once: bool = True
    route_s: float = 0.0
    regret_pct: float | None = None
    energy_vs_offline_pct: float | None = None

    _CORE = ("energy_j", "idle_energy_j", "total_energy_j", "accuracy", "objective", "latency_p50_s", "latency_p99_s",
             "latency_mean_s", "wait_p50_s", "wait_p99_s", "wait_mean_s", "slo_violations", "makespan_s")
    _TAIL = ("served_once", "route_s", "regret_pct", "energy_vs_offline_pct")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in self._CORE}
        d["deployments"] = {n: dataclasses.asdict(v) for n, v in self.deployments.items()}
        d.update(self.info)
        d.update({k: getattr(self, k) for k in self._TAIL})
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicyMetrics:
        known = {*cls._CORE, *cls._TAIL, "deployments"}
        return cls(**{k: d[k] for k in cls._CORE}, **{k: d[k] for k in cls._TAIL if k in d},
                   deployments={n: DeploymentLoad(**v) for n, v in d["deployments"].items()},
                   info={k: v for k, v in d.items() if k not in known})


@dataclass
class RatePoint:
    """Every policy at one rate scale of a ``--rate-scale`` sweep."""

    rate_scale: float
    arrival_rate_per_s: float
    policies: dict[str, PolicyMetrics]

    def to_dict(self) -> dict[str, Any]:
        return {"rate_scale": self.rate_scale, "arrival_rate_per_s": self.arrival_rate_per_s,
                "policies": {n: m.to_dict() for n, m in self.policies.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RatePoint:
        return cls(d["rate_scale"], d["arrival_rate_per_s"], _policies(d["policies"]))


@dataclass
class RouteSummary:
    """summary.json of a route directory. ``policies`` at the first rate scale (``rate_scale``),
    ``sweep`` every scale's (None for one scale), ``trace`` / ``fleet`` / ``options`` as given and
    resolved, ``served_once`` whether every policy served every query exactly once, after its arrival."""

    policies: dict[str, PolicyMetrics]
    rate_scale: float
    sweep: list[RatePoint] | None
    trace: dict[str, Any]
    fleet: dict[str, dict[str, Any]]
    options: dict[str, Any]
    served_once: bool
    warnings: list[str]
    timings_s: dict[str, Any]
    files: dict[str, str]
    # issue 15: per policy (first rate scale), llm_energy.fit.ranges.RangeReport.to_dict() of the queries
    # it routed: outside their deployment's fitted range (None: no FitsFile); its beyond_context counts are
    # 0 by construction (no policy routes past a deployment's context; see beyond_context below)
    fitted_range: dict[str, dict[str, Any]] | None = None
    # plan.context.ContextReport.to_dict(): per deployment its context length and the trace's queries beyond
    # it (never routed there), and those beyond every one (not routed); None where no context is known
    beyond_context: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"policies": {n: m.to_dict() for n, m in self.policies.items()}, "rate_scale": self.rate_scale,
                "sweep": None if self.sweep is None else [p.to_dict() for p in self.sweep],
                "trace": self.trace, "fleet": self.fleet, "options": self.options, "served_once": self.served_once,
                "warnings": self.warnings, "fitted_range": self.fitted_range, "beyond_context": self.beyond_context,
                "timings_s": self.timings_s,
                "files": self.files}

    def to_json(self, **kw: Any) -> str:
        return to_json(self.to_dict(), indent=kw.pop("indent", 1), **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<route summary>") -> RouteSummary:
        try:
            return cls(policies=_policies(d["policies"]), rate_scale=d["rate_scale"],
                       sweep=None if d.get("sweep") is None else [RatePoint.from_dict(p) for p in d["sweep"]],
                       trace=d["trace"], fleet=d["fleet"], options=d["options"], served_once=d["served_once"],
                       warnings=list(d.get("warnings") or []), timings_s=d.get("timings_s") or {},
                       files=d.get("files") or {}, fitted_range=d.get("fitted_range"),
                       beyond_context=d.get("beyond_context"))
        except (KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{source}: not a route summary ({type(e).__name__}: {e})") from None

    @classmethod
    def load(cls, path: str | Path) -> RouteSummary:
        """From a route directory or its summary.json."""
        p = Path(path)
        p = p / "summary.json" if p.is_dir() else p
        return cls.from_dict(read_document(p, "route summary"), str(p))


def _policies(d: dict[str, Any]) -> dict[str, PolicyMetrics]:
    return {n: PolicyMetrics.from_dict(m) for n, m in d.items()}
