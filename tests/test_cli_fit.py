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
    # every candidate form is reported, one chosen per (deployment, target), and the paper form is there
    cand = md[md.index("### Candidate forms"):]
    rows = [r for r in cand.splitlines() if r.startswith("| Llama-2-7b-chat-hf@")]
    fits = json.loads((grid_store / "fits.json").read_text())
    n_forms = len(fits["deployments"][0]["targets"]["energy_j"]["candidates"])
    assert len(rows) == 2 * n_forms and sum("**chosen**" in r for r in rows) == 2
    assert any("| paper |" in r for r in rows)


def test_fit_candidates_table(grid_store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")  # the whole table, not one cut to 80 columns
    capsys.readouterr()
    assert main(["fit", str(grid_store / "store"), "--out", str(tmp_path / "f.json"), "--candidates"]) == 0
    out = capsys.readouterr().out
    assert "candidate forms" in out
    for form in ("paper", "affine", "kv-decode", "attn-prefill", "no-kv"):
        assert form in out


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


def _strict(text: str):
    """json.loads that refuses NaN/Infinity (Python's default accepts them; JSON does not)."""
    def refuse(c):
        raise ValueError(f"non-JSON constant {c}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("queries, argv, needles", [
    ("tin,tout,batch\n8,8,1\n8,8,x\n", [], ["q.csv", "batch='x'", "row 2"]),
    ("tin,tout,batch\n8,8,0\n", [], ["q.csv", "batch=0", "row 1"]),
    ("tin,tout\n8,8\n8.5,8\n", [], ["q.csv", "tin=8.5", "row 2"]),
    ("tin,tout\n8,inf\n", [], ["q.csv", "tout=inf"]),
    ("tin,tout,batch\n8,8,4\n", [], ["q.csv", "batch=4", "no deployment", "fitted: 1"]),
    ("tin,tout,batch\n8,8,1\n", ["--batch", "1"], ["--batch=1", "batch column"]),
    (None, ["--tin", "8", "--tout", "8", "--batch", "0"], ["--batch=0"]),
    (None, ["--tin", "8", "--tout", "8", "--batch", "4"], ["--batch=4", "no deployment", "fitted: 1", "--pool-batch"]),
    (None, ["--tin", "8", "--tout", "8", "--out", "{tmp}/blocker/p.csv"], ["blocker/p.csv", "cannot write", "not a directory"]),
    (None, ["--tin", "8", "--tout", "8", "--out", "/proc/nonexistent-llm-energy/p.csv"], ["/proc/nonexistent-llm-energy/p.csv", "cannot write"]),
])
def test_predict_bad_queries_batches_and_outputs_are_one_line(grid_store, tmp_path, capsys, queries, argv, needles):
    (tmp_path / "blocker").write_text("a regular file")
    src = []
    if queries is not None:
        (tmp_path / "q.csv").write_text(queries)
        src = ["--queries", str(tmp_path / "q.csv")]
    argv = [a.format(tmp=tmp_path) for a in argv]
    capsys.readouterr()
    assert main(["predict", str(grid_store / "fits.json"), *src, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


def test_predict_batch_goes_only_to_deployments_fitted_at_it(grid_store, capsys):
    capsys.readouterr()
    assert main(["predict", str(grid_store / "fits.json"), "--tin", "8", "--tout", "8", "--batch", "1", "--json"]) == 0
    rows = _strict(capsys.readouterr().out)
    assert len(rows) == 7 and {r["batch"] for r in rows} == {1} and all(r["deployment"].endswith("/b1") for r in rows)


def test_predict_json_is_strict_json_with_null_bounds_for_a_null_interval(grid_store, tmp_path, capsys):
    d = json.loads((grid_store / "fits.json").read_text())
    for e in d["deployments"]:
        e["targets"]["energy_j"]["interval"] = None
    f = tmp_path / "fits.json"
    f.write_text(json.dumps(d))
    capsys.readouterr()
    assert main(["predict", str(f), "--tin", "128", "--tout", "256", "--json"]) == 0
    rows = _strict(capsys.readouterr().out)
    assert len(rows) == 7
    assert all(r["energy_j_lo"] is None and r["energy_j_hi"] is None and r["energy_j"] > 0 for r in rows)
    assert all(r["runtime_s_lo"] <= r["runtime_s"] <= r["runtime_s_hi"] for r in rows)
    assert main(["predict", str(f), "--tin", "128", "--tout", "256"]) == 0  # the table shows "-", no crash
    assert "Traceback" not in capsys.readouterr().err


def test_fits_file_with_a_bad_batch_is_refused(grid_store, tmp_path, capsys):
    d = json.loads((grid_store / "fits.json").read_text())
    d["deployments"][2]["batch"] = "x"
    f = tmp_path / "fits.json"
    f.write_text(json.dumps(d))
    assert main(["predict", str(f), "--tin", "8", "--tout", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{f}: deployments[2].batch='x'" in err and len(err.splitlines()) == 1


def test_report_takes_the_fits_and_fits_nothing(grid_store, tmp_path, monkeypatch):
    from llm_energy.fit import forms
    from llm_energy.fit.fits import load_fits
    from llm_energy.report.markdown import write_report
    from llm_energy.trials.store import load_trials

    monkeypatch.setattr(forms, "fit_deployments", lambda *a, **k: pytest.fail("write_report fitted models"))
    trials = load_trials([str(grid_store / "store")])
    path = write_report(trials, load_fits(grid_store / "fits.json"), tmp_path / "r", stores=["STORE"])
    md = path.read_text()
    assert md.startswith("# llm-energy report") and "Stores: STORE; 566 measured trials, 7 deployments." in md
    assert "| Llama-2-7b-chat-hf@swing-a100x1/hf-nocache/b1 | NVIDIA A100-SXM4-40GB |" in md




def test_show_prints_an_imported_store_without_prefill_or_net_energy(grid_store, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    capsys.readouterr()
    assert main(["show", str(grid_store / "store"), "--limit", "3"]) == 0  # prefill_s and energy_net_j are null
    out = capsys.readouterr().out
    assert "566 trials" in out and "i8-o8-b1" in out and "... 563 more rows" in out
