"""`llm-energy route` end to end: outputs, --json keys, the rate sweep, offline == plan, every bad input
as one line naming field and value, and the paper's fleet on the Azure conversation trace."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from llm_energy.cli import main
from llm_energy.route.metrics import check_invariants
from tests.test_route import H100_FITS, h100_yaml

REPO = Path(__file__).resolve().parents[1]
PAPER_YAML = REPO / "configs" / "deployments.paper.yaml"
METRIC_KEYS = {"energy_j", "idle_energy_j", "total_energy_j", "accuracy", "latency_p50_s", "latency_p99_s",
               "wait_p99_s", "slo_violations", "deployments", "regret_pct"}


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 400-query trace (tin, tout, arrival_s) and the H100 fleet file."""
    d = tmp_path_factory.mktemp("route_cli")
    rng = np.random.default_rng(11)
    n = 400
    t = np.cumsum(rng.exponential(0.5, n))
    pl.DataFrame({"tin": rng.integers(16, 2048, n), "tout": rng.integers(8, 512, n), "arrival_s": t - t[0]}
                 ).write_csv(d / "trace.csv")
    return d, d / "trace.csv", h100_yaml(d)


def invariants_hold(out_dir: Path, fleet_yaml: Path, n: int) -> None:
    from llm_energy.plan.deployments import load_deployments

    deps = load_deployments(fleet_yaml).deployments
    reps, mb = {d.name: d.replicas for d in deps}, {d.name: d.max_batch for d in deps}
    q = pl.read_parquet(out_dir / "queries.parquet")
    for (scale, policy), g in q.group_by(["rate_scale", "policy"]):
        assert check_invariants(g, n, reps, mb) == [], (scale, policy)


