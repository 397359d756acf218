"""FITS.json: fitted per-deployment energy and runtime models, stored as data, and their prediction.

A target model is ``y = sum_k coef_k * term_k(tin, tout, batch)`` with terms from :data:`TERMS`
(``space: "linear"``). Schema (``schema_version`` 1)::

    {"kind": "llm-energy-fits", "schema_version": 1, "created": EPOCH, "source": "...",
     "deployments": [{"deployment": KEY, "model", "node_type", "n_gpus", "backend", "batch", "system",
                      "energy_source", "n_trials", "n_cells", "idle_w",
                      "targets": {"energy_j": TARGET, "runtime_s": TARGET},
                      "session_levels": [{"session", "n", "energy", "runtime", "card"}],  # optional
                      "level_card": "GPU-..."}],  # optional: fit --level-card, the card the model describes
     "skipped": [{"deployment": KEY, "reason": "..."}]}
    TARGET = {"form", "terms": [...], "coef": [...], "space": "linear", "method",
              "stats": {...}, "cv": {"median", "p90", "folds"}, "interval": {"level", "q_lo", "q_hi"},
              "candidates": [{"form", "median", "p90", "sane", "chosen"}],
              "cv_levels": {"median", "p90", "folds"}}  # optional: fit --session-levels' whole procedure held out

``stats``, ``cv``, ``interval`` and ``candidates`` are the records of :mod:`llm_energy.fit.records`.
``idle_w`` (optional; null or absent: unknown) is the deployment's measured idle power in W (model
loaded, nothing running, summed over its devices): the median of its trials' idle baselines. It is
what a replica that is on but serving nothing draws (the online router charges it).

Deployment keys: ``{model}@{node_type}[x{n_gpus}]/{backend}/b{batch}`` (``x{n_gpus}`` only on GPU
nodes), e.g. ``llama-2-7b@h100x1/static/b1``; a fit pooled over batch sizes ends in ``/b*``.
:func:`deployment_key` (scalars) and :func:`deployment_key_expr` (a trial frame's columns) are its one
definition; :func:`find_fit` is every lookup of a deployment in a fits file.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from llm_energy.errors import UserError, bad_value
from llm_energy.fit.document_checks import (_check_batch, _check_finite, _check_idle, _check_interval, _check_level_card,
                                            _check_range, _check_session_levels)
from llm_energy.fit.records import Candidate, CVResult, FitRange, FitStats, Interval, SessionOffset
from llm_energy.fit.terms import TERMS, design_matrix, term_function
from llm_energy.io import json_default, read_document, write_text_atomic

FITS_KIND = "llm-energy-fits"
FITS_SCHEMA_VERSION = 1
# the forms fit writes (fit.forms.FORMS, which imports this module; a test keeps the two equal)
KNOWN_FORMS = ("paper", "affine", "kv-decode", "attn-prefill", "no-kv", "no-kv-full", "roofline", "spline", "batched",
               "batched-kv", "batched-roofline", "batched-step")
TARGETS = ("energy_j", "runtime_s")

# The deployment key's one template, filled by str.format for scalars and by pl.format for frames:
# model, node_type, the GPU part ("x{n_gpus}" on GPU nodes, else ""), backend, batch ("*" when pooled).
_KEY_TEMPLATE = "{}@{}{}/{}/b{}"


def deployment_key(model: str, node_type: str, n_gpus: int | None, backend: str, batch: int | str) -> str:
    gpus = f"x{n_gpus}" if n_gpus and n_gpus > 0 else ""
    return _KEY_TEMPLATE.format(model, node_type, gpus, backend, batch)


def deployment_key_expr(*, pool_batch: bool = False) -> pl.Expr:
    """:func:`deployment_key` of every row of a trial frame (columns model, node_type, n_gpus, backend,
    batch; a null n_gpus counts as 0), with batch ``*`` when fits are pooled over batch sizes."""
    gpus = pl.when(pl.col("n_gpus") > 0).then(pl.format("x{}", pl.col("n_gpus"))).otherwise(pl.lit(""))
    batch = pl.lit("*") if pool_batch else pl.col("batch")
    return pl.format(_KEY_TEMPLATE, pl.col("model"), pl.col("node_type"), gpus, pl.col("backend"), batch)


@dataclass(frozen=True)
class DeploymentKey:
    """A deployment by its parts, for :func:`find_fit` where the caller knows what it deployed but not
    necessarily on how many GPUs: ``n_gpus=None`` matches any GPU count (0 on a CPU node)."""

    model: str
    node_type: str
    n_gpus: int | None
    backend: str
    batch: int | str

    def candidates(self, gpu_counts: set[int]) -> list[str]:
        """The key strings this may name, given the GPU counts a fits file holds."""
        counts = sorted(gpu_counts) if self.n_gpus is None else [self.n_gpus]
        return [deployment_key(self.model, self.node_type, n, self.backend, self.batch) for n in counts]

    def __str__(self) -> str:
        if self.n_gpus is None:
            return _KEY_TEMPLATE.format(self.model, self.node_type, "[xN]", self.backend, self.batch)
        return deployment_key(self.model, self.node_type, self.n_gpus, self.backend, self.batch)


@dataclass
class TargetModel:
    form: str
    terms: list[str]
    coef: list[float]
    space: str = "linear"
    method: str = "ols"
    stats: FitStats = field(default_factory=FitStats)
    cv: CVResult | None = None
    interval: Interval | None = None
    candidates: list[Candidate] = field(default_factory=list)
    # fit --session-levels only: held-out error of the whole procedure (levels and fit from the other folds)
    cv_levels: CVResult | None = None

    def predict(self, tin, tout, batch=None) -> np.ndarray:
        return design_matrix(self.terms, tin, tout, batch) @ np.asarray(self.coef, dtype=float)

    @property
    def has_interval(self) -> bool:
        return self.interval is not None and self.interval.bounded

    def bounds(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """90% (or ``interval.level``) prediction interval from cross-validated relative residuals
        (NaN where the model has no interval; :func:`predict` reports those as null). Never negative
        and never inverted: the base is max(pred, floor), and an older file's bounds (no floor) are
        ordered and clipped at 0."""
        pred = np.asarray(pred, dtype=float)
        if not self.has_interval:
            return np.full_like(pred, np.nan), np.full_like(pred, np.nan)
        iv = self.interval
        base = pred if iv.floor is None else np.maximum(pred, iv.floor)
        a, b = base * (1 + iv.q_lo), base * (1 + iv.q_hi)
        return np.maximum(np.minimum(a, b), 0.0), np.maximum(np.maximum(a, b), 0.0)

    def candidate(self, form: str) -> Candidate | None:
        """The candidate-table row of ``form`` (None if it was not a candidate)."""
        return next((c for c in self.candidates if c.form == form), None)

    def to_dict(self) -> dict[str, Any]:
        return {"form": self.form, "terms": list(self.terms), "coef": list(self.coef), "space": self.space,
                "method": self.method, "stats": self.stats.to_dict(), "cv": self.cv.to_dict() if self.cv else {},
                "interval": self.interval.to_dict() if self.interval else {},
                "candidates": [c.to_dict() for c in self.candidates],
                **({"cv_levels": self.cv_levels.to_dict()} if self.cv_levels else {})}

    @classmethod
    def from_dict(cls, m: dict[str, Any], where: str) -> "TargetModel":
        """One target of a fits file, validated (UserError naming ``where``, the field and the value)."""
        terms, coef = list(m["terms"]), [float(c) for c in m["coef"]]
        unknown = [x for x in terms if term_function(x) is None]
        if unknown:
            raise UserError(f"{where}.terms={unknown[0]!r}: unknown term; known: {', '.join(TERMS)}")
        if len(terms) != len(coef) or not np.all(np.isfinite(coef)):
            raise UserError(f"{where}.coef={m['coef']!r}: needs one finite number per term")
        if m.get("space", "linear") != "linear":
            raise UserError(f"{where}.space={m.get('space')!r}: only 'linear' is supported")
        if "form" in m and m["form"] not in KNOWN_FORMS:
            raise UserError(f"{where}.form={m['form']!r}: unknown form; known: {', '.join(KNOWN_FORMS)}")
        _check_finite(terms, coef, where)
        return cls(form=str(m.get("form", "?")), terms=terms, coef=coef, space="linear",
                   method=str(m.get("method", "")), stats=FitStats.from_dict(m.get("stats")),
                   cv=CVResult.from_dict(m.get("cv")),
                   interval=Interval.from_dict(_check_interval(m.get("interval"), f"{where}.interval")),
                   candidates=[Candidate.from_dict(c) for c in m.get("candidates") or []],
                   cv_levels=CVResult.from_dict(m.get("cv_levels")))


@dataclass
class DeploymentFit:
    deployment: str
    model: str
    node_type: str
    n_gpus: int
    backend: str
    batch: int | str
    targets: dict[str, TargetModel]
    system: str = ""
    energy_source: str = ""
    n_trials: int = 0
    n_cells: int = 0
    idle_w: float | None = None  # measured idle power (W), None where the store had none
    range: FitRange | None = None  # tokens and batch sizes fitted on (None: unknown, e.g. older or hand-written files; the published fits carry the paper grid)
    context_tokens: int | None = None  # the model's context length where known (tin + tout beyond it)
    errata: list[str] = field(default_factory=list)  # keys of known defects of its trials (trials/errata.py)
    # fit --session-levels: each session's level against the fit (of the middle level); empty: pooled as one
    session_levels: list[SessionOffset] = field(default_factory=list)
    # fit --session-levels --level-card: the card (NVML UUIDs, "+"-joined) whose sessions' level the model describes;
    # None: the middle of the levels (or no levels)
    level_card: str | None = None
    # fit --session-levels, not stored: whether any (tin, tout, batch) cell was measured by two levelled sessions
    sessions_share_cells: bool | None = None

    @property
    def context_limit(self) -> int | None:
        """``context_tokens``, or for a file without it (older, published) the preset's of its model."""
        return self.context_tokens or context_tokens(self.model)

    def to_dict(self) -> dict[str, Any]:
        d = {"deployment": self.deployment, "model": self.model, "node_type": self.node_type,
             "n_gpus": self.n_gpus, "backend": self.backend, "batch": self.batch, "system": self.system,
             "energy_source": self.energy_source, "n_trials": self.n_trials, "n_cells": self.n_cells,
             "idle_w": self.idle_w}
        if self.range is not None:
            d["range"] = self.range.to_dict()
        if self.context_tokens is not None:
            d["context_tokens"] = self.context_tokens
        if self.errata:
            d["errata"] = list(self.errata)
        if self.session_levels:
            d["session_levels"] = [s.to_dict() for s in self.session_levels]
        if self.level_card:
            d["level_card"] = self.level_card
        d["targets"] = {t: m.to_dict() for t, m in self.targets.items()}
        return d

    @classmethod
    def from_dict(cls, e: dict[str, Any], where: str) -> "DeploymentFit":
        """One deployment of a fits file, validated; a file without ``idle_w`` gives None."""
        targets = {t: TargetModel.from_dict(m, f"{where}.targets.{t}") for t, m in e["targets"].items()}
        for t in TARGETS:
            if t not in targets:
                raise UserError(f"{where}.targets: missing {t!r}")
        return cls(deployment=str(e["deployment"]), model=str(e.get("model", "")),
                   node_type=str(e.get("node_type", "")), n_gpus=int(e.get("n_gpus", 0)),
                   backend=str(e.get("backend", "")), batch=_check_batch(e.get("batch", 1), where),
                   targets=targets, system=str(e.get("system", "")), energy_source=str(e.get("energy_source", "")),
                   n_trials=int(e.get("n_trials", 0)), n_cells=int(e.get("n_cells", 0)),
                   idle_w=_check_idle(e.get("idle_w"), where), range=_check_range(e.get("range"), where),
                   context_tokens=int(e["context_tokens"]) if e.get("context_tokens") is not None else None,
                   errata=[str(k) for k in e.get("errata") or []],
                   session_levels=_check_session_levels(e.get("session_levels"), where),
                   level_card=_check_level_card(e.get("level_card"), where))


