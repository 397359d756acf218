"""route's per-query output joins back to the input trace: queries beyond every deployment's context are
taken out before routing, so queries.parquet's ``query`` numbers the routed queries (workload.parquet's
rows) and ``trace_row`` says each one's row in the trace given (or the workload file, on synthetic
arrivals), under every policy and rate scale."""

import numpy as np
import polars as pl
import pytest

from llm_energy.cli import main
from tests.test_plan_context import SHORT, fits
from tests.test_route_context import write_route_inputs

DROPPED = [3, 4, 41]  # beyond every deployment's context (mistral-7b's 32768 tokens)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    rng = np.random.default_rng(7)
    n = 60
    tin = np.where(rng.random(n) < 0.3, 2000, rng.integers(20, 400, n))
    tout = rng.integers(10, 300, n)
    tin[DROPPED], tout[DROPPED] = 30000, 5000
    return write_route_inputs(tmp_path_factory.mktemp("route_context_index"), tin, tout, short_replicas=3, gap_s=15.0)


def _route(d, out, *extra):
    rc = main(["route", "--fits", str(d / "fits.json"), "--deployments", str(d / "fleet.yaml"), "--trace",
               str(d / "trace.csv"), "--policy", "greedy,round-robin", "--idle-w", "10", "--no-plots",
               "--out", str(d / out), "--json", *extra])
    assert rc == 0
    return pl.read_parquet(d / out / "queries.parquet")


def _joins_back(q: pl.DataFrame, tin, tout) -> None:
    from llm_energy.route.metrics import check_invariants

    kept = [i for i in range(len(tin)) if i not in DROPPED]
    for _, g in q.group_by(["rate_scale", "policy"]):
        assert check_invariants(g, len(kept), {"short": 3, "long": 2}, {"short": 1, "long": 1}) == []
        swapped = g.with_columns(pl.when(pl.col("query") == 0).then(kept[1]).when(pl.col("query") == 1)
                                 .then(kept[0]).otherwise(pl.col("trace_row")).alias("trace_row"))
        assert check_invariants(swapped, len(kept), {"short": 3, "long": 2}, {"short": 1, "long": 1}) == [
            "trace_row does not rise with query (queries matched to the wrong input rows)"]
        g = g.sort("query")
        assert g["query"].to_list() == list(range(len(kept)))  # as before: the routed queries, 0..N-1
        assert g["trace_row"].to_list() == kept  # the input's rows, the dropped ones skipped
        rows = g["trace_row"].to_numpy()
        np.testing.assert_array_equal(g["tin"].to_numpy(), tin[rows])
        np.testing.assert_array_equal(g["tout"].to_numpy(), tout[rows])


def test_trace_row_is_the_input_row_through_the_drop_and_a_rate_sweep(inputs, capsys):
    d, tin, tout = inputs
    q = _route(d, "sweep", "--rate-scale", "1,2")
    capsys.readouterr()
    assert set(q["rate_scale"].unique()) == {1.0, 2.0} and set(q["policy"].unique()) >= {"greedy", "offline"}
    _joins_back(q, tin, tout)
    for x in (1.0, 2.0):  # the trace's own arrivals, compressed x times, at the row it names
        g = q.filter((pl.col("rate_scale") == x) & (pl.col("policy") == "greedy"))
        np.testing.assert_allclose(g["arrival_s"].to_numpy(), g["trace_row"].to_numpy() * 15.0 / x)
    # workload.parquet holds the routed queries in `query` order: query indexes it, trace_row the trace
    w = pl.read_parquet(d / "sweep" / "workload.parquet")
    g = q.filter((pl.col("rate_scale") == 1.0) & (pl.col("policy") == "greedy")).sort("query")
    assert w["tin"].to_list() == g["tin"].to_list() and w.height == len(tin) - len(DROPPED)


def test_trace_row_on_synthetic_arrivals_is_the_workload_files_row(inputs, capsys):
    d, tin, tout = inputs
    q = _route(d, "poisson", "--arrivals", "poisson", "--rate", "0.05")
    capsys.readouterr()
    _joins_back(q, tin, tout)


def test_drop_beyond_context_returns_the_kept_rows():
    from llm_energy.plan.deployments import parse_deployments
    from llm_energy.route.run import drop_beyond_context
    from llm_energy.route.trace import Trace

    deps = parse_deployments({"deployments": [{"name": "short", "fit": SHORT, "accuracy": 40}]})
    tr = Trace(np.array([100, 3000, 50, 4000]), np.array([10, 10, 10, 10]), np.arange(4.0))
    kept, report, rows = drop_beyond_context(tr, deps, fits())
    assert rows.tolist() == [0, 2] and kept.tin.tolist() == [100, 50] and report.unservable == 2
    same, _, rows = drop_beyond_context(kept, deps, fits())
    assert same is kept and rows.tolist() == [0, 1]
