"""The fitted range in use (issue 15): range_report, and plan counting (or refusing) the queries it
sends outside the range a deployment was fitted on or beyond its context length."""

import json

import numpy as np
import polars as pl
import pytest

from llm_energy.cli import main
from llm_energy.fit.fits import save_fits
from llm_energy.fit.forms import fit_deployments
from llm_energy.fit.ranges import range_report

SMALL = "falcon-7b@swing-a100x1/hf-nocache/b1"
BIG = "Llama-2-7b-chat-hf@swing-a100x1/hf-nocache/b1"


@pytest.fixture(scope="module")
def two_fits(grid_trials):
    """falcon-7b fitted on tin, tout <= 512 only (as the demo did), Llama-2-7b on the whole grid."""
    small = grid_trials.filter((pl.col("model") == "falcon-7b") & (pl.col("tin") <= 512) & (pl.col("tout") <= 512))
    big = grid_trials.filter(pl.col("model") == "Llama-2-7b-chat-hf")
    return fit_deployments(pl.concat([small, big]))


def test_range_report_counts_queries_and_energy_outside(two_fits):
    tin, tout = np.array([100, 1000, 3000, 100]), np.array([100, 100, 1500, 4000])
    rr = range_report(two_fits, [("s", SMALL), ("b", BIG)], tin, tout, count=[10, 1, 1, 1],
                      assignment=np.array([[1, 0], [1, 0], [0, 1], [0, 1]]))
    assert rr.queries == 13 and rr.by_deployment["s"]["outside"] == 1  # tin 1000 > 512
    assert rr.by_deployment["b"]["outside"] == 2 and rr.by_deployment["b"]["beyond_context"] == 2  # > 4096 tokens
    assert rr.outside == 3 and rr.beyond_context == 2 and 0 < rr.energy_share_outside < 1
    w = rr.warning()
    assert "3 of 13 queries" in w and "exceed the model's context length" in w
    inside = range_report(two_fits, [SMALL], [100], [100])
    assert inside.outside == 0 and inside.warning() is None and inside.to_dict()["energy_share_outside"] == 0


@pytest.fixture()
def plan_inputs(two_fits, tmp_path):
    f = tmp_path / "fits.json"
    save_fits(two_fits, f)
    (tmp_path / "d.yaml").write_text(f"deployments:\n  - {{name: s, fit: '{SMALL}', accuracy: 40}}\n"
                                     f"  - {{name: b, fit: '{BIG}', accuracy: 50}}\n")
    w = tmp_path / "w.csv"
    # 2 queries outside both fits' range, within Llama-2's context (4096) and beyond falcon-7b's (2048)
    w.write_text("tin,tout\n" + "".join(f"{i},{o}\n" for i, o in [(64, 64)] * 20 + [(3000, 1000)] * 2))
    return f, tmp_path / "d.yaml", w


def test_plan_reports_queries_outside_the_fitted_range(plan_inputs, tmp_path, capsys):
    f, d, w = plan_inputs
    assert main(["plan", "--fits", str(f), "--deployments", str(d), "--workload", str(w), "--out",
                 str(tmp_path / "p"), "--json"]) == 0
    capsys.readouterr()
    s = json.loads((tmp_path / "p" / "summary.json").read_text())
    fr = s["fitted_range"]
    assert fr["queries"] == 22 and fr["outside"] >= 2 and fr["beyond_context"] == 0  # never planned beyond it
    assert s["beyond_context"]["excluded"] == {"s": 2, "b": 0} and s["beyond_context"]["unservable"] == 0
    assert 0 < fr["energy_share_outside"] <= 1
    assert any("lie outside the range their deployment was fitted on" in x for x in s["warnings"])
    assert main(["plan", "--fits", str(f), "--deployments", str(d), "--workload", str(w), "--out",
                 str(tmp_path / "q"), "--out-of-range", "refuse"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--out-of-range refuse" in err and "queries" in err


def test_plan_on_the_published_fits_checks_the_paper_grid(tmp_path, reference, capsys):
    """Published coefficients were fitted on the authors' grid, tin and tout 8..2048 (the reference README):
    a query past it is counted and warned about (they used to carry no range, and such a plan said nothing)."""
    (tmp_path / "d.yaml").write_text("deployments:\n  - {name: a, fit: 'llama-2-7b@a100x1/paper/b1', accuracy: 40}\n")
    (tmp_path / "w.csv").write_text("tin,tout\n64,64\n128,256\n3000,64\n")
    assert main(["plan", "--fits", str(reference / "wilkins2024" / "coefficients.json"), "--deployments",
                 str(tmp_path / "d.yaml"), "--workload", str(tmp_path / "w.csv"), "--out", str(tmp_path / "p"),
                 "--min-share", "0"]) == 0
    s = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert s["fitted_range"]["unknown"] == [] and s["fitted_range"]["outside"] == 1
    assert any("1 of 3 queries" in w and "outside the range" in w for w in s["warnings"])


def test_planner_costs_a_batched_deployment_per_request():
    """A deployment fitted at batch 4: each query costs a quarter of the batch's energy, at its latency."""
    from llm_energy.fit.fits import DeploymentFit, FitsFile, TargetModel
    from llm_energy.plan.costs import predict_matrix
    from llm_energy.plan.deployments import parse_deployments

    t = TargetModel("affine", ["1", "tout"], [4.0, 2.0])
    key = "m@h100x1/cache/b4"
    fits = FitsFile({key: DeploymentFit(key, "m", "h100", 1, "cache", 4, {"energy_j": t, "runtime_s": t})})
    e, r = predict_matrix(fits, parse_deployments({"deployments": [{"name": "a", "fit": key, "accuracy": 50}]}),
                          np.array([10.0]), np.array([8.0]))
    assert e[0, 0] == pytest.approx((4 + 16) / 4) and r[0, 0] == pytest.approx(20.0)


def test_the_warning_names_only_what_happened():
    """Found planning the Azure trace on the paper's fits: with nothing outside a recorded range it said
    '0 of N queries ... lie outside the range ... (-)'; it names what was extrapolated, and which fits could
    not be checked."""
    from llm_energy.fit.ranges import RangeReport

    r = RangeReport(queries=100, energy_j=10.0, beyond_context=7, energy_beyond_context_j=2.0,
                    by_deployment={"a": {"queries": 100, "outside": 0, "beyond_context": 7}}, unknown=["a"])
    w = r.warning()
    assert "lie outside" not in w and w.startswith("7 of 100 queries (20.0% of the energy) exceed the model's context")
    assert "the fitted range of a is not recorded: not checked" in w
    assert RangeReport(queries=5, energy_j=1.0).warning() is None
