import json

import pytest

from llm_energy.cli import main


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory, reference):
    d = tmp_path_factory.mktemp("grid")
    assert main(["import", "wilkins2024", str(reference / "wilkins2024" / "grid" / "all-stats-raw.csv"),
                 "--out", str(d / "store")]) == 0
    assert main(["fit", str(d / "store"), "--out", str(d / "fits.json")]) == 0
    return d


def test_predict_one_query_json(grid_store, capsys):
    capsys.readouterr()
    assert main(["predict", str(grid_store / "fits.json"), "--tin", "128", "--tout", "256", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 7
    for r in rows:
        assert r["energy_j_lo"] <= r["energy_j"] <= r["energy_j_hi"] and r["energy_j"] > 0
        assert set(r) >= {"deployment", "tin", "tout", "energy_j", "runtime_s", "runtime_s_lo", "runtime_s_hi"}


def test_predict_queries_file(grid_store, tmp_path):
    q = tmp_path / "q.csv"
    q.write_text("tin,tout\n8,8\n1000,200\n")
    out = tmp_path / "p.parquet"
    assert main(["predict", str(grid_store / "fits.json"), "--queries", str(q), "--out", str(out)]) == 0
    import polars as pl

    assert pl.read_parquet(out).height == 14


def test_report_writes_markdown_and_plots(grid_store):
    out = grid_store / "report"
    assert main(["report", str(grid_store / "store"), "--out", str(out), "--fits", str(grid_store / "fits.json")]) == 0
    md = (out / "report.md").read_text()
    assert "held-out median" in md and "Llama-2-7b-chat-hf@swing-a100x1/hf-nocache/b1" in md
    for png in ("measured_vs_predicted.png", "residual_heatmap.png", "j_per_token.png"):
        assert (out / png).stat().st_size > 10_000


@pytest.mark.parametrize("argv, needle", [
    (["fit", "/nonexistent", "--out", "/tmp/x.json"], "no such directory"),
    (["predict", "/nonexistent.json", "--tin", "1", "--tout", "1"], "no such fits file"),
    (["fit", "{store}", "--out", "{tmp}/f.json", "--form", "cubic"], "--form"),
    (["predict", "{fits}", "--tin", "0", "--tout", "5"], "--tin"),
    (["predict", "{fits}", "--tin", "5", "--tout", "5", "--deployment", "nope"], "nope"),
])
def test_cli_errors_are_one_line(grid_store, tmp_path, capsys, argv, needle):
    argv = [a.format(store=grid_store / "store", fits=grid_store / "fits.json", tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
