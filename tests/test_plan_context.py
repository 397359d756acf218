"""A model cannot serve a query longer than its context: plan never assigns a (class, deployment) pair with
tin + tout beyond the deployment's context length, on every solver path, nor do its baselines; queries no
deployment's context takes are counted and not planned; a deployment whose context cannot take its
minimum share is one line. (The old planner only warned, through fit.ranges, after planning them.)"""

import json

import numpy as np
import polars as pl
import pytest

from llm_energy.cli import main
from llm_energy.errors import UserError
from llm_energy.fit.fits import DeploymentFit, FitsFile, TargetModel, save_fits
from llm_energy.plan.run import PlanRequest, run

SHORT, LONG = "falcon-7b@h100x1/static/b1", "mistral-7b@h100x1/static/b1"  # contexts 2048 and 32768 (presets)


def fits() -> FitsFile:
    """falcon-7b ten times cheaper than mistral-7b per query (energy and runtime affine in tout)."""
    def dep(key: str, model: str, a: float) -> DeploymentFit:
        t = TargetModel("affine", ["1", "tout"], [a, a / 100])
        return DeploymentFit(key, model, "h100", 1, "static", 1, {"energy_j": t, "runtime_s": t})

    return FitsFile({SHORT: dep(SHORT, "falcon-7b", 1.0), LONG: dep(LONG, "mistral-7b", 10.0)})


def deployments_yaml(path, extra: str = "") -> str:
    path.write_text(f"deployments:\n  - {{name: short, fit: '{SHORT}', accuracy: 40{extra}}}\n"
                    f"  - {{name: long, fit: '{LONG}', accuracy: 60}}\n")
    return str(path)


@pytest.fixture()
def inputs(tmp_path):
    """30 short queries and 10 of 2,500 tokens (beyond falcon-7b's 2048), and the fits file."""
    f = tmp_path / "fits.json"
    save_fits(fits(), f)
    w = tmp_path / "w.csv"
    rows = [(100, 100)] * 30 + [(2000, 500)] * 10
    w.write_text("tin,tout\n" + "".join(f"{i},{o}\n" for i, o in rows))
    return str(f), deployments_yaml(tmp_path / "d.yaml"), str(w)


def _assigned_beyond(x: np.ndarray, tokens: np.ndarray, k: int = 0, limit: int = 2048) -> int:
    return int(x[tokens > limit, k].sum())


@pytest.mark.parametrize("solver", ["glpk", "highs"])
@pytest.mark.parametrize("zeta", [1.0, 0.5])
def test_no_query_is_planned_beyond_its_deployments_context(inputs, tmp_path, solver, zeta):
    f, d, w = inputs
    out = run(PlanRequest(fits=f, deployments=d, workload=w, out=str(tmp_path / f"p{solver}{zeta}"), zeta=zeta,
                          solver=solver, per_query=True))
    p = out.problem
    assert _assigned_beyond(out.x, p.tokens) == 0  # the old plan put all 10 on the cheap falcon-7b
    assert p.context_tokens == (2048, 32768)
    assert out.x[:, 1].sum() >= 10 and out.x.sum() == 40
    s = out.summary
    assert s.beyond_context["excluded"] == {"short": 10, "long": 0} and s.beyond_context["unservable"] == 0
    a = pl.read_parquet(out.files["assignment"])
    assert a.filter((pl.col("tin") + pl.col("tout") > 2048) & (pl.col("deployment") == "short")).height == 0
    q = pl.read_parquet(out.files["assignment_per_query"])
    assert q.filter(pl.col("tin") == 2000)["deployment"].unique().to_list() == ["long"]
    assert s.fitted_range["beyond_context"] == 0 and not any("context" in x for x in s.warnings)


def test_every_solver_path_respects_the_mask(inputs, tmp_path):
    """MIP (capacity rows), the array master (every class a row), bins, the Pareto sweep."""
    from dataclasses import replace

    from llm_energy.plan.solve.planner import Planner
    from llm_energy.plan.solve.solvers import SolveSettings

    f, d, w = inputs
    base = run(PlanRequest(fits=f, deployments=d, workload=w, out=str(tmp_path / "b"), zeta=1.0))
    p = base.problem
    cap = replace(p, capacity_s=np.array([1e6, 1e6]))  # capacity rows: a MIP
    for settings in (SolveSettings(solver="glpk", method="full"), SolveSettings(solver="glpk", arrays_above=1),
                     SolveSettings(solver="highs")):
        for prob in (p, cap):
            sol = Planner(prob, settings).solve(1.0)
            assert _assigned_beyond(sol.x, prob.tokens) == 0, (settings, prob.share_only)
    binned = run(PlanRequest(fits=f, deployments=d, workload=w, out=str(tmp_path / "bins"), zeta=1.0, bins=1,
                             pareto_steps=3))
    assert _assigned_beyond(binned.x, binned.problem.tokens) == 0  # one bin per context pattern, not one for all
    assert binned.summary.binning.bin_classes == 2


