"""The notebook API: every exported name resolves to what its module defines, lazily."""

import subprocess
import sys
from pathlib import Path

import llm_energy

REPO = Path(__file__).resolve().parents[1]


def test_every_export_resolves():
    import importlib

    for name, (module, attr) in llm_energy._EXPORTS.items():
        assert getattr(llm_energy, name) is getattr(importlib.import_module(module), attr), name
    assert set(llm_energy.__all__) == {"__version__", *llm_energy._EXPORTS}
    assert "run_plan" in dir(llm_energy)


def test_unknown_name_is_an_attribute_error():
    try:
        llm_energy.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("no AttributeError")


def test_exports_do_not_shadow_the_stage_packages():
    # `llm_energy.plan` is the plan stage; the function that runs a plan is `run_plan`
    for stage in ("trials", "measure", "fit", "plan", "route", "report", "cli"):
        assert stage not in llm_energy._EXPORTS


def test_names_load_on_first_use_only():
    code = ("import sys, llm_energy; before = 'llm_energy.fit.forms' in sys.modules; "
            "llm_energy.fit_deployments; print(before, 'llm_energy.fit.forms' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["False", "True"], r.stderr