@dataclass
class FitsFile:
    deployments: dict[str, DeploymentFit]
    skipped: list[dict[str, str]] = field(default_factory=list)
    source: str = ""
    created: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": FITS_KIND, "schema_version": FITS_SCHEMA_VERSION, "created": self.created or time.time(),
            "source": self.source, "deployments": [d.to_dict() for d in self.deployments.values()],
            "skipped": self.skipped,
        }


def errata_warning(fits: "FitsFile", keys=None) -> str | None:
    """One line naming the deployments (of ``keys``, default all) whose fits carry errata (known defects
    of the trials they were fitted on, trials/errata.py), or None: plan, route and predict print it."""
    by: dict[str, list[str]] = {}
    for k, d in fits.deployments.items():
        if keys is None or k in keys:
            for e in d.errata:
                by.setdefault(e, []).append(k)
    if not by:
        return None
    return "; ".join(f"{len(v)} fit(s) carry erratum {e} ({', '.join(v)})" for e, v in by.items()) + \
        ": their predictions inherit the defect of the trials they were fitted on (docs/measurement.md, Errata)"


def context_tokens(model: str) -> int | None:
    """The context length of a model named like a shipped preset ('Llama-2-7b-chat-hf' is llama-2-7b;
    the longest preset name the lower-cased name starts with), from its config; None if unknown."""
    from llm_energy.measure.inference.presets import list_presets

    name = model.lower().split("/")[-1]
    known = [p for p in list_presets() if name.startswith(p.name) and not p.name.startswith("tiny")]
    if not known:
        return None
    best = max(known, key=lambda p: len(p.name))
    v = best.hf_config.get("max_position_embeddings")
    return int(v) if v else None


