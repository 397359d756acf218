"""route never sends a query to a deployment whose context it exceeds, under any policy (the cheap
falcon-7b, 2048 tokens, was every energy-aware policy's pick for the long prompts too); queries beyond
every deployment's context are counted and routed nowhere; offline == plan still holds on the inputs
route writes."""

import json

import numpy as np
import polars as pl
import pytest

from llm_energy.cli import main
from llm_energy.fit.fits import save_fits
from tests.test_plan_context import LONG, SHORT, fits


def write_route_inputs(d, tin, tout, *, short_replicas: int, gap_s: float):
    """fits.json, fleet.yaml (``short``: falcon-7b's 2048-token context, ``long``: mistral-7b's 32768) and
    trace.csv (``tin``, ``tout``, one arrival every ``gap_s``) in ``d``; returns (d, tin, tout)."""
    save_fits(fits(), d / "fits.json")
    (d / "fleet.yaml").write_text(f"deployments:\n  - {{name: short, fit: '{SHORT}', accuracy: 40, replicas: {short_replicas}}}\n"
                                  f"  - {{name: long, fit: '{LONG}', accuracy: 60, replicas: 2}}\n")
    pl.DataFrame({"tin": tin, "tout": tout, "arrival_s": np.arange(len(tin)) * gap_s}).write_csv(d / "trace.csv")
    return d, tin, tout


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    rng = np.random.default_rng(4)
    n = 120
    tin = np.where(rng.random(n) < 0.25, 2000, 100)
    tout = rng.integers(10, 400, n)
    tin[[7, 50]], tout[[7, 50]] = 30000, 5000  # beyond mistral-7b's 32768 too: routed nowhere
    return write_route_inputs(tmp_path_factory.mktemp("route_context"), tin, tout, short_replicas=4, gap_s=20.0)


def test_no_policy_routes_a_query_beyond_its_deployments_context(inputs, capsys):
    d, tin, tout = inputs
    rc = main(["route", "--fits", str(d / "fits.json"), "--deployments", str(d / "fleet.yaml"), "--trace",
               str(d / "trace.csv"), "--policy", "all", "--slo-s", "1000", "--idle-w", "10", "--no-plots",
               "--out", str(d / "out"), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    s = json.loads(out)
    q = pl.read_parquet(d / "out" / "queries.parquet")
    policies = set(q["policy"].unique())
    assert policies == {"offline", "dual", "greedy", "greedy-queue", "jsq", "threshold", "round-robin", "random",
                        "only:short", "only:long"}
    beyond = q.filter((pl.col("tin") + pl.col("tout") > 2048))
    assert beyond.height > 0 and beyond.filter(pl.col("deployment") == "short").height == 0, \
        beyond.filter(pl.col("deployment") == "short")["policy"].unique().to_list()
    assert q.filter(pl.col("tin") + pl.col("tout") > 32768).height == 0
    for policy, g in q.group_by("policy"):  # every routable query served exactly once
        assert sorted(g["query"].to_list()) == list(range(len(tin) - 2)), policy
    bc = s["beyond_context"]
    long_ = int(((tin + tout > 2048) & (tin + tout <= 32768)).sum())
    assert bc["unservable"] == 2 and bc["excluded"] == {"short": long_ + 2, "long": 2}
    assert s["trace"]["queries"] == len(tin) - 2 and s["served_once"]
    assert any("2 of 120 queries exceed every deployment's context length" in w for w in s["warnings"])
    only_short = s["policies"]["only:short"]["deployments"]
    assert only_short["long"]["count"] == long_  # the long prompts go where they fit
    for r in s["fitted_range"].values():
        assert r["beyond_context"] == 0
    # offline == plan on the inputs route writes (their context_tokens included)
    text = (d / "out" / "offline_deployments.yaml").read_text()
    assert "context_tokens: 2048" in text and "context_tokens: 32768" in text
    rc = main(["plan", "--fits", str(d / "fits.json"), "--deployments", str(d / "out" / "offline_deployments.yaml"),
               "--workload", str(d / "out" / "workload.parquet"), "--out", str(d / "plan"), "--json"])
    p = json.loads(capsys.readouterr().out)
    assert rc == 0 and p["energy_j"] == pytest.approx(s["policies"]["offline"]["energy_j"], rel=1e-9)
    assert p["beyond_context"]["unservable"] == 0


def test_route_refuses_unservable_queries_when_asked(inputs, capsys):
    d, _, _ = inputs
    rc = main(["route", "--fits", str(d / "fits.json"), "--deployments", str(d / "fleet.yaml"), "--trace",
               str(d / "trace.csv"), "--policy", "greedy", "--no-plots", "--idle-w", "10", "--out",
               str(d / "refused"), "--out-of-range", "refuse"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert "--out-of-range refuse: 2 of 120 queries exceed every deployment's context length" in err
    assert not (d / "refused" / "summary.json").exists()


def test_a_policy_given_an_unservable_query_refuses_it():
    """The library: a RouteContext over queries no deployment can take is an error, not a routing."""
    from llm_energy.errors import UserError
    from llm_energy.plan.deployments import parse_deployments
    from llm_energy.route.fleet import build_fleet
    from llm_energy.route.policies import RouteContext

    deps = parse_deployments({"deployments": [{"name": "short", "fit": SHORT, "accuracy": 40}]})
    fleet = build_fleet(fits(), deps, np.array([100, 3000]), np.array([10, 10]))
    assert fleet.context == (2048,) and fleet.allowed.tolist() == [[True], [False]]
    with pytest.raises(UserError, match=r"1 queries exceed every deployment's context length \(short: 2048 tokens\)"):
        RouteContext(fleet=fleet, arrival=np.array([0.0, 1.0]))
