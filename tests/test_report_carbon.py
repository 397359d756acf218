"""Carbon beside energy: gCO2e = energy (kWh) x intensity, for a constant and for an hourly CSV (each
trial at the hour it started, plans at the series' mean), and bad intensity input refused in one line
naming the file, the field and the value."""

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from llm_energy.cli import main
from llm_energy.errors import UserError
from llm_energy.report.carbon import GridIntensity, grams_co2e, load_grid_csv
from tests.test_report import make_plan

REPO = Path(__file__).resolve().parents[1]
NVML = REPO / "data" / "h100" / "issue3"
FITS = REPO / "data" / "h100" / "fits.json"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def hourly_csv(path: Path, t0: float, values: list[float]) -> Path:
    h0 = t0 // 3600 * 3600
    path.write_text("hour,gco2_per_kwh\n" + "".join(f"{iso(h0 + 3600 * i)},{v}\n" for i, v in enumerate(values)))
    return path


def test_kwh_conversion():
    assert grams_co2e(3.6e6, 400.0) == pytest.approx(400.0)  # 1 kWh at 400 g/kWh
    assert grams_co2e(1.0, 360.0) == pytest.approx(1e-4)
    g = GridIntensity.of_constant(250)
    assert np.array_equal(g.at([0.0, np.nan]), [250.0, 250.0]) and g.mean == 250


