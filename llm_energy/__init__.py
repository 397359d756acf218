"""llm-energy: profile, model and plan energy-optimal LLM serving on heterogeneous clusters.

The notebook API (docs/api.md walks through it). Every name below is imported on first use, so
``import llm_energy`` stays light (no torch, Pyomo or matplotlib until a name needs them) and never
imports Ray: the Ray layer is the top-level ``cluster`` package.

Meter your own code
    ``EnergyMeter``, ``Measurement``: ``with meter.window("gen") as m: ...`` over this node's meters.
Profile a model
    ``ProfileSpec``, ``SweepDesign``, ``Profiler``, ``record_events``.
Trials
    ``open_store``, ``TrialStore``, ``load_trials``.
Fit and predict
    ``fit_deployments``, ``FitOptions``, ``FitsFile``, ``load_fits``, ``save_fits``, ``find_fit``,
    ``DeploymentKey``, ``predict``, ``predict_all``.
Plan
    ``PlanRequest``, ``run_plan``, ``PlanSummary``.
Route online
    ``RouteRequest``, ``run_route``.
Errors
    ``UserError``: bad input, one line naming the file, field and value.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    "EnergyMeter": ("llm_energy.measure.window", "EnergyMeter"),
    "Measurement": ("llm_energy.measure.window", "Measurement"),
    "ProfileSpec": ("llm_energy.measure.spec", "ProfileSpec"),
    "SweepDesign": ("llm_energy.measure.design", "SweepDesign"),
    "Profiler": ("llm_energy.measure.profiler", "Profiler"),
    "record_events": ("llm_energy.measure.record", "record_events"),
    "open_store": ("llm_energy.trials.store", "open_store"),
    "TrialStore": ("llm_energy.trials.store", "TrialStore"),
    "load_trials": ("llm_energy.trials.store", "load_trials"),
    "fit_deployments": ("llm_energy.fit.forms", "fit_deployments"),
    "FitOptions": ("llm_energy.fit.forms", "FitOptions"),
    "FitsFile": ("llm_energy.fit.fits", "FitsFile"),
    "load_fits": ("llm_energy.fit.fits", "load_fits"),
    "save_fits": ("llm_energy.fit.fits", "save_fits"),
    "find_fit": ("llm_energy.fit.fits", "find_fit"),
    "DeploymentKey": ("llm_energy.fit.fits", "DeploymentKey"),
    "predict": ("llm_energy.fit.fits", "predict"),
    "predict_all": ("llm_energy.fit.fits", "predict_all"),
    "PlanRequest": ("llm_energy.plan.run", "PlanRequest"),
    "run_plan": ("llm_energy.plan.run", "run"),
    "PlanSummary": ("llm_energy.plan.summary", "PlanSummary"),
    "RouteRequest": ("llm_energy.route.run", "RouteRequest"),
    "run_route": ("llm_energy.route.run", "run"),
    "UserError": ("llm_energy.errors", "UserError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'llm_energy' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