def test_an_inventory_plan_respects_the_mask(inputs, tmp_path):
    f, _, w = inputs
    d = tmp_path / "inv.yaml"
    d.write_text("hours: 1.0\ninventory:\n  h100: {nodes: 4, idle_w: 50}\ndeployments:\n"
                 f"  - {{name: short, fit: '{SHORT}', accuracy: 40, node_type: h100}}\n"
                 f"  - {{name: long, fit: '{LONG}', accuracy: 60, node_type: h100}}\n")
    out = run(PlanRequest(fits=f, deployments=str(d), workload=w, out=str(tmp_path / "inv"), zeta=1.0))
    assert _assigned_beyond(out.x, out.problem.tokens) == 0 and out.x[:, 1].sum() >= 10
    # consecutive windows of a timed trace (the long queries spread over them), per query
    t = tmp_path / "t.csv"
    rows = [(100, 100)] * 30 + [(2000, 500)] * 10
    t.write_text("tin,tout,arrival_s\n" + "".join(f"{i},{o},{60.0 * q}\n" for q, (i, o) in enumerate(rows[::-1])))
    out = run(PlanRequest(fits=f, deployments=str(d), workload=str(t), out=str(tmp_path / "win"), zeta=1.0,
                          window_s=600.0, per_query=True))
    assert len(out.summary.windows) == 4 and _assigned_beyond(out.x, out.problem.tokens) == 0
    q = pl.read_parquet(out.files["assignment_per_query"])
    assert q.filter(pl.col("tin") == 2000)["deployment"].unique().to_list() == ["long"]


def test_baselines_never_send_a_query_past_a_context(inputs, tmp_path):
    from llm_energy.plan.baselines import baselines

    f, d, w = inputs
    out = run(PlanRequest(fits=f, deployments=d, workload=w, out=str(tmp_path / "p"), zeta=1.0))
    p = out.problem
    bl = {b.name: b for b in baselines(p, out.classes.query_class, seed=3)}
    for b in bl.values():
        assert _assigned_beyond(b.x, p.tokens) == 0, b.name
        assert not any(v.startswith("context") for v in b.violations), b.name
    assert bl["only:short"].x[:, 0].sum() == 30 and bl["only:short"].x[:, 1].sum() == 10  # the rest to `long`
    assert bl["only:long"].x[:, 1].sum() == 40
    assert bl["round-robin"].x.sum() == bl["random"].x.sum() == 40
    # the plan's own violations name a pair beyond a context (what an impossible routing would break)
    bad = np.zeros_like(out.x)
    bad[:, 0] = p.count
    assert "context (10 queries beyond it)" in p.violations(bad)
    names = [b.name for b in out.summary.baselines]
    assert names == ["only:short", "only:long", "round-robin", "random", "greedy-energy"]


def test_round_robin_and_random_keep_their_draws_where_every_deployment_fits():
    from llm_energy.plan.baselines import next_eligible, redraw_eligible

    ok = np.ones((2, 3), dtype=bool)
    qc = np.array([0, 1, 0, 1, 0])
    dep = np.array([0, 1, 2, 0, 1])
    assert next_eligible(dep, ok, qc).tolist() == dep.tolist()
    rng = np.random.default_rng(0)
    assert redraw_eligible(dep, ok, qc, rng).tolist() == dep.tolist()
    ok[1] = [False, False, True]  # class 1 fits only deployment 2
    assert next_eligible(dep, ok, qc).tolist() == [0, 2, 2, 2, 1]
    assert redraw_eligible(dep, ok, qc, rng).tolist() == [0, 2, 2, 2, 1]