def find_fit(fits: FitsFile, key: str | DeploymentKey, *, source: str = "FITS.json") -> DeploymentFit:
    """The deployment ``key`` names: a key string exactly, or a :class:`DeploymentKey` by its parts
    (any GPU count where its n_gpus is None). None, or more than one, is a UserError listing the keys."""
    if isinstance(key, str):
        found = [key] if key in fits.deployments else []
    else:
        found = [k for k in key.candidates({d.n_gpus for d in fits.deployments.values()}) if k in fits.deployments]
    if len(found) == 1:
        return fits.deployments[found[0]]
    if not found:
        raise UserError(f"{source}: deployment={str(key)!r} not in the fits file; it has: "
                        f"{', '.join(fits.deployments) or '(none)'}")
    raise UserError(f"{source}: deployment={str(key)!r} matches {', '.join(found)}: give its GPU count")


def save_fits(fits: FitsFile, path: str | Path) -> None:
    write_text_atomic(path, json.dumps(fits.to_dict(), indent=1, default=json_default), what="fits file")


def load_fits(path: str | Path) -> FitsFile:
    """Read and validate a fits file; every problem is a UserError naming file, field and value."""
    return fits_from_document(read_document(path, "fits file", "json"), str(path))


def fits_from_document(d: Any, src: str) -> FitsFile:
    """A parsed fits file validated into a FitsFile (``src`` names it in errors)."""
    if not isinstance(d, dict) or d.get("kind") != FITS_KIND:
        raise UserError(f"{src}: kind={d.get('kind') if isinstance(d, dict) else None!r}: not an llm-energy fits file")
    v = d.get("schema_version")
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= FITS_SCHEMA_VERSION:
        raise UserError(f"{src}: schema_version={v!r}: this llm-energy reads versions 1..{FITS_SCHEMA_VERSION}")
    deps: dict[str, DeploymentFit] = {}
    for k, e in enumerate(d.get("deployments") or []):
        where = f"{src}: deployments[{k}]"
        try:
            dep = DeploymentFit.from_dict(e, where)
        except (KeyError, TypeError, ValueError, AttributeError) as ex:
            raise UserError(f"{where}: malformed entry ({type(ex).__name__}: {ex})") from None
        deps[dep.deployment] = dep
    if not deps:
        raise UserError(f"{src}: deployments=[]: the fits file has no fitted deployment")
    return FitsFile(deployments=deps, skipped=list(d.get("skipped") or []), source=str(d.get("source", "")),
                    created=float(d.get("created") or 0.0))