def test_route_all_policies_sweep_and_json(small, capsys):
    d, trace, fleet = small
    out = d / "all"
    rc, stdout, err = run(capsys, "route", "--fits", H100_FITS, "--deployments", fleet, "--trace", trace,
                          "--policy", "all", "--rate-scale", "0.5,1,2", "--slo-s", 120, "--idle-w", 80,
                          "--window-s", 60, "--out", out, "--json")
    assert rc == 0, err
    s = json.loads(stdout)
    assert s == json.loads((out / "summary.json").read_text())
    names = {"offline", "dual", "greedy", "greedy-queue", "jsq", "threshold", "round-robin", "random",
             "only:fast", "only:mid", "only:slow"}
    assert set(s["policies"]) == names and s["served_once"] is True
    for m in s["policies"].values():
        assert METRIC_KEYS <= set(m)
        assert sum(v["count"] for v in m["deployments"].values()) == 400
        assert m["total_energy_j"] == pytest.approx(m["energy_j"] + m["idle_energy_j"])
        assert m["idle_energy_j"] > 0 and m["latency_p99_s"] >= m["latency_p50_s"] >= 0
    assert s["policies"]["offline"]["regret_pct"] == 0
    # dual re-solves at the end of every 60 s window (the first scale is 0.5: the span doubles)
    assert s["policies"]["dual"]["dual"]["windows_solved"] == int(s["trace"]["span_s"] / 0.5 // 60)
    assert [x["rate_scale"] for x in s["sweep"]] == [0.5, 1.0, 2.0]
    rates = [x["arrival_rate_per_s"] for x in s["sweep"]]
    assert rates[1] == pytest.approx(2 * rates[0]) and rates[2] == pytest.approx(4 * rates[0])
    for f in ("queries.parquet", "summary.json", "rate_sweep.png", "latency_cdf.png", "workload.parquet",
              "offline_deployments.yaml"):
        assert (out / f).stat().st_size > 0
    invariants_hold(out, fleet, 400)
    q = pl.read_parquet(out / "queries.parquet")
    a1 = q.filter((pl.col("rate_scale") == 1.0) & (pl.col("policy") == "greedy"))["arrival_s"].to_numpy()
    a2 = q.filter((pl.col("rate_scale") == 2.0) & (pl.col("policy") == "greedy"))["arrival_s"].to_numpy()
    np.testing.assert_allclose(a2, a1 / 2)
    rc, table, _ = run(capsys, "route", "--fits", H100_FITS, "--deployments", fleet, "--trace", trace, "--policy",
                       "greedy,jsq", "--rate-scale", "1,2", "--out", d / "t", "--no-plots")
    assert rc == 0 and "rate sweep" in table and "offline" in table and "idle_w" in table


def test_offline_energy_equals_plan(small, capsys):
    d, trace, fleet = small
    out = d / "off"
    rc, stdout, err = run(capsys, "route", "--fits", H100_FITS, "--deployments", fleet, "--trace", trace,
                          "--policy", "offline", "--zeta", 0.3, "--min-share", 0.05, "--out", out, "--json",
                          "--no-plots")
    assert rc == 0, err
    off = json.loads(stdout)["policies"]["offline"]
    rc, stdout, err = run(capsys, "plan", "--fits", H100_FITS, "--deployments", out / "offline_deployments.yaml",
                          "--workload", out / "workload.parquet", "--zeta", 0.3, "--min-share", 0.05,
                          "--out", d / "plan", "--json")
    assert rc == 0, err
    plan = json.loads(stdout)
    assert off["energy_j"] == pytest.approx(plan["energy_j"], rel=1e-12)
    assert off["accuracy"] == pytest.approx(plan["accuracy"], rel=1e-12)
    assert {k: v["count"] for k, v in off["deployments"].items()} == {k: v["count"] for k, v in
                                                                     plan["deployments"].items()}


def test_plan_accepts_deployments_with_and_without_replicas(small, capsys):
    d, trace, fleet = small
    rc, _, err = run(capsys, "plan", "--fits", H100_FITS, "--deployments", fleet, "--workload", trace,
                     "--out", d / "p2", "--json")
    assert rc == 0, err
    plain = d / "plain.yaml"
    plain.write_text("\n".join(ln.replace(", replicas: 3, max_batch: 1", "").replace(", replicas: 2, max_batch: 2", "")
                               .replace(", replicas: 2, max_batch: 1", "") for ln in fleet.read_text().splitlines()))
    assert "replicas" not in plain.read_text()
    rc, _, err = run(capsys, "plan", "--fits", H100_FITS, "--deployments", plain, "--workload", trace,
                     "--out", d / "p3", "--json")
    assert rc == 0, err


def _bad_trace(d: Path, name: str, frame: pl.DataFrame) -> Path:
    p = d / name
    frame.write_csv(p)
    return p


def test_bad_inputs_are_one_line_errors(small, capsys, tmp_path):
    d, trace, fleet = small
    base = ["route", "--fits", H100_FITS, "--deployments", fleet, "--out", tmp_path / "o", "--no-plots"]
    tok = {"tin": [10, 20, 30], "tout": [5, 6, 7]}
    cases = [
        (["--trace", _bad_trace(tmp_path, "nots.csv", pl.DataFrame(tok))], ["--trace", "no arrival column"]),
        (["--trace", _bad_trace(tmp_path, "unsorted.csv", pl.DataFrame({**tok, "arrival_s": [0.0, 5.0, 2.0]}))],
         ["row 2", "arrival_s", "not sorted"]),
        (["--trace", _bad_trace(tmp_path, "neg.csv", pl.DataFrame({**tok, "arrival_s": [-1.0, 5.0, 6.0]}))],
         ["row 0", "arrival_s=-1", "negative"]),
        (["--trace", _bad_trace(tmp_path, "miss.csv", pl.DataFrame({**tok, "arrival_s": [0.0, None, 2.0]}))],
         ["row 1", "arrival_s", "missing"]),
        (["--trace", _bad_trace(tmp_path, "badts.csv", pl.DataFrame({**tok, "TIMESTAMP": ["2023-11-16 18:15:46",
                                                                                       "yesterday", "x"]}))],
         ["row 1", "TIMESTAMP='yesterday'"]),
        (["--trace", trace, "--rate-scale", 0], ["--rate-scale=0.0", "> 0"]),
        (["--trace", trace, "--rate-scale", "1,-2"], ["--rate-scale=-2.0", "> 0"]),
        (["--trace", trace, "--rate-scale", "fast"], ["--rate-scale='fast'"]),
        (["--trace", trace, "--policy", "smartest"], ["--policy='smartest'", "unknown policy"]),
        (["--trace", trace, "--policy", "only:nope"], ["--policy='only:nope'", "unknown deployment"]),
        (["--trace", trace, "--slo-s", 0.5], ["--slo-s=0.5", "even when idle"]),
        (["--trace", trace, "--slo-s", -3], ["--slo-s=-3.0", "> 0"]),
        (["--trace", trace, "--arrivals", "poisson"], ["--arrivals poisson needs --rate"]),
        (["--trace", trace, "--arrivals", "gamma", "--rate", 2, "--cv", 0], ["--cv=0.0"]),
        (["--trace", trace, "--utilisation", 1.5], ["--utilisation=1.5"]),
        (["--trace", trace, "--window-s", 0], ["--window-s=0.0"]),
        (["--trace", trace, "--idle-w", "fast=-3"], ["--idle-w='fast=-3'"]),
    ]
    for text, field in (("replicas: 3", ("deployments[0].replicas", "0", ">= 1")),
                        ("max_batch: 1", ("deployments[0].max_batch", "0", ">= 1"))):
        p = tmp_path / f"bad_{field[0][-8:]}.yaml"
        p.write_text(fleet.read_text().replace(text, text.split(":")[0] + ": 0", 1))
        cases.append((["--trace", trace, "--deployments", p], list(field)))
    p = tmp_path / "frac.yaml"
    p.write_text(fleet.read_text().replace("replicas: 3", "replicas: 1.5", 1))
    cases.append((["--trace", trace, "--deployments", p], ["deployments[0].replicas=1.5", "whole number"]))
    for extra, needles in cases:
        rc, _, err = run(capsys, *base, *extra)
        assert rc == 2, (extra, err)
        line = err.strip()
        assert "\n" not in line and "Traceback" not in line, err
        for s in needles:
            assert s in line, (extra, line)


def test_synthetic_arrivals_from_a_workload(small, capsys, tmp_path):
    d, trace, fleet = small
    w = tmp_path / "w.parquet"
    run(capsys, "workload", "synth", "--kind", "chat", "--n", 300, "--seed", 1, "--out", w)
    rc, stdout, err = run(capsys, "route", "--fits", H100_FITS, "--deployments", fleet, "--trace", w, "--arrivals",
                          "gamma", "--rate", 1.5, "--cv", 2, "--policy", "dual,greedy-queue", "--slo-s", 300,
                          "--out", tmp_path / "o", "--json", "--no-plots")
    assert rc == 0, err
    s = json.loads(stdout)
    # 3 chat prompts exceed Llama-2's 4096 tokens: routed nowhere, counted (they used to be served)
    assert s["beyond_context"]["unservable"] == 3 and s["trace"]["queries"] == 300 - 3
    assert s["trace"]["arrival_rate_per_s"] == pytest.approx(1.5, rel=0.3)
    assert set(s["policies"]) == {"offline", "dual", "greedy-queue"}
    invariants_hold(tmp_path / "o", fleet, 297)


def test_paper_fleet_on_the_conversation_trace(azure_conv, capsys, tmp_path):
    """The must-show: 19,366 queries, the paper's three Llama-2 deployments with replicas; every query
    served once; offline == plan; dual near offline's energy and accuracy with (almost) no SLO violations
    where greedy has many."""
    from tests.reference import require

    coef = require("wilkins2024/coefficients.json")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(PAPER_YAML.read_text().replace("accuracy: 50.97", "accuracy: 50.97\n    replicas: 150")
                     .replace("accuracy: 55.69", "accuracy: 55.69\n    replicas: 150")
                     .replace("accuracy: 64.52", "accuracy: 64.52\n    replicas: 40"))
    out = tmp_path / "conv"
    rc, stdout, err = run(capsys, "route", "--fits", coef, "--deployments", fleet, "--trace", azure_conv,
                          "--policy", "dual,greedy", "--slo-s", 400, "--out", out, "--json", "--no-plots")
    assert rc == 0, err
    s = json.loads(stdout)
    p = s["policies"]
    # 1,612 of the 19,366 queries exceed Llama-2's 4096-token context: no deployment can serve them, so they
    # are counted and not routed (they used to be served, by models that cannot take them)
    assert s["beyond_context"]["unservable"] == 1612 and s["trace"]["queries"] == 19366 - 1612
    invariants_hold(out, fleet, 19366 - 1612)
    assert abs(p["dual"]["energy_vs_offline_pct"]) < 5 and abs(p["dual"]["accuracy"] - p["offline"]["accuracy"]) < 0.5
    # (greedy: 137 without the 1,612 queries no Llama-2 can take, which made 1,381 when they were served)
    assert p["dual"]["slo_violations"] <= 10 < 100 < p["greedy"]["slo_violations"]
    rc, stdout, err = run(capsys, "plan", "--fits", coef, "--deployments", out / "offline_deployments.yaml",
                          "--workload", out / "workload.parquet", "--out", tmp_path / "plan", "--json")
    assert rc == 0, err
    assert json.loads(stdout)["energy_j"] == pytest.approx(p["offline"]["energy_j"], rel=1e-12)


def test_library_call_with_objects(small, tmp_path):
    """What the pipeline calls: llm_energy.route.run(RouteRequest) with in-memory fits, deployments, workload."""
    from llm_energy.fit.fits import load_fits
    from llm_energy.plan.deployments import load_deployments
    from llm_energy.plan.workload import synth_workload
    from llm_energy.route import RouteRequest, run

    d, _, fleet = small
    out = run(RouteRequest(fits=load_fits(H100_FITS), deployments=load_deployments(fleet),
                           trace=synth_workload("mix", 250, 3), arrivals="poisson", rate=1.0, policy="greedy,dual",
                           out=str(tmp_path / "lib"), plots=False))
    assert set(out.summary.policies) == {"offline", "greedy", "dual"}
    assert out.summary.served_once and Path(out.files["queries"]).exists()
    # the typed summary is summary.json exactly, and reads back to the same record
    from llm_energy.route.summary import RouteSummary

    text = (tmp_path / "lib" / "summary.json").read_text()
    back = RouteSummary.load(tmp_path / "lib")
    assert back.to_json() == text == out.summary.to_json()
    assert back.policies["dual"].info == out.summary.policies["dual"].info != {}
    assert back.policies["greedy"].deployments == out.summary.policies["greedy"].deployments
    with pytest.raises(Exception, match="needs --arrivals"):
        run(RouteRequest(fits=load_fits(H100_FITS), deployments=load_deployments(fleet),
                         trace=synth_workload("mix", 10, 3), out=str(tmp_path / "lib2")))


def test_history_windows_flag(small, capsys, tmp_path):
    d, trace, fleet = small
    base = ["route", "--fits", H100_FITS, "--deployments", fleet, "--trace", trace, "--policy", "dual",
            "--window-s", 30, "--no-plots", "--json"]
    for h in (0, 1):
        rc, stdout, err = run(capsys, *base, "--history-windows", h, "--out", tmp_path / f"h{h}")
        assert rc == 0, err
        assert json.loads(stdout)["options"]["history_windows"] == h
    rc, _, err = run(capsys, *base, "--history-windows", -1, "--out", tmp_path / "bad")
    assert rc == 2 and "--history-windows=-1" in err


def test_load_sets_the_synthetic_rate_and_arrival_column_mapping(small, capsys, tmp_path):
    from llm_energy.fit.fits import load_fits
    from llm_energy.plan.deployments import load_deployments
    from llm_energy.route.fleet import build_fleet, rate_for_load

    d, trace, fleet = small
    rc, stdout, err = run(capsys, "route", "--fits", H100_FITS, "--deployments", fleet, "--trace", trace, "--arrivals",
                          "poisson", "--load", 0.5, "--policy", "greedy", "--out", tmp_path / "l", "--json",
                          "--no-plots")
    assert rc == 0, err
    s = json.loads(stdout)
    wl = pl.read_csv(trace)
    f = build_fleet(load_fits(H100_FITS), load_deployments(fleet), wl["tin"].to_numpy(), wl["tout"].to_numpy())
    assert s["trace"]["arrival_rate_per_s"] == pytest.approx(rate_for_load(f, 0.5), rel=0.15)
    renamed = tmp_path / "renamed.csv"
    wl.rename({"arrival_s": "t_sec", "tin": "prompt", "tout": "gen"}).write_csv(renamed)
    rc, stdout, err = run(capsys, "route", "--fits", H100_FITS, "--deployments", fleet, "--trace", renamed,
                          "--columns", "tin=prompt,tout=gen,arrival=t_sec", "--policy", "greedy",
                          "--out", tmp_path / "r", "--json", "--no-plots")
    assert rc == 0, err
    assert json.loads(stdout)["trace"]["span_s"] == pytest.approx(float(wl["arrival_s"].max()))
