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
    store = H200 / "grid-static"  # 84 + 78 trials: two profiler runs, calls 2 and 3 of the third H200 session
    assert load_trials([str(store)])["session"].n_unique() == 2
    assert _fit_warnings(capsys, store, tmp_path) == []


@pytest.mark.parametrize("offset", [0.10, 0.02])
def test_an_offset_put_into_one_session_is_measured(offset):
    """The static grid with one session's energies scaled by 1 + offset: the sessions' medians lie about
    offset apart (the pooled fit splits it), and only the 10% is reported."""
    t = load_trials([str(H200 / "grid-static")])
    first = t.sort("t_start")["session"][0]
    scaled = [pl.when(pl.col("session") == first).then(pl.col(c) * (1 + offset)).otherwise(pl.col(c)).alias(c)
              for c in ("energy_j", "energy_net_j")]
    base, t = session_spreads(t, fit_deployments(t)), t.with_columns(scaled)
    opts = FitOptions()
    (s,) = session_spreads(t, fit_deployments(t, opts), opts)
    assert [lv.session for lv in s.levels][0] == first and all(lv.n >= 78 for lv in s.levels)
    assert s.spread("energy") == pytest.approx(offset, abs=base[0].spread("energy") + 0.005)
    assert s.spread("runtime") == pytest.approx(base[0].spread("runtime"), abs=1e-9)
    assert len(session_warnings([s])) == (1 if offset > SPREAD_LIMIT else 0)