PREDICTION_SCHEMA = {
    "deployment": pl.String, "tin": pl.Int64, "tout": pl.Int64, "batch": pl.Int64,
    "energy_j": pl.Float64, "energy_j_lo": pl.Float64, "energy_j_hi": pl.Float64,
    "runtime_s": pl.Float64, "runtime_s_lo": pl.Float64, "runtime_s_hi": pl.Float64,
    "in_range": pl.Boolean, "beyond_context": pl.Boolean,
}


def predict(fits: FitsFile, deployment: str, tin, tout, batch=None, *, per_request: bool = False) -> pl.DataFrame:
    """Predictions for arrays of queries on one deployment (vectorised): :data:`PREDICTION_SCHEMA`.

    ``batch`` (default: the deployment's own) must be the deployment's batch unless it was fitted
    pooled over batch sizes (``/b*``): a model fitted at one batch size says nothing about another.
    Energy is of one generation of the whole batch (what the trials measure), or with ``per_request``
    that divided by the batch size: one request's share. Runtime is the batch's (each request's
    latency). Bounds are null where the model has no interval. ``in_range``: the query lies within
    the tokens and batch sizes the deployment was fitted on (null: the file does not say);
    ``beyond_context``: tin + tout exceeds the model's context length (null: unknown).
    """
    dep = find_fit(fits, deployment)
    i = np.asarray(tin, dtype=np.int64)
    o = np.asarray(tout, dtype=np.int64)
    if batch is None:
        b = np.full_like(i, dep.batch if isinstance(dep.batch, int) else 1)
    else:
        b = np.asarray(batch, dtype=np.int64) * np.ones_like(i)
        if isinstance(dep.batch, int) and (b != dep.batch).any():
            raise UserError(f"batch={int(b[b != dep.batch][0])}: deployment {deployment!r} was fitted at batch "
                            f"{dep.batch} only (fit with --pool-batch to predict other batch sizes)")
    cols: dict[str, Any] = {"deployment": [deployment] * len(i), "tin": i, "tout": o, "batch": b}
    for t in TARGETS:
        m = dep.targets[t]
        y = m.predict(i, o, b)
        share = b if per_request and t == "energy_j" else 1
        cols[t] = y / share
        if m.has_interval:
            lo, hi = m.bounds(y)
            cols[f"{t}_lo"], cols[f"{t}_hi"] = lo / share, hi / share
        else:
            cols[f"{t}_lo"] = cols[f"{t}_hi"] = [None] * len(i)
    cols["in_range"] = dep.range.contains(i, o, b) if dep.range is not None else [None] * len(i)
    ctx = dep.context_limit
    cols["beyond_context"] = (i + o > ctx) if ctx else [None] * len(i)
    return pl.DataFrame(cols, schema=PREDICTION_SCHEMA)


