"""benchmarks/gpu/batch_table.py: the batch sweeps' J/token, ms/step and power tables of docs/h200.md,
from a committed store (our own data), against the trials read directly."""
from pathlib import Path

import polars as pl

from benchmarks.gpu import batch_table

STORE = Path(__file__).resolve().parents[1] / "data" / "h200" / "v2" / "batch-llama-2-70b-cache"


def test_tables_match_the_trials(tmp_path, capsys):
    png = tmp_path / "b.png"
    assert batch_table.main([str(STORE), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    trials = pl.read_parquet(sorted((STORE / "trials").glob("*.parquet")))
    assert trials.height == 20 and png.stat().st_size > 10_000
    lines = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]] for ln in out.splitlines()
             if ln.startswith("| ") and not ln.startswith("| cell")}
    batches = sorted(trials["batch"].unique().to_list())
    for r in trials.iter_rows(named=True):
        shown = float(lines[f"{r['tin']} x {r['tout']}"][batches.index(r["batch"])])
        assert abs(shown - r["energy_j"] / (r["batch"] * r["tout"])) < 6e-4
    for i, b in enumerate(batches):
        t = trials.filter(pl.col("batch") == b)
        assert lines["mean power W"][i] == f"{t['energy_j'].sum() / t['runtime_s'].sum():.0f}"
        step = 1e3 * t["decode_s"] / (t["tout"] - 1)
        assert lines["ms/step (min-max)"][i] == f"{step.min():.2f}-{step.max():.2f}"


def test_not_a_store_is_one_line(tmp_path, capsys):
    assert batch_table.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "no such directory" in err
