"""Issue 15's figures, held out honestly: the spline form on the authors' grid, the batched-step form
and the pooled forms by target on the H100 batch sweep, and the noise floor they are read against.
The grid and batch tests fail on the fitting code before them (falcon-40b energy p90 12.7%; a
held-out batch 64's runtime 17.1%, batch 1's 21.5%)."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from llm_energy.fit.forms import FORMS, NOT_FOR, SPLINE_KNOTS, FitOptions, fit_deployments
from llm_energy.fit.terms import design_matrix
from llm_energy.fit.validate import batch_holdout, nested_holdout, repeat_spread

H100 = Path(__file__).resolve().parents[1] / "data" / "h100"
BATCH_STORES = [str(H100 / s) for s in ("grid-cache", "issue3", "batch-cache")]


@pytest.fixture(scope="module")
def cache_trials():
    from llm_energy.trials.store import load_trials

    return load_trials(BATCH_STORES).filter(pl.col("backend") == "cache")


def test_spline_terms_are_a_convex_piecewise_linear_step_cost():
    """m*tout + sum_K a_K sum_j (L-K)+ + b sum_j L^2 == sum_j step(L), step convex piecewise linear + bL^2."""
    terms = FORMS["spline"]
    assert terms[:3] == ["1", "tin", "tout"] and len(SPLINE_KNOTS) >= 4
    rng = np.random.default_rng(3)
    coef = rng.uniform(0.1, 2.0, len(terms)) * np.array([1, 1, 1, *[1e-3] * len(SPLINE_KNOTS), 1e-6])
    for tin, tout in ((9, 7), (300, 500), (2050, 2043)):
        L = tin + np.arange(tout)
        hinges = sum(a * np.maximum(L - k, 0) for a, k in zip(coef[3:-1], SPLINE_KNOTS))
        want = coef[0] + coef[1] * tin + np.sum(coef[2] + hinges + coef[-1] * L**2)
        assert design_matrix(terms, [tin], [tout])[0] @ coef == pytest.approx(want, rel=1e-12)


def test_batch_hinge_is_the_sum_over_steps_of_a_floored_step():
    """tout*m + a sum_j (b L - K)+ == sum_j max(m, m + a (b L - K)): the batched-step roofline."""
    for tin, tout, b, k in ((300, 50, 9, 2500), (10, 500, 64, 8192), (512, 256, 64, 0), (8, 8, 1, 4096)):
        L = tin + np.arange(tout)
        got = design_matrix(["tout", f"sum_j(batch*(tin+j)-{k})+"], [tin], [tout], [b])[0] @ [2.0, 1e-4]
        assert got == pytest.approx(np.sum(np.maximum(2.0, 2.0 + 1e-4 * (b * L - k))), rel=1e-12)


def test_falcon_40b_and_every_model_held_out_within_the_goals(grid_trials):
    """Outer 5-fold over cells of the whole procedure: median <= 5%, p90 <= 12% (falcon-40b's energy
    p90 was 12.7%), coverage 85-95%, for the two models with the widest errors before."""
    h = nested_holdout(grid_trials.filter(pl.col("model").is_in(["falcon-40b", "Llama-2-70b-chat-hf"])), seed=1)
    for dep in h.deployments:
        for t in ("energy_j", "runtime_s"):
            s = h.summary(dep, t)
            assert s["median"] <= 0.05 and s["p90"] <= 0.12 and 0.85 <= s["coverage"] <= 0.95, (dep, t, s)
    assert h.summary([d for d in h.deployments if d.startswith("falcon-40b")][0], "energy_j")["p90"] <= 0.10


def test_every_held_out_batch_size_within_10_percent(cache_trials):
    """Trained on the other batch sizes (with the batch-1 grids), scored on the sweep's cells."""
    sweep = cache_trials.filter(pl.col("batch") == 64).select("tin", "tout").unique()
    res = batch_holdout(cache_trials, cells=sweep)
    for b, h in res.items():
        for t in ("energy_j", "runtime_s"):
            assert h.summary("cells", t)["median"] <= 0.10, (b, t, h.summary("cells", t))
    assert res[64].forms["runtime_s"] in ("batched-step", "batched-roofline")


def test_pooled_runtime_takes_floored_forms_energy_additive_ones(cache_trials):
    fits = fit_deployments(cache_trials, FitOptions(pool_batch=True))
    (d,) = fits.deployments.values()
    for t, m in d.targets.items():
        assert m.form not in NOT_FOR[t]
        listed = {c.form: c for c in m.candidates}
        assert all(not listed[f].eligible for f in NOT_FOR[t] if f in listed)  # still reported
    assert {"batched-step", "batched"} <= {c.form for c in d.targets["runtime_s"].candidates}


def test_repeat_spread_is_the_perfect_model_error_of_one_trial():
    """Two repeats a, b of a cell: |a / b - 1| / sqrt(2) each; cells measured once are not counted."""
    rows = []
    for tin, ys in ((8, [100.0, 110.0]), (16, [200.0]), (32, [50.0, 50.0, 53.0])):
        for k, y in enumerate(ys):
            rows.append({"trial_id": f"{tin}-{k}", "tin": tin, "tout": 8, "tin_actual": tin, "tout_actual": 8,
                         "batch": 1, "runtime_s": y / 100,
                         "energy_j": y, "model": "m", "node_type": "cpu", "n_gpus": 0, "backend": "b",
                         "warmup": False})
    h = repeat_spread(pl.DataFrame(rows))
    (dep,) = h.deployments
    assert h.cells[dep] == 2
    e = np.sort(np.abs(h.errors[(dep, "energy_j")]))
    want = np.sort(np.abs([(100 / 110 - 1) / np.sqrt(2), (110 / 100 - 1) / np.sqrt(2),
                           *[(y / np.mean(o) - 1) / np.sqrt(1.5) for y, o in ((50, [50, 53]), (50, [50, 53]),
                                                                              (53, [50, 50]))]]))
    np.testing.assert_allclose(e, want)