def unmatched_batches(fits: FitsFile, batch, deployments: list[str] | None = None) -> list[int]:
    """Batch sizes among ``batch`` that no (selected) deployment can predict: none fitted at that
    batch and none pooled over batch sizes."""
    deps = [find_fit(fits, n) for n in (deployments or list(fits.deployments))]
    if any(d.batch == "*" for d in deps):
        return []
    have = {d.batch for d in deps}
    return sorted(int(v) for v in np.unique(np.asarray(batch, dtype=np.int64)) if int(v) not in have)


def predict_all(fits: FitsFile, tin, tout, batch=None, deployments: list[str] | None = None, *,
                per_request: bool = False) -> pl.DataFrame:
    """Every (selected) deployment's predictions. Without ``batch`` each deployment predicts at its own
    batch size; with it, each query goes only to deployments fitted at its batch (or pooled ``/b*``),
    so a prediction is never labelled with a batch size its model was not fitted at."""
    names = deployments or list(fits.deployments)
    if batch is None:
        return pl.concat([predict(fits, n, tin, tout, per_request=per_request) for n in names])
    i = np.asarray(tin, dtype=np.int64)
    o = np.asarray(tout, dtype=np.int64)
    b = np.asarray(batch, dtype=np.int64) * np.ones_like(i)
    parts = []
    for n in names:
        d = find_fit(fits, n)
        keep = np.ones(len(i), dtype=bool) if d.batch == "*" else b == d.batch
        if keep.any():
            parts.append(predict(fits, n, i[keep], o[keep], b[keep], per_request=per_request))
    return pl.concat(parts) if parts else pl.DataFrame(schema=PREDICTION_SCHEMA)


