"""`llm-energy route` reports the fitted range as `plan` does (issue 15): per policy, how many of the
queries it routed, and what share of their predicted energy, lie outside the range their deployment
was fitted on and beyond the model's context length; the same `fit.ranges.range_report` as plan."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from llm_energy.cli import main
from llm_energy.fit.fits import load_fits, predict, save_fits
from llm_energy.fit.forms import fit_deployments

REPO = Path(__file__).resolve().parents[1]
KEY = "llama-2-7b@h100x1/static/b1"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Fits of the H100 static grid (tin, tout fitted up to about 2048, context 4096), a one-deployment
    fleet, and two traces: 20 queries inside the range, 4 with tin 3000 (outside), 2 with tin 3000 and
    tout 2000 (outside, and beyond the context length); and 5 queries inside it (in.csv)."""
    from llm_energy.trials.store import load_trials

    d = tmp_path_factory.mktemp("route_ranges")
    save_fits(fit_deployments(load_trials([str(REPO / "data" / "h100" / "grid-static")])), d / "fits.json")
    (d / "fleet.yaml").write_text(f"deployments:\n  - {{name: fast, fit: '{KEY}', accuracy: 50, replicas: 2}}\n")
    tin = [100] * 20 + [3000] * 6
    tout = [100] * 20 + [100] * 4 + [2000] * 2
    pl.DataFrame({"tin": tin, "tout": tout, "arrival_s": np.arange(26) * 30.0}).write_csv(d / "trace.csv")
    pl.DataFrame({"tin": [100] * 5, "tout": [100] * 5, "arrival_s": np.arange(5) * 30.0}).write_csv(d / "in.csv")
    pl.DataFrame({"tin": tin[:24], "tout": tout[:24], "arrival_s": np.arange(24) * 30.0}).write_csv(d / "out.csv")
    return d, np.array(tin), np.array(tout)


def test_route_prints_and_writes_the_fitted_range_report(inputs, capsys):
    d, tin, tout = inputs
    rc = main(["route", "--fits", str(d / "fits.json"), "--deployments", str(d / "fleet.yaml"), "--trace",
               str(d / "trace.csv"), "--policy", "only:fast", "--min-share", "0", "--idle-w", "100", "--no-plots", "--out", str(d / "out")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    flat = " ".join(out.split())
    # the 2 queries beyond the model's context (4096 tokens) are routed nowhere (they used to go to 'fast'),
    # counted in beyond_context; the fitted range is reported on the 24 routed
    assert "fitted range" in flat and "4 of 24 queries" in flat and "2 of 26 queries exceed every deployment's" in flat
    s = json.loads((d / "out" / "summary.json").read_text())
    assert s["beyond_context"]["unservable"] == 2 and s["beyond_context"]["excluded"] == {"fast": 2}
    fits = load_fits(d / "fits.json")
    e = predict(fits, KEY, tin, tout, per_request=True)["energy_j"].to_numpy()[:24]
    for policy in ("only:fast", "offline"):  # offline is always routed too
        r = s["fitted_range"][policy]
        assert (r["queries"], r["outside"], r["beyond_context"]) == (24, 4, 0)
        assert r["energy_share_outside"] == pytest.approx(e[20:].sum() / e.sum(), rel=1e-9)
        assert r["energy_share_beyond_context"] == 0
        assert r["by_deployment"]["fast"]["outside"] == 4 and r["unknown"] == []
    assert any(w.startswith("fitted range: 2 of 2 policies") for w in s["warnings"])


def test_route_in_range_says_nothing(inputs, capsys):
    d, _, _ = inputs
    rc = main(["route", "--fits", str(d / "fits.json"), "--deployments", str(d / "fleet.yaml"), "--trace",
               str(d / "in.csv"), "--policy", "only:fast", "--min-share", "0", "--no-plots", "--idle-w", "100", "--out", str(d / "in"),
               "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    s = json.loads(out)
    assert s["fitted_range"]["only:fast"]["outside"] == 0
    assert not any("fitted range" in w for w in s["warnings"])


def test_route_out_of_range_refuse(inputs, capsys):
    d, _, _ = inputs
    rc = main(["route", "--fits", str(d / "fits.json"), "--deployments", str(d / "fleet.yaml"), "--trace",
               str(d / "trace.csv"), "--policy", "only:fast", "--min-share", "0", "--no-plots", "--idle-w", "100",
               "--out", str(d / "refused"), "--out-of-range", "refuse"])
    _, err = capsys.readouterr()  # queries beyond every context: refused before any is routed
    assert rc != 0 and "--out-of-range refuse: 2 of 26 queries exceed every deployment's context length" in err
    assert len(err.strip().splitlines()) == 1 and not (d / "refused" / "summary.json").exists()
    rc = main(["route", "--fits", str(d / "fits.json"), "--deployments", str(d / "fleet.yaml"), "--trace",
               str(d / "out.csv"), "--policy", "only:fast", "--min-share", "0", "--no-plots", "--idle-w", "100",
               "--out", str(d / "refused"), "--out-of-range", "refuse"])
    _, err = capsys.readouterr()
    assert rc != 0 and "--out-of-range refuse: fitted range: 2 of 2 policies" in err and "4 of 24 queries" in err
    assert len(err.strip().splitlines()) == 1 and not (d / "refused" / "summary.json").exists()
    rc = main(["route", "--fits", str(d / "fits.json"), "--deployments", str(d / "fleet.yaml"), "--trace",
               str(d / "in.csv"), "--policy", "only:fast", "--min-share", "0", "--no-plots", "--idle-w", "100",
               "--out", str(d / "accepted"), "--out-of-range", "refuse", "--json"])
    capsys.readouterr()
    assert rc == 0 and (d / "accepted" / "summary.json").exists()  # nothing outside: not refused


def test_route_table_shows_no_always_zero_beyond_context_column(inputs, capsys):
    """The per-policy beyond-context count is 0 in route by construction (the 2 queries beyond the context
    are not routed): the table leaves it out and says where they are counted; summary.json keeps the key."""
    d, _, _ = inputs
    rc = main(["route", "--fits", str(d / "fits.json"), "--deployments", str(d / "fleet.yaml"), "--trace",
               str(d / "trace.csv"), "--policy", "only:fast", "--min-share", "0", "--idle-w", "100", "--no-plots",
               "--out", str(d / "table")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    table = out[out.index("fitted range: queries the fits extrapolate to"):out.index("warning:")]
    flat = " ".join(table.split())
    assert "outside range" in flat and "% energy" in flat and "beyond context" not in flat
    assert "2 of 26 queries beyond every context: not routed (beyond_context)" in flat
    s = json.loads((d / "table" / "summary.json").read_text())
    assert all(r["beyond_context"] == 0 and "energy_share_beyond_context" in r for r in s["fitted_range"].values())