def test_queries_no_deployment_can_take_are_counted_not_planned(tmp_path, capsys):
    f = tmp_path / "fits.json"
    save_fits(fits(), f)
    d = deployments_yaml(tmp_path / "d.yaml", ", context_tokens: 1024")  # the file's own context wins
    y = tmp_path / "d2.yaml"
    y.write_text(f"deployments:\n  - {{name: short, fit: '{SHORT}', accuracy: 40}}\n")
    w = tmp_path / "w.csv"
    w.write_text("tin,tout\n" + "".join(f"{i},{o}\n" for i, o in [(100, 100)] * 8 + [(1500, 100)] * 3
                                        + [(3000, 10)] * 2))
    assert main(["plan", "--fits", str(f), "--deployments", str(y), "--workload", str(w), "--out",
                 str(tmp_path / "p"), "--min-share", "0", "--per-query", "--json"]) == 0
    out, err = capsys.readouterr()
    s = json.loads(out)
    bc = s["beyond_context"]
    assert bc["unservable"] == 2 and bc["queries"] == 13 and bc["examples"][0] == {"tin": 3000, "tout": 10}
    assert s["workload"]["queries"] == 11 and s["deployments"]["short"]["count"] == 11
    assert any("2 of 13 queries exceed every deployment's context length (short: 2048 tokens)" in x
               for x in s["warnings"])
    q = pl.read_parquet(tmp_path / "p" / "assignment_per_query.parquet")
    assert q["query"].to_list() == list(range(13)) and q["deployment"].null_count() == 2
    assert q.filter(pl.col("deployment").is_null())["tin"].to_list() == [3000, 3000]
    # the deployments file's context_tokens: 1500 + 100 > 1024 goes to `long` only
    assert main(["plan", "--fits", str(f), "--deployments", d, "--workload", str(w), "--out",
                 str(tmp_path / "q"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["beyond_context"]["context_tokens"] == {"short": 1024, "long": 32768}
    assert s["beyond_context"]["excluded"] == {"short": 5, "long": 0} and s["beyond_context"]["unservable"] == 0
    # --out-of-range refuse: one line, nothing written
    assert main(["plan", "--fits", str(f), "--deployments", str(y), "--workload", str(w), "--out",
                 str(tmp_path / "r"), "--min-share", "0", "--out-of-range", "refuse"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error: --out-of-range refuse: 2 of 13 queries exceed" in err
    assert not (tmp_path / "r" / "summary.json").exists()


def test_a_deployment_whose_context_cannot_take_its_share_is_one_line(tmp_path, capsys):
    f = tmp_path / "fits.json"
    save_fits(fits(), f)
    d = deployments_yaml(tmp_path / "d.yaml")
    w = tmp_path / "w.csv"
    w.write_text("tin,tout\n" + "3000,100\n" * 20)  # none fits falcon-7b's 2048 tokens
    assert main(["plan", "--fits", str(f), "--deployments", d, "--workload", str(w), "--out",
                 str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "deployment 'short': its context length (2048 tokens) admits 0 of the 20 queries" in err
    assert "--min-share=0.01 needs at least 1" in err
    # with --min-share 0 the short deployment simply gets nothing
    assert main(["plan", "--fits", str(f), "--deployments", d, "--workload", str(w), "--out",
                 str(tmp_path / "q"), "--min-share", "0", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["deployments"]["short"]["count"] == 0 and s["deployments"]["long"]["count"] == 20


def test_the_problem_api_names_the_context():
    from llm_energy.plan.problem import check_problem, make_problem

    e = np.ones((2, 2))
    p = make_problem(["a", "b"], [5, 3], [100, 5000], e, e, [1, 2], min_share=0.0, context_tokens=[2048, 4096])
    assert p.allowed.tolist() == [[True, True], [False, False]]
    with pytest.raises(UserError, match=r"^3 queries exceed every deployment's context length \(a: 2048 tokens, "
                                        r"b: 4096 tokens\), e.g. tin \+ tout = 5000 tokens"):
        check_problem(p)
    q = make_problem(["a", "b"], [5, 3], [100, 200], e, e, [1, 2], context_tokens=[None, None])
    assert q.context_tokens is None and q.allowed.all()  # unknown: nothing changes


def test_deployments_file_context_tokens_is_checked(tmp_path):
    from llm_energy.plan.deployments import parse_deployments

    doc = {"deployments": [{"name": "a", "fit": SHORT, "accuracy": 1, "context_tokens": 0}]}
    with pytest.raises(UserError, match=r"deployments\[0\]\.context_tokens"):
        parse_deployments(doc)
    doc["deployments"][0]["context_tokens"] = 4096
    assert parse_deployments(doc).deployments[0].context_tokens == 4096