PAPER_KEYS = {"Llama-2 (7B)": ("llama-2-7b", 1), "Llama-2 (13B)": ("llama-2-13b", 1), "Llama-2 (70B)": ("llama-2-70b", 4)}


def paper_fits_from_coefficients(path: str | Path) -> FitsFile:
    """The published Llama-2 models (coefficients.json of Wilkins et al.) as a FitsFile.

    alpha: energy in J, beta: runtime in s, both ``a0*tin + a1*tout + a2*tin*tout`` on A100s.
    Deployments: ``llama-2-7b@a100x1/paper/b1``, ``llama-2-13b@a100x1/paper/b1``, ``llama-2-70b@a100x4/paper/b1``.
    """
    return paper_fits_from_document(read_document(path, "coefficients file", "json"), str(path))


#: what the published coefficients were fitted on: the authors' 9 x 9 grid, nominal tin and tout 8..2048
#: (powers of two; ../shared/reference/wilkins2024/README.md, grid/all-stats-raw.csv), batch 1
PAPER_GRID_RANGE = FitRange((8.0, 2048.0), (8.0, 2048.0), (1.0, 1.0))


def paper_fits_from_document(d: Any, p: str) -> FitsFile:
    """The parsed coefficients.json (``p`` names it in errors) as a FitsFile."""
    if not isinstance(d, dict):
        raise UserError(f"{p}: not a coefficients file (expected a JSON object)")
    deps = {}
    for name, (model, gpus) in PAPER_KEYS.items():
        try:
            a = d["alpha_coeffs"][name]
            b = d["beta_coeffs"][name]
            acc = d.get("accuracy", {}).get(name)
        except KeyError as e:
            raise UserError(f"{p}: missing {e} for {name!r}") from None
        terms = ["tin", "tout", "tin*tout"]
        key = deployment_key(model, "a100", gpus, "paper", 1)
        deps[key] = DeploymentFit(
            deployment=key, model=model, node_type="a100", n_gpus=gpus, backend="paper", batch=1,
            system="AMD EPYC 7742 + NVIDIA A100-SXM4-40GB (published fit)", energy_source="published",
            range=PAPER_GRID_RANGE,
            targets={
                "energy_j": TargetModel("paper", terms, [a["alpha_0"], a["alpha_1"], a["alpha_2"]], method="published",
                                        stats=FitStats(accuracy=acc)),
                "runtime_s": TargetModel("paper", terms, [b["beta_0"], b["beta_1"], b["beta_2"]], method="published"),
            },
        )
    return FitsFile(deployments=deps, source=str(p), created=time.time())


def load_fits_any(path: str | Path) -> FitsFile:
    """A FitsFile from FITS.json, or from the paper's coefficients.json (has ``alpha_coeffs``); read once."""
    if not Path(path).is_file():
        raise bad_value("--fits", path, "no such file")
    doc = read_document(path, "fits file", "json")
    if isinstance(doc, dict) and "alpha_coeffs" in doc:
        return paper_fits_from_document(doc, str(path))
    return fits_from_document(doc, str(path))


@dataclass
class ComparisonRow:
    """Held-out relative error of the paper form against the chosen form, per (deployment, target)."""

    deployment: str
    target: str
    paper_median: float
    paper_p90: float
    auto_form: str
    auto_median: float
    auto_p90: float


def comparison(fits: FitsFile) -> list[ComparisonRow]:
    """Paper form vs chosen form, held-out error per deployment and target (NaN where absent)."""
    nan = float("nan")
    rows = []
    for d in fits.deployments.values():
        for t, m in d.targets.items():
            paper = m.candidate("paper")
            rows.append(ComparisonRow(d.deployment, t, paper.median if paper else nan, paper.p90 if paper else nan,
                                      m.form, m.cv.median if m.cv else nan, m.cv.p90 if m.cv else nan))
    return rows
