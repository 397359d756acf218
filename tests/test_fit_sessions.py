"""`llm-energy fit` says when the profiler sessions pooled in a deployment measured at different levels
(llm_energy/fit/sessions.py), on the committed H200 stores and on one with a known offset put in."""

from pathlib import Path

import polars as pl
import pytest

from llm_energy.cli import main
from llm_energy.fit.forms import FitOptions, fit_deployments
from llm_energy.fit.sessions import SPREAD_LIMIT, session_spreads, session_warnings
from llm_energy.trials.store import load_trials

H200 = Path(__file__).resolve().parents[1] / "data" / "h200" / "v2"


def _fit_warnings(capsys, store: Path, tmp_path, *extra) -> list[str]:
    capsys.readouterr()
    assert main(["fit", str(store), "--out", str(tmp_path / "fits.json"), *extra]) == 0
    return [ln for ln in capsys.readouterr().err.splitlines() if "its sessions measured" in ln]


def test_a_batch_store_grown_in_two_sessions_of_different_power_is_reported(capsys, tmp_path):
    """The 70B's static batch store: 7 cells from the eighth H200 session, 11 from the twelfth, at the same
    ms/step but not the same watts."""
    store = H200 / "batch-llama-2-70b-static"
    sessions = load_trials([str(store)])["session"].unique().to_list()
    assert len(sessions) == 2
    lines = _fit_warnings(capsys, store, tmp_path, "--pool-batch")
    assert len(lines) == 1 and lines[0].startswith("warning: llama-2-70b@h200x1/static/b*: ")
    assert all(s in lines[0] for s in sessions)


def test_two_sessions_at_one_level_say_nothing(capsys, tmp_path):
    store = H200 / "grid-static"  # 84 + 78 trials (2 of them suspect, left out): two profiler runs, calls 2 and 3 of the third H200 session
    assert load_trials([str(store)])["session"].n_unique() == 2
    assert _fit_warnings(capsys, store, tmp_path) == []


@pytest.mark.parametrize("offset,column", [(0.10, "energy_j"), (0.02, "energy_j"), (0.10, "energy_net_j")])
def test_an_offset_put_into_one_session_is_measured(offset, column):
    """The static grid with one session's energies (only the column the fit reads: gross, or net under
    --net) scaled by 1 + offset: the sessions' medians lie about offset apart (the pooled fit splits it), and
    only the 10% is reported."""
    t = load_trials([str(H200 / "grid-static")])
    first = t.sort("t_start")["session"][0]
    opts = FitOptions(energy_column=column)
    base = session_spreads(t, fit_deployments(t, opts), opts)
    t = t.with_columns(pl.when(pl.col("session") == first).then(pl.col(column) * (1 + offset))
                       .otherwise(pl.col(column)).alias(column))
    (s,) = session_spreads(t, fit_deployments(t, opts), opts)
    assert [lv.session for lv in s.levels][0] == first and all(lv.n >= 78 for lv in s.levels)
    assert s.spread("energy") == pytest.approx(offset, abs=base[0].spread("energy") + 0.005)
    assert s.spread("runtime") == pytest.approx(base[0].spread("runtime"), abs=1e-9)
    assert len(session_warnings([s])) == (1 if offset > SPREAD_LIMIT else 0)


def test_a_paper_form_fit_is_compared_on_requested_tokens_and_never_on_a_non_positive_value(grid_trials):
    """The authors' grid, split into two synthetic sessions, fitted with the paper form (fitted on the requested
    tokens; its a0 < 0 predicts energy <= 0 at 5-17 of each model's 81 cells): those trials count in no median,
    the others are compared on the tokens the form was fitted on."""
    import numpy as np

    from llm_energy.fit.fits import predict

    t = grid_trials.filter(~pl.col("warmup")).with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("s-even")).otherwise(pl.lit("s-odd")).alias("session"))
    opts = FitOptions(form="paper")
    fits = fit_deployments(t, opts)
    spreads = {s.deployment: s for s in session_spreads(t, fits, opts)}
    assert set(spreads) == set(fits.deployments)
    for dep, d in fits.deployments.items():
        g = t.filter(pl.col("model") == d.model)
        fitted = predict(fits, dep, g["tin"].to_numpy().astype(float), g["tout"].to_numpy().astype(float))["energy_j"]
        positive = fitted.to_numpy() > 0
        assert 0 < (~positive).sum() and sum(lv.n for lv in spreads[dep].levels) == positive.sum(), dep
        for lv in spreads[dep].levels:
            rows = g.filter(pl.col("session") == lv.session)
            f = predict(fits, dep, rows["tin"].to_numpy().astype(float), rows["tout"].to_numpy().astype(float))
            y, p = rows["energy_j"].to_numpy(), f["energy_j"].to_numpy()
            assert lv.energy == pytest.approx(np.median(y[p > 0] / p[p > 0] - 1.0)), (dep, lv.session)