def test_hourly_series_applies_each_trial_its_hour(tmp_path):
    from llm_energy.report.energy import with_window_energy
    from llm_energy.trials.store import load_trials

    trials = load_trials([str(NVML)])
    t0, t1 = float(trials["t_start"].min()), float(trials["t_start"].max())
    n = int((t1 // 3600 - t0 // 3600)) + 1
    values = [100.0 + 50 * i for i in range(n + 1)]
    grid = load_grid_csv(hourly_csv(tmp_path / "grid.csv", t0, values))
    df = with_window_energy(trials, grid)
    hour = ((df["t_start"] // 3600) - (t0 // 3600)).cast(pl.Int64).to_numpy()
    want = df["window_j"].to_numpy() / 3.6e6 * np.asarray(values)[hour]
    assert np.allclose(df["co2e_g"].to_numpy(), want)
    assert grid.mean == pytest.approx(np.mean(values)) and grid.low == 100.0 and grid.high == values[-1]


def test_half_hourly_rows_and_naive_or_epoch_hours(tmp_path):
    f = tmp_path / "g.csv"
    f.write_text("gco2_per_kwh,hour,zone\n300,2026-11-25T10:00:00,GB\n200,1795602600,GB\n100,2026-11-25T11:00:00+00:00,GB\n")
    g = load_grid_csv(f)  # naive = UTC; 1795602600 = 2026-11-25T10:30Z
    at = g.at([datetime(2026, 11, 25, 10, 10, tzinfo=timezone.utc).timestamp(),
               datetime(2026, 11, 25, 10, 40, tzinfo=timezone.utc).timestamp(),
               datetime(2026, 11, 25, 11, 59, tzinfo=timezone.utc).timestamp()])
    assert list(at) == [300, 200, 100]
    with pytest.raises(UserError, match=r"g.csv: no intensity for t1 at 2026-11-25T12:00Z: the hours cover "
                                        r"2026-11-25T10:00Z \.\. 2026-11-25T12:00Z"):
        g.at([datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc).timestamp()], what=["t1"])


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    return make_plan(tmp_path_factory.mktemp("plan"))


def test_report_with_an_hourly_series(tmp_path, plan_dir):
    from llm_energy.plan.summary import PlanSummary
    from llm_energy.trials.store import load_trials

    trials = load_trials([str(NVML)])
    t0 = float(trials["t_start"].min())
    n = int(float(trials["t_start"].max()) // 3600 - t0 // 3600) + 1
    values = [321.0] * n + [100.0, 500.0]  # the hours after the sweep move the mean, not the trials
    grid = hourly_csv(tmp_path / "grid.csv", t0, values)
    out = tmp_path / "r"
    assert main(["report", str(NVML), "--fits", str(FITS), "--out", str(out), "--grid-intensity", str(grid),
                 "--plan", str(plan_dir)]) == 0
    md = (out / "report.md").read_text()
    window_j = float((trials["energy_j"] * trials["n_inner"].fill_null(1)).sum())
    assert f"hourly values from {grid}" in md and f"| {window_j / 3.6e6 * 321:.3g} |" in md
    e = PlanSummary.load(plan_dir).energy_j  # a plan: the series' mean, and its cleanest and dirtiest hours
    total = next(r for r in md.splitlines() if r.startswith("| **total** |"))
    assert f"| {e / 1e3:.2f} | {e / 3.6e6 * np.mean(values):.3g} |" in total
    assert f"would emit {e / 3.6e6 * 100:.3g} .. {e / 3.6e6 * 500:.3g} gCO2e" in md


@pytest.mark.parametrize("text, want", [
    ("hour,gco2_per_kwh\n2026-11-25T10:00Z,-5\n", "row 2: gco2_per_kwh='-5': must be a finite number >= 0"),
    ("hour,gco2_per_kwh\n2026-11-25T10:00Z,abc\n", "row 2: gco2_per_kwh='abc': not a number"),
    ("hour,gco2_per_kwh\n2026-11-25T10:00Z,nan\n", "row 2: gco2_per_kwh='nan': must be a finite number >= 0"),
    ("hour,intensity\n2026-11-25T10:00Z,5\n", "column 'gco2_per_kwh' missing (columns: hour, intensity)"),
    ("time,gco2_per_kwh\n2026-11-25T10:00Z,5\n", "column 'hour' missing (columns: time, gco2_per_kwh)"),
    ("hour,gco2_per_kwh\n2026-11-25T11:00Z,5\n2026-11-25T10:00Z,6\n",
     "row 3: hour='2026-11-25T10:00Z': not after the row before (2026-11-25T11:00Z): hours must increase"),
    ("hour,gco2_per_kwh\n2026-11-25T10:00Z,5\n2026-11-25T10:00Z,6\n", "row 3: hour='2026-11-25T10:00Z': not after"),
    ("hour,gco2_per_kwh\nyesterday,5\n", "row 2: hour='yesterday': not an ISO 8601 time or epoch seconds"),
    ("hour,gco2_per_kwh\ninf,5\n", "row 2: hour='inf': not an ISO 8601 time or epoch seconds"),
    ("hour,gco2_per_kwh\n2026-11-25T10:00Z\n", "row 2: 1 fields, the header has 2"),
    ("hour,gco2_per_kwh\n", "no rows after the header"),
    ("", "empty file"),
])
def test_bad_intensity_files_are_one_line_errors(tmp_path, capsys, text, want):
    f = tmp_path / "grid.csv"
    f.write_text(text)
    capsys.readouterr()
    assert main(["report", str(NVML), "--fits", str(FITS), "--out", str(tmp_path / "r"), "--grid-intensity", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{f}: " in err and want in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()  # refused before any work


@pytest.mark.parametrize("value, want", [("-1", "--grid-gco2-per-kwh=-1.0: must be a finite number >= 0"),
                                         ("nan", "--grid-gco2-per-kwh=nan: must be a finite number >= 0")])
def test_bad_constant_intensity(tmp_path, capsys, value, want):
    capsys.readouterr()
    assert main(["report", str(NVML), "--fits", str(FITS), "--out", str(tmp_path / "r"),
                 f"--grid-gco2-per-kwh={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert want in err and len(err.splitlines()) == 1, err


def test_missing_file_and_both_flags(tmp_path, capsys):
    capsys.readouterr()
    assert main(["report", str(NVML), "--out", str(tmp_path / "r"), "--grid-intensity", str(tmp_path / "no.csv")]) == 2
    assert f"{tmp_path / 'no.csv'}: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: mutually exclusive
        main(["report", str(NVML), "--out", str(tmp_path / "r"), "--grid-intensity", "x", "--grid-gco2-per-kwh", "1"])
    with pytest.raises(UserError, match="not both"):
        from llm_energy.report.carbon import grid_from_args

        grid_from_args(1.0, "x")


def test_trials_outside_the_series_are_refused(tmp_path, capsys):
    f = tmp_path / "old.csv"
    f.write_text("hour,gco2_per_kwh\n2020-01-01T00:00Z,300\n")
    capsys.readouterr()
    assert main(["report", str(NVML), "--fits", str(FITS), "--out", str(tmp_path / "r"), "--grid-intensity", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{f}: no intensity for " in err and "/r0 at 2026-" in err and len(err.splitlines()) == 1
