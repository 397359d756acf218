"""Planning deployments that serve queries in batches of b (issue 13): a deployments file's ``batch``.

One pooled fit (``fit --pool-batch``) of the committed H200 store data/h200/v2/batch-llama-2-7b-static
(llama-2-7b, static, tin and tout 64..256, batch 1..256), planned with real GLPK on small Parquet
workloads: per query, energy = the batch's predicted energy / b, latency (the SLO) = the batch's
runtime, node-seconds (the capacity) = the batch's runtime / b.
"""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from llm_energy.cli import main
from llm_energy.errors import UserError
from llm_energy.fit.fits import FitsFile, load_fits, predict, save_fits
from llm_energy.plan.deployments import parse_deployments
from llm_energy.plan.problem import InfeasiblePlan
from llm_energy.plan.run import PlanRequest, run

STORE = Path(__file__).resolve().parents[1] / "data" / "h200" / "v2" / "batch-llama-2-7b-static"
KEY = "llama-2-7b@h200x1/static/b*"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The pooled fit (once), a 300-query workload in the fitted range and a one-class workload."""
    d = tmp_path_factory.mktemp("plan_batch")
    assert main(["fit", str(STORE), "--pool-batch", "--out", str(d / "fits.json")]) == 0
    fits = load_fits(d / "fits.json")
    assert fits.deployments[KEY].batch == "*"
    rng = np.random.default_rng(3)
    n = 300
    pl.DataFrame({"tin": rng.integers(64, 257, n), "tout": rng.integers(64, 257, n)}).write_parquet(d / "mix.parquet")
    pl.DataFrame({"tin": [128] * n, "tout": [128] * n}).write_parquet(d / "one.parquet")
    return d, fits


def _yaml(d: Path, name: str, entries: list[str], top: str = "") -> Path:
    p = d / f"{name}.yaml"
    p.write_text(top + "deployments:\n" + "".join(f"  - {e}\n" for e in entries))
    return p


def _plan(d: Path, deps: Path, workload: str, out: str, **kw):
    return run(PlanRequest(fits=str(d / "fits.json"), deployments=str(deps), workload=str(d / workload),
                           out=str(d / out), **kw))


def test_batch_64_costs_a_query_its_batch_energy_over_64_and_plans_less_energy(fitted):
    d, fits = fitted
    one = _plan(d, _yaml(d, "b1", [f"{{name: l7, fit: '{KEY}', accuracy: 50}}"]), "mix.parquet", "p1", min_share=0.0)
    b64 = _plan(d, _yaml(d, "b64", [f"{{name: l7, fit: '{KEY}', accuracy: 50, batch: 64}}"]), "mix.parquet", "p64",
                min_share=0.0)
    a = pl.read_parquet(d / "p64" / "assignment.parquet").sort("tin", "tout")
    tin, tout = a["tin"].to_numpy(), a["tout"].to_numpy()
    whole = predict(fits, KEY, tin, tout, batch=64)  # the batch's energy, the batch's runtime
    np.testing.assert_allclose(a["energy_j"].to_numpy(), whole["energy_j"].to_numpy() / 64, rtol=1e-12)
    np.testing.assert_allclose(a["runtime_s"].to_numpy(), whole["runtime_s"].to_numpy(), rtol=1e-12)
    w = a["count_assigned"].to_numpy()
    assert b64.summary.energy_j == pytest.approx(float((w * whole["energy_j"].to_numpy() / 64).sum()), rel=1e-12)
    at1 = predict(fits, KEY, tin, tout, batch=1)["energy_j"].to_numpy()
    assert one.summary.energy_j == pytest.approx(float((w * at1).sum()), rel=1e-12)
    assert b64.summary.energy_j < one.summary.energy_j / 10  # 11.7 J against 261 J a query at 128 + 128 tokens
    s = json.loads((d / "p64" / "summary.json").read_text())["deployments"]["l7"]
    assert s["batch"] == 64 and s["count"] == 300
    assert s["node_s"] == pytest.approx(s["runtime_s"] / 64, rel=1e-12)
    assert json.loads((d / "p1" / "summary.json").read_text())["deployments"]["l7"]["batch"] == 1


def test_capacity_counts_runtime_over_b(fitted):
    d, fits = fitted
    r1 = float(predict(fits, KEY, [128], [128], batch=1)["runtime_s"][0])
    r64 = float(predict(fits, KEY, [128], [128], batch=64)["runtime_s"][0])
    cap = 3.0  # node-seconds: 4 queries at batch 1, 154 at batch 64 (a batch of 64 every r64 seconds)
    hours = cap / 3600
    # one deployment: the 300 queries need 300 r1 s at batch 1 (infeasible), 300 r64 / 64 s at batch 64
    with pytest.raises(InfeasiblePlan, match="capacity"):
        _plan(d, _yaml(d, "cap1", [f"{{name: l7, fit: '{KEY}', accuracy: 50, hours: {300 * r64 / 64 * 1.01 / 3600!r}}}"]),
              "one.parquet", "c1", min_share=0.0)
    ok = _plan(d, _yaml(d, "cap64", [f"{{name: l7, fit: '{KEY}', accuracy: 50, batch: 64, "
                                     f"hours: {300 * r64 / 64 * 1.01 / 3600!r}}}"]), "one.parquet", "c64", min_share=0.0)
    assert ok.summary.status == "optimal" and ok.summary.deployments["l7"].count == 300
    assert ok.summary.deployments["l7"].node_s == pytest.approx(300 * r64 / 64, rel=1e-12)
    # the capacity row binds: a capped, more accurate deployment takes what its hours admit, the rest overflow
    for b, r in ((1, r1), (64, r64)):
        deps = _yaml(d, f"two{b}", [f"{{name: capped, fit: '{KEY}', accuracy: 60, batch: {b}, hours: {hours!r}}}",
                                    f"{{name: spill, fit: '{KEY}', accuracy: 40}}"])
        out = _plan(d, deps, "one.parquet", f"t{b}", zeta=0.0, min_share=0.0, mip_gap=1e-9)
        assert out.summary.deployments["capped"].count == math.floor(cap / (r / b) + 1e-9), b
        assert out.summary.deployments["capped"].node_s <= cap * (1 + 1e-9)
    assert math.floor(cap / (r64 / 64)) > 30 * math.floor(cap / r1)


def test_slo_limits_the_batch_runtime_not_runtime_over_b(fitted):
    d, fits = fitted
    r64 = float(predict(fits, KEY, [128], [128], batch=64)["runtime_s"][0])
    assert r64 / 64 < 0.9 * r64
    tight = _yaml(d, "slo_t", [f"{{name: l7, fit: '{KEY}', accuracy: 50, batch: 64, slo_s: {0.99 * r64!r}}}"])
    with pytest.raises(InfeasiblePlan, match="SLO"):
        _plan(d, tight, "one.parquet", "s1", min_share=0.0)
    loose = _yaml(d, "slo_l", [f"{{name: l7, fit: '{KEY}', accuracy: 50, batch: 64, slo_s: {1.01 * r64!r}}}"])
    assert _plan(d, loose, "one.parquet", "s2", min_share=0.0).summary.deployments["l7"].count == 300
    # two deployments: batch 64 under an SLO its batch runtime breaks, batch 1 without one: all to batch 1
    two = _yaml(d, "slo_2", [f"{{name: big, fit: '{KEY}', accuracy: 50, batch: 64, slo_s: {0.99 * r64!r}}}",
                             f"{{name: one, fit: '{KEY}', accuracy: 50}}"])
    out = _plan(d, two, "one.parquet", "s3", zeta=1.0, min_share=0.0)
    assert out.summary.deployments["big"].count == 0 and out.summary.deployments["one"].count == 300


def _one_line(capsys, argv) -> str:
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("value, why", [(0, "must be >= 1"), (-4, "must be >= 1"), (1.5, "must be a whole number"),
                                        ("'many'", "must be a finite number")])
def test_bad_batch_is_one_line_naming_file_field_value(fitted, capsys, value, why):
    d, _ = fitted
    deps = _yaml(d, "bad", [f"{{name: l7, fit: '{KEY}', accuracy: 50, batch: {value}}}"])
    err = _one_line(capsys, ["plan", "--fits", d / "fits.json", "--deployments", deps, "--workload",
                             d / "mix.parquet", "--min-share", 0, "--out", d / "bad_out"])
    shown = repr(value.strip("'")) if isinstance(value, str) else repr(value)
    assert f"{deps}: deployments[0].batch={shown}: {why}" in err


def test_batch_of_a_fit_at_one_batch_size_must_be_that_batch(fitted, capsys):
    d, fits = fitted
    at8 = replace(fits.deployments[KEY], deployment="llama-2-7b@h200x1/static/b8", batch=8)
    save_fits(FitsFile(deployments={at8.deployment: at8}, source="test"), d / "fits_b8.json")
    deps = _yaml(d, "b8", ["{name: l7, fit: 'llama-2-7b@h200x1/static/b8', accuracy: 50, batch: 64}"])
    err = _one_line(capsys, ["plan", "--fits", d / "fits_b8.json", "--deployments", deps, "--workload",
                             d / "mix.parquet", "--min-share", 0, "--out", d / "b8_out"])
    assert f"{deps}: deployments[0].batch=64: its fit 'llama-2-7b@h200x1/static/b8' was fitted at batch 8 only" in err
    # absent, it is planned at the fit's own batch: runtime / 8 node-seconds a query
    deps = _yaml(d, "b8ok", ["{name: l7, fit: 'llama-2-7b@h200x1/static/b8', accuracy: 50}"])
    out = run(PlanRequest(fits=str(d / "fits_b8.json"), deployments=str(deps), workload=str(d / "one.parquet"),
                          out=str(d / "b8_plan"), min_share=0.0))
    s = out.summary.deployments["l7"]
    assert s.batch == 8 and s.node_s == pytest.approx(s.runtime_s / 8, rel=1e-12)


def test_batch_beyond_the_fitted_batch_sizes_is_flagged(fitted):
    d, _ = fitted
    deps = _yaml(d, "b512", [f"{{name: l7, fit: '{KEY}', accuracy: 50, batch: 512}}"])
    out = _plan(d, deps, "mix.parquet", "x512", min_share=0.0)
    assert any("deployments[0].batch=512: outside the batch sizes its fit" in w and "1..256" in w
               for w in out.summary.warnings)
    assert out.summary.fitted_range["outside"] == 300
    with pytest.raises(UserError, match="--out-of-range refuse"):
        _plan(d, deps, "mix.parquet", "x512r", min_share=0.0, out_of_range="refuse")
    inside = _plan(d, _yaml(d, "b256", [f"{{name: l7, fit: '{KEY}', accuracy: 50, batch: 256}}"]), "mix.parquet",
                   "x256", min_share=0.0)
    assert inside.summary.fitted_range["outside"] == 0
    assert not any("batch=" in w for w in inside.summary.warnings)


def test_upper_energy_is_per_request_at_the_planned_batch(fitted):
    d, _ = fitted
    deps = _yaml(d, "up", [f"{{name: l7, fit: '{KEY}', accuracy: 50, batch: 64, hours: 1}}"])
    u = _plan(d, deps, "mix.parquet", "up", min_share=0.0).summary.uncertainty
    assert 1.0 <= u["energy_upper_j"] / u["energy_point_j"] < 1.2
    load = u["deployments"]["l7"]
    assert load["load_point_s"] <= load["load_upper_s"] < 1.2 * load["load_point_s"]


def test_route_max_batch_defaults_to_batch():
    doc = {"deployments": [{"name": "a", "fit": KEY, "accuracy": 1, "batch": 64},
                           {"name": "b", "fit": KEY, "accuracy": 1, "batch": 64, "max_batch": 8},
                           {"name": "c", "fit": KEY, "accuracy": 1}]}
    a, b, c = parse_deployments(doc, "f.yaml").deployments
    assert (a.batch, a.max_batch) == (64, 64)
    assert (b.batch, b.max_batch) == (64, 8)
    assert (c.batch, c.max_batch) == (None, 1)


def test_route_offline_equals_plan_at_batch(fitted, capsys):
    d, _ = fitted
    rng = np.random.default_rng(5)
    n = 200
    t = np.cumsum(rng.exponential(0.05, n))
    pl.DataFrame({"tin": rng.integers(64, 257, n), "tout": rng.integers(64, 257, n), "arrival_s": t - t[0]}
                 ).write_csv(d / "trace.csv")
    deps = _yaml(d, "route", [f"{{name: big, fit: '{KEY}', accuracy: 50, batch: 64}}",
                              f"{{name: small, fit: '{KEY}', accuracy: 55, batch: 4}}"])
    capsys.readouterr()
    assert main(["route", "--fits", str(d / "fits.json"), "--deployments", str(deps), "--trace", str(d / "trace.csv"),
                 "--policy", "offline", "--zeta", "0", "--idle-w", "0", "--out", str(d / "r"), "--json",
                 "--no-plots"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert off["fleet"]["big"]["max_batch"] == 64 and off["fleet"]["small"]["max_batch"] == 4
    text = (d / "r" / "offline_deployments.yaml").read_text()
    assert "\n    batch: 64\n" in text and "\n    batch: 4\n" in text  # plan's batch, beside route's max_batch
    assert main(["plan", "--fits", str(d / "fits.json"), "--deployments", str(d / "r" / "offline_deployments.yaml"),
                 "--workload", str(d / "r" / "workload.parquet"), "--zeta", "0", "--out", str(d / "rp"),
                 "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    o = off["policies"]["offline"]
    assert o["energy_j"] == pytest.approx(plan["energy_j"], rel=1e-9)
    assert {k: v["count"] for k, v in o["deployments"].items()} == {k: v["count"] for k, v in
                                                                  plan["deployments"].items()}
    assert {k: v["batch"] for k, v in plan["deployments"].items()} == {"big": 64, "small": 4}
    small = plan["deployments"]["small"]  # its capacity binds: slot-seconds in route, node-seconds x 4 in plan
    assert 0.99 * small["capacity_s"] < small["node_s"] <= small["capacity_s"] * (1 + 1e-9)


def test_inventory_replica_at_batch_b_serves_b_queries_at_once(fitted):
    d, fits = fitted
    r64 = float(predict(fits, KEY, [128], [128], batch=64)["runtime_s"][0])
    n = 300  # all at once: one replica of batch 64 serves them 64 at a time, each for the batch's runtime
    pl.DataFrame({"tin": [128] * n, "tout": [128] * n, "arrival_s": [0.0] * n}).write_parquet(d / "burst.parquet")
    deps = _yaml(d, "inv", [f"{{name: l7, fit: '{KEY}', accuracy: 50, batch: 64, node_type: h200}}"],
                 top="hours: 1.0\ninventory:\n  h200: {nodes: 2, idle_w: 100}\n")
    out = _plan(d, deps, "burst.parquet", "inv", min_share=0.0)
    assert out.summary.deployments["l7"].replicas == 1 and out.summary.deployments["l7"].batch == 64
    rep = out.summary.fleet["replay"]
    assert rep["service_p50_s"] == pytest.approx(r64, rel=1e-12)
    assert rep["latency_max_s"] == pytest.approx(math.ceil(n / 64) * r64, rel=1e-9)  # 5 rounds of 64
