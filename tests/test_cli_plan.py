"""`llm-energy plan` and `llm-energy workload` end to end: real files, real GLPK."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from llm_energy.cli import main
from llm_energy.plan.outputs import ASSIGNMENT_SCHEMA, PARETO_SCHEMA, PER_QUERY_SCHEMA
from llm_energy.plan.workload import load_workload

REPO = Path(__file__).resolve().parents[1]
COEFFICIENTS = REPO.parent / "shared" / "reference" / "wilkins2024" / "coefficients.json"
PAPER_YAML = REPO / "configs" / "deployments.paper.yaml"


@pytest.fixture(scope="module")
def hand_fits(tmp_path_factory):
    """A hand-written FITS.json (positive paper-form models) and a deployments file naming its three keys."""
    from llm_energy.fit.fits import DeploymentFit, FitsFile, TargetModel, save_fits

    d = tmp_path_factory.mktemp("fits")
    deps = {}
    for key, e, r in (("small@l4x1/cache/b1", [0.5, 20, 0.02], [1e-4, 0.03, 1e-6]),
                      ("mid@a100x1/cache/b1", [1.0, 45, 0.05], [1e-4, 0.05, 2e-6]),
                      ("big@h100x4/cache/b1", [4.0, 300, 0.2], [2e-4, 0.2, 5e-6])):
        model, rest = key.split("@")
        deps[key] = DeploymentFit(deployment=key, model=model, node_type=rest.split("x")[0], n_gpus=1,
                                  backend="cache", batch=1,
                                  targets={"energy_j": TargetModel("paper", ["tin", "tout", "tin*tout"], e),
                                           "runtime_s": TargetModel("paper", ["tin", "tout", "tin*tout"], r)})
    save_fits(FitsFile(deployments=deps, source="test"), d / "FITS.json")
    yaml = ("deployments:\n" + "".join(f"  - {{name: {n}, fit: '{k}', accuracy: {a}}}\n" for n, k, a in
                                       (("small", "small@l4x1/cache/b1", 45), ("mid", "mid@a100x1/cache/b1", 55),
                                        ("big", "big@h100x4/cache/b1", 65))))
    (d / "deploy.yaml").write_text(yaml)
    w = d / "w.csv"
    main(["workload", "synth", "--kind", "lognormal", "--n", "300", "--seed", "2", "--out", str(w)])
    return d / "FITS.json", d / "deploy.yaml", w


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_workload_synth_and_resample(tmp_path, capsys):
    f = tmp_path / "code.jsonl"
    rc, out, _ = run(capsys, "workload", "synth", "--kind", "code", "--n", 300, "--seed", 1, "--out", f)
    assert rc == 0 and "wrote 300 queries" in out
    a = load_workload(f)
    run(capsys, "workload", "synth", "--kind", "code", "--n", 300, "--seed", 1, "--out", tmp_path / "again.parquet")
    b = load_workload(tmp_path / "again.parquet")
    assert a.n_queries == 300 and np.array_equal(a.tin, b.tin) and np.array_equal(a.tout, b.tout)
    rc, _, _ = run(capsys, "workload", "resample", f, "--n", 1000, "--seed", 4, "--out", tmp_path / "r.csv")
    r = load_workload(tmp_path / "r.csv")
    assert rc == 0 and r.n_queries == 1000
    assert set(zip(r.tin.tolist(), r.tout.tolist())) <= set(zip(a.tin.tolist(), a.tout.tolist()))


def test_plan_paper_end_to_end(tmp_path, capsys):
    if not COEFFICIENTS.exists():
        pytest.skip(f"reference data not found at {COEFFICIENTS}")
    w = tmp_path / "w.parquet"
    run(capsys, "workload", "synth", "--kind", "mix", "--n", 200, "--seed", 0, "--out", w)
    out_dir = tmp_path / "plan"
    # the paper's setting has no context length: 4 of these queries exceed Llama-2's 4096 tokens, which plan
    # would leave unplanned (tests/test_plan_context.py); lifted here so every query is planned as in the paper
    paper = tmp_path / "paper.yaml"
    paper.write_text(PAPER_YAML.read_text().replace("    accuracy:", "    context_tokens: 1000000\n    accuracy:"))
    rc, out, err = run(capsys, "plan", "--fits", COEFFICIENTS, "--deployments", paper, "--workload", w,
                       "--out", out_dir, "--per-query", "--pareto", "--pareto-steps", 5, "--zeta", 0.5)
    assert rc == 0, err
    assert "baselines" in out and "negative predicted energy" in out
    s = json.loads((out_dir / "summary.json").read_text())
    assert s["status"] == "optimal" and s["solver"] == "glpk" and s["zeta"] == 0.5 and s["solve_s"] > 0
    assert "transportation problem" in s["formulation"] and s["time_limit_s"] == 60.0 and s["mip_gap"] == 1e-4
    assert set(s["deployments"]) == {"llama-2-7b", "llama-2-13b", "llama-2-70b"}
    assert sum(d["count"] for d in s["deployments"].values()) == 200
    assert abs(sum(d["share"] for d in s["deployments"].values()) - 1) < 1e-12
    assert all(d["count"] >= 2 for d in s["deployments"].values())  # --min-share 0.01 of 200
    a = pl.read_parquet(out_dir / "assignment.parquet")
    assert a.schema == pl.Schema(ASSIGNMENT_SCHEMA)
    per_class = a.group_by("tin", "tout").agg(pl.col("count_assigned").sum(), pl.col("count").first())
    assert (per_class["count_assigned"] == per_class["count"]).all() and a["count_assigned"].sum() == 200
    assert abs((a["count_assigned"] * a["energy_j"].clip(0)).sum() - s["energy_j"]) < 1e-6 * s["energy_j"]
    for name, d in s["deployments"].items():
        assert a.filter(pl.col("deployment") == name)["count_assigned"].sum() == d["count"]
    q = pl.read_parquet(out_dir / "assignment_per_query.parquet")
    assert q.schema == pl.Schema(PER_QUERY_SCHEMA) and q.height == 200
    wl = load_workload(w)
    assert q["tin"].to_list() == wl.tin.tolist()  # file order
    by_q = q.group_by("tin", "tout", "deployment").len().sort("tin", "tout", "deployment")
    by_c = a.select("tin", "tout", "deployment", pl.col("count_assigned").cast(pl.UInt32).alias("len"))
    assert by_q.equals(by_c.sort("tin", "tout", "deployment"))
    neg = s["negative_predictions"]
    assert neg["queries_energy"] > 0 and neg["policy"] == "clip"
    assert any("negative predicted energy" in x for x in s["warnings"])
    names = [b["name"] for b in s["baselines"]]
    assert names == ["only:llama-2-7b", "only:llama-2-13b", "only:llama-2-70b", "round-robin", "random",
                     "greedy-energy"]
    for b in s["baselines"]:
        assert abs(b["saved_pct"] - 100 * (b["energy_j"] - s["energy_j"]) / b["energy_j"]) < 1e-9
    rr = next(b for b in s["baselines"] if b["name"] == "round-robin")
    assert rr["feasible"] and rr["saved_pct"] > 0  # a feasible routing can not beat the optimum
    assert s["normalisation"]["energy_j_per_query"] > 0 and "A_bar" in s["normalisation"]["objective"]
    p = pl.read_parquet(out_dir / "pareto.parquet")
    assert p.schema == pl.Schema(PARETO_SCHEMA) and p.height == 5 and p["chosen"].sum() == 1
    assert (p["energy_j"].diff().drop_nulls() <= 1e-6).all() and (p["accuracy"].diff().drop_nulls() <= 1e-9).all()
    assert (out_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_json_modes_and_bins(tmp_path, capsys, hand_fits):
    fits, dep, w = hand_fits
    base = ["plan", "--fits", fits, "--deployments", dep, "--workload", w]
    rc, out, err = run(capsys, *base, "--out", tmp_path / "z", "--zeta", 1, "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert s == json.loads((tmp_path / "z" / "summary.json").read_text())
    assert s["negative_predictions"]["queries_energy"] == 0 and s["warnings"] == []
    rc, out, _ = run(capsys, *base, "--out", tmp_path / "a0", "--zeta", 0, "--json")
    most = json.loads(out)
    floor = 0.5 * (s["accuracy"] + most["accuracy"])
    rc, out, err = run(capsys, *base, "--out", tmp_path / "ma", "--min-accuracy", floor, "--json")
    ma = json.loads(out)
    assert rc == 0 and ma["mode"] == "min-accuracy" and ma["accuracy"] >= floor - 1e-9
    assert s["energy_j"] <= ma["energy_j"] < most["energy_j"] and "MIP" in ma["formulation"]
    budget = 0.5 * (s["energy_j"] + most["energy_j"])
    rc, out, _ = run(capsys, *base, "--out", tmp_path / "me", "--max-energy", budget, "--json")
    me = json.loads(out)
    assert me["mode"] == "max-energy" and me["energy_j"] <= budget * (1 + 1e-9) and me["accuracy"] > s["accuracy"]
    rc, out, _ = run(capsys, *base, "--out", tmp_path / "b", "--bins", 4, "--json", "--solver", "highs")
    b = json.loads(out)
    assert rc == 0 and b["solver"] == "highs" and b["binning"]["bin_classes"] <= 16
    exact = json.loads(run(capsys, *base, "--out", tmp_path / "e", "--json")[1])
    assert 0 <= b["objective"] - exact["objective"] <= b["binning"]["bound"] + 1e-9


def test_plan_with_capacity_and_slo_from_the_yaml(tmp_path, capsys, hand_fits):
    fits, dep, w = hand_fits
    free = json.loads(run(capsys, "plan", "--fits", fits, "--deployments", dep, "--workload", w, "--out",
                          tmp_path / "f", "--zeta", 0.2, "--json")[1])
    big_s = free["deployments"]["big"]["runtime_s"]
    hours = 0.5 * big_s / 3600
    y = tmp_path / "cap.yaml"
    y.write_text(dep.read_text().replace("name: big,", f"name: big, hours: {hours}, slo_s: 60,"))
    rc, out, err = run(capsys, "plan", "--fits", fits, "--deployments", y, "--workload", w, "--out", tmp_path / "c",
                       "--zeta", 0.2, "--json")
    assert rc == 0, err
    c = json.loads(out)
    assert c["deployments"]["big"]["runtime_s"] <= hours * 3600 * (1 + 1e-9)
    assert c["deployments"]["big"]["capacity_s"] == pytest.approx(hours * 3600)
    a = pl.read_parquet(tmp_path / "c" / "assignment.parquet").filter(pl.col("deployment") == "big")
    assert a["runtime_s"].max() <= 60
    assert c["objective"] > free["objective"]


@pytest.mark.parametrize("extra,files,match", [
    (["--only", "huge"], {}, "--only='huge': unknown deployment"),
    ([], {"yaml": "deployments:\n  - {name: x, fit: 'nope@h100x1/cache/b1', accuracy: 50}\n"},
     r"deployments\[0\]\.fit='nope@h100x1/cache/b1': not in"),
    ([], {"csv": "tin,tout\n5,6\nNaN,7\n"}, "row 1: tin=NaN"),
    ([], {"csv": "tin,tout\n5,6\n8,-3\n"}, "row 1: tout=-3: negative token count"),
    (["--zeta", "1.5"], {}, r"--zeta=1\.5: must be in \[0, 1\]"),
    (["--zeta", "-0.1"], {}, r"--zeta=-0\.1: must be in \[0, 1\]"),
    ([], {"csv": "tin,tout\n5,6\n7,8\n"}, "3 deployments x at least 1 queries each = 3 > 2 queries"),
    ([], {"yaml_hours": 1e-7}, r"deployment 'small': capacity 0\.00036 s .* cannot serve its minimum share"),
    (["--min-share", "0.7"], {}, r"--min-share=0\.7: must be in \[0, 0\.5\]"),
    (["--solver", "cplex"], {}, "--solver='cplex'"),
    (["--zeta", "0.3", "--min-accuracy", "50"], {}, "--min-accuracy sets the objective itself; drop --zeta"),
    (["--min-accuracy", "99"], {}, r"--min-accuracy=99 is out of reach: plans meeting the other constraints"),
    (["--max-energy", "1"], {}, r"--max-energy/--energy-budget=1 J is .* short"),
    (["--bins", "0"], {}, "--bins=0: must be >= 1"),
    (["--negative-energy", "ignore"], {}, "--negative-energy='ignore'"),
    (["--columns", "foo"], {}, "--columns='foo'"),
    ([], {"fits": "missing"}, "--fits=.*: no such file"),
    (["--only", "small,small,mid"], {}, "--only='small': named twice"),
    ([], {"csv": "tin,tout\n4000000000000,3000000000\n8,8\n"}, "row 0: tin=4000000000000: more than 100,000,000 tokens"),
    ([], {"out_file": True}, "--out=.*: is a file; the plan is a directory"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, hand_fits, extra, files, match):
    fits, dep, w = hand_fits
    if "yaml" in files:
        dep = tmp_path / "d.yaml"
        dep.write_text(files["yaml"])
    if "yaml_hours" in files:
        dep = tmp_path / "d.yaml"
        dep.write_text(hand_fits[1].read_text().replace("name: small,", f"name: small, hours: {files['yaml_hours']},"))
    if "csv" in files:
        w = tmp_path / "w.csv"
        w.write_text(files["csv"])
    if "fits" in files:
        fits = tmp_path / "none.json"
    if "out_file" in files:
        (tmp_path / "p").write_text("not a directory")
    rc, out, err = run(capsys, "plan", "--fits", fits, "--deployments", dep, "--workload", w, "--out",
                       tmp_path / "p", *extra)
    assert rc == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("llm-energy plan: error: ")
    import re

    assert re.search(match, err), err


def test_negative_energy_error_policy_refuses_with_the_queries_named(tmp_path, capsys):
    if not COEFFICIENTS.exists():
        pytest.skip(f"reference data not found at {COEFFICIENTS}")
    w = tmp_path / "w.csv"
    w.write_text("tin,tout\n2048,8\n1024,8\n8,512\n")  # long prompts, short outputs: the published fits go negative
    rc, out, err = run(capsys, "plan", "--fits", COEFFICIENTS, "--deployments", PAPER_YAML, "--workload", w,
                       "--out", tmp_path / "p", "--negative-energy", "error", "--min-share", "0")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--negative-energy=error: " in err and "negative predicted energy" in err and "refusing to plan" in err
    assert "tin=2048,tout=8" in err
    assert not (tmp_path / "p").exists()


def test_pareto_front_contains_an_off_grid_zeta(tmp_path, capsys, hand_fits):
    fits, dep, w = hand_fits
    rc, _, err = run(capsys, "plan", "--fits", fits, "--deployments", dep, "--workload", w, "--out", tmp_path / "p",
                     "--pareto", "--pareto-steps", 3, "--zeta", 0.35)
    assert rc == 0, err
    front = pl.read_parquet(tmp_path / "p" / "pareto.parquet")
    assert front.height == 4 and front.filter(pl.col("chosen"))["zeta"].to_list() == [0.35]


def test_workload_synth_into_a_directory_is_a_clear_error(tmp_path, capsys):
    rc, _, err = run(capsys, "workload", "synth", "--kind", "chat", "--n", 10, "--out", tmp_path)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    rc, _, err = run(capsys, "workload", "synth", "--kind", "chat", "--n", 10, "--out", tmp_path / "d.csv")
    assert rc == 0
    (tmp_path / "x.csv").mkdir()
    rc, _, err = run(capsys, "workload", "synth", "--kind", "chat", "--n", 10, "--out", tmp_path / "x.csv")
    assert rc == 2 and "is a directory" in err and "Traceback" not in err


def test_nodes_without_hours_is_said_not_silently_ignored(tmp_path, capsys, hand_fits):
    fits, dep, w = hand_fits
    y = tmp_path / "d.yaml"
    y.write_text(dep.read_text().replace("name: small,", "name: small, nodes: 4,"))
    rc, out, err = run(capsys, "plan", "--fits", fits, "--deployments", y, "--workload", w, "--out", tmp_path / "p")
    assert rc == 0, err
    s = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert any("small: nodes without hours sets no capacity limit" in x for x in s["warnings"])
    assert "nodes without hours" in out + err


def test_plan_summary_is_the_json_and_run_is_the_cli(tmp_path, capsys, hand_fits):
    from llm_energy.errors import UserError
    from llm_energy.plan.run import PlanRequest
    from llm_energy.plan.run import run as run_plan
    from llm_energy.plan.summary import PlanSummary

    fits, dep, w = hand_fits
    rc, out, err = run(capsys, "plan", "--fits", fits, "--deployments", dep, "--workload", w, "--out",
                       tmp_path / "p", "--pareto", "--pareto-steps", 3, "--bins", 4, "--json")
    assert rc == 0, err
    s = PlanSummary.load(tmp_path / "p")
    assert s.to_dict() == json.loads(out) and s.to_json() == (tmp_path / "p" / "summary.json").read_text()
    assert s.binning.bin_classes <= 16 and len(s.pareto) == 3 and s.deployments["big"].count > 0
    assert PlanSummary.from_dict(s.to_dict()) == s
    req = PlanRequest(fits=str(fits), deployments=str(dep), workload=str(w), out=str(tmp_path / "lib"),
                      pareto_steps=3, bins=4)
    outcome = run_plan(req)  # no plot function: no figure written or listed
    lib = outcome.summary.to_dict()
    assert "pareto_png" not in lib["files"] and not (tmp_path / "lib" / "pareto.png").exists()
    for key in ("objective", "energy_j", "deployments", "baselines", "pareto", "binning"):
        assert lib[key] == s.to_dict()[key]
    assert outcome.x.sum() == s.workload.queries
    with pytest.raises(UserError, match=r"--zeta=1\.5: must be in \[0, 1\]"):
        PlanRequest(fits=str(fits), deployments=str(dep), workload=str(w), out=str(tmp_path / "x"), zeta=1.5)
    with pytest.raises(UserError, match="--min-accuracy sets the objective itself; drop --zeta"):
        PlanRequest(fits=str(fits), deployments=str(dep), workload=str(w), out=str(tmp_path / "x"), zeta=0.2,
                    min_accuracy=50)
