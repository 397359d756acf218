"""route: the simulator against a plain event loop, the invariants on queries.parquet (and that the
checker catches each way they can break), arrivals, policies, idle energy. Fits the project ships
(data/h100/fits.json), so these run on a fresh clone."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from llm_energy.route.metrics import check_invariants, idle_energy, queries_frame
from llm_energy.route.policies import RouteContext, get_policy
from llm_energy.route.reference import simulate_events
from llm_energy.route.sim import busy_union, serve_fixed, serve_online
from llm_energy.route.trace import synthetic_arrivals

REPO = Path(__file__).resolve().parents[1]
H100_FITS = REPO / "data" / "h100" / "fits.json"
POLICIES = ("offline", "dual", "greedy", "greedy-queue", "jsq", "threshold", "round-robin", "random", "only:fast")


def h100_yaml(tmp_path: Path, replicas=(3, 2, 2), max_batch=(1, 2, 1)) -> Path:
    rows = (("fast", "static", 50.0), ("mid", "cache", 53.0), ("slow", "no-cache", 56.0))
    text = "deployments:\n" + "".join(
        f"  - {{name: {n}, fit: 'llama-2-7b@h100x1/{b}/b1', accuracy: {a}, replicas: {r}, max_batch: {m}}}\n"
        for (n, b, a), r, m in zip(rows, replicas, max_batch))
    p = tmp_path / "fleet.yaml"
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def fleet_ctx(tmp_path_factory):
    from llm_energy.fit.fits import load_fits
    from llm_energy.plan.deployments import load_deployments
    from llm_energy.route.fleet import build_fleet

    d = tmp_path_factory.mktemp("route")
    rng = np.random.default_rng(3)
    n = 600
    tin, tout = rng.integers(16, 2048, n), rng.integers(8, 512, n)
    arrival = synthetic_arrivals(n, 2.0, "gamma", 2.0, seed=1)
    fleet = build_fleet(load_fits(H100_FITS), load_deployments(h100_yaml(d)), tin, tout, idle_w=100.0)
    return fleet, tin, tout, arrival


def ctx_for(fleet_ctx, **kw) -> RouteContext:
    fleet, _, _, arrival = fleet_ctx
    return RouteContext(fleet=fleet, arrival=arrival, window_s=60.0, **kw)


def test_fixed_serving_equals_event_loop():
    rng = np.random.default_rng(0)
    n, k = 3000, 3
    arrival = np.sort(rng.uniform(0, 500, n))
    arrival[100:110] = arrival[100]  # simultaneous arrivals
    service = rng.exponential(2.0, (n, k))
    service[::17] = 0.0  # zero-length services
    dep = rng.integers(0, k, n)
    slots = np.array([1, 3, 5])
    st, en, _ = serve_fixed(arrival, service[np.arange(n), dep], dep, slots)
    d2, st2, en2 = simulate_events(arrival.tolist(), service.tolist(), slots.tolist(), lambda q: int(dep[q]))
    assert d2 == dep.tolist()
    np.testing.assert_allclose(st, st2, rtol=0, atol=1e-9)
    np.testing.assert_allclose(en, en2, rtol=0, atol=1e-9)
    # the online loop with the same decisions gives the same times (one class per query here)
    d3, st3, en3, _ = serve_online(arrival, np.arange(n), service, slots, lambda q, t, s: int(dep[q]))
    assert np.array_equal(d3, dep)
    np.testing.assert_allclose(st3, st, atol=1e-9)
    np.testing.assert_allclose(en3, en, atol=1e-9)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_keeps_the_invariants(fleet_ctx, policy):
    fleet, tin, tout, arrival = fleet_ctx
    ctx = ctx_for(fleet_ctx, slo_s=60.0)
    routed = get_policy(policy)(ctx)
    frame = queries_frame(fleet, tin, tout, arrival, routed, policy, 1.0)
    reps = dict(zip(fleet.names, fleet.replicas.tolist()))
    mb = dict(zip(fleet.names, fleet.max_batch.tolist()))
    assert check_invariants(frame, len(arrival), reps, mb) == []
    if policy == "only:fast":
        assert set(frame["deployment"]) == {"fast"}


def _good_frame(fleet_ctx):
    fleet, tin, tout, arrival = fleet_ctx
    routed = get_policy("round-robin")(ctx_for(fleet_ctx))
    reps = dict(zip(fleet.names, fleet.replicas.tolist()))
    mb = dict(zip(fleet.names, fleet.max_batch.tolist()))
    return queries_frame(fleet, tin, tout, arrival, routed, "rr", 1.0), len(arrival), reps, mb


def test_invariant_checker_catches_each_fault(fleet_ctx):
    frame, n, reps, mb = _good_frame(fleet_ctx)
    assert check_invariants(frame, n, reps, mb) == []
    lost = frame.filter(pl.col("query") != 5)
    assert any("lost" in b for b in check_invariants(lost, n, reps, mb))
    twice = pl.concat([frame, frame.filter(pl.col("query") == 7)])
    assert any("more than once" in b for b in check_invariants(twice, n, reps, mb))
    early = frame.with_columns(pl.when(pl.col("query") == 9).then(pl.col("arrival_s") - 1.0)
                               .otherwise(pl.col("start_s")).alias("start_s"),
                               pl.when(pl.col("query") == 9).then(pl.col("arrival_s") - 1.0 + pl.col("runtime_s"))
                               .otherwise(pl.col("end_s")).alias("end_s"))
    assert any("before they arrive" in b for b in check_invariants(early, n, reps, mb))
    # every query of 'fast' (3 replicas x 1) at once: more in service than exist
    crowd = frame.with_columns(pl.when(pl.col("deployment") == "fast").then(pl.col("arrival_s").min() + 1e4)
                               .otherwise(pl.col("start_s")).alias("start_s"))
    crowd = crowd.with_columns((pl.col("start_s") + pl.col("runtime_s")).alias("end_s"))
    bad = check_invariants(crowd, n, reps, mb)
    assert any("fast: more than 3 queries in service at once" == b for b in bad)
    assert any(b.startswith("fast: more than 1 queries in service at once per") for b in bad)
    ghost = frame.with_columns(pl.when(pl.col("query") == 3).then(99).otherwise(pl.col("replica")).alias("replica"))
    assert any("beyond" in b for b in check_invariants(ghost, n, reps, mb))


def test_greedy_matches_plain_python_reference():
    from llm_energy.fit.fits import load_fits
    from llm_energy.plan.deployments import parse_deployments
    from llm_energy.route.fleet import build_fleet
    from llm_energy.route.reference import reference_greedy

    fits = load_fits(H100_FITS)
    keys = list(fits.deployments)
    deps = parse_deployments({"deployments": [{"name": f"d{i}", "fit": k, "accuracy": 50 + 3 * i, "replicas": 2}
                                              for i, k in enumerate(keys)]})
    rng = np.random.default_rng(5)
    tin, tout = rng.integers(1, 4000, 800), rng.integers(1, 1000, 800)
    arrival = np.sort(rng.uniform(0, 400, 800))
    fit = tin + tout <= 4096  # Llama-2's context: longer queries can be routed nowhere (route drops them first)
    tin, tout, arrival = tin[fit], tout[fit], arrival[fit]
    fleet = build_fleet(fits, deps, tin, tout)
    ctx = RouteContext(fleet=fleet, arrival=arrival, zeta=0.7)
    routed = get_policy("greedy")(ctx)
    e_bar, a_bar = fleet.scales()
    models = [{"e": (fits.deployments[k].targets["energy_j"].terms, fits.deployments[k].targets["energy_j"].coef),
               "r": (fits.deployments[k].targets["runtime_s"].terms, fits.deployments[k].targets["runtime_s"].coef),
               "accuracy": 50 + 3 * i} for i, k in enumerate(keys)]
    dep, st, en, energy = reference_greedy(arrival.tolist(), tin.tolist(), tout.tolist(), models, [2, 2, 2], 0.7,
                                           e_bar, a_bar)
    assert dep == routed.dep.tolist()
    np.testing.assert_allclose(en, routed.end, rtol=1e-12)
    assert energy == pytest.approx(float(fleet.energy_j[fleet.qclass, routed.dep].sum()), rel=1e-12)


def test_synthetic_arrivals_rate_and_burstiness():
    n, rate = 200_000, 4.0
    for kind, cv in (("poisson", 1.0), ("gamma", 0.5), ("gamma", 3.0)):
        t = synthetic_arrivals(n, rate, kind, cv, seed=2)
        gaps = np.diff(t)
        assert t[0] == 0 and np.all(gaps >= 0)
        assert gaps.mean() == pytest.approx(1 / rate, rel=0.03)
        assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)
    assert np.array_equal(synthetic_arrivals(50, 1.0, "gamma", 2.0, 7), synthetic_arrivals(50, 1.0, "gamma", 2.0, 7))


def test_busy_union_and_idle_energy(fleet_ctx):
    s, e, g = np.array([0.0, 1.0, 5.0, 0.0]), np.array([2.0, 3.0, 6.0, 10.0]), np.array([0, 0, 0, 1])
    np.testing.assert_allclose(busy_union(s, e, g), [4.0, 10.0])
    fleet = fleet_ctx[0]
    # nothing served: every replica idle over the horizon at 100 W
    assert idle_energy(fleet, np.zeros(0, int), np.zeros(0), np.zeros(0), np.zeros(0, int), 10.0) == pytest.approx(
        100.0 * 10.0 * int(fleet.replicas.sum()))


def test_queue_awareness_cuts_waiting(fleet_ctx):
    """The seed's finding: with queues forming, the queue-aware rule waits far less than greedy."""
    from llm_energy.route.metrics import policy_metrics

    fleet, _, _, arrival = fleet_ctx
    ctx = RouteContext(fleet=fleet, arrival=arrival)  # bursty (cv 2): greedy's one cheap deployment queues
    out = {p: policy_metrics(fleet, ctx.cost_c(), ctx.arrival, get_policy(p)(ctx), None) for p in ("greedy",
                                                                                                   "greedy-queue")}
    assert out["greedy-queue"]["wait_p99_s"] < 0.5 * out["greedy"]["wait_p99_s"]
    assert out["greedy-queue"]["energy_j"] > out["greedy"]["energy_j"]  # the price of spreading


def test_offline_assignment_fills_the_plan_counts():
    from llm_energy.route.offline import offline_assignment

    qclass = np.array([0, 1, 0, 0, 2, 1, 0, 2])
    x = np.array([[1, 3], [2, 0], [0, 2]])
    dep = offline_assignment(x, qclass, seed=4)
    for c in range(3):
        assert np.bincount(dep[qclass == c], minlength=2).tolist() == x[c].tolist()


def test_fleet_batches_idle_power_and_warnings(tmp_path):
    """Pooled (/b*) fits predict at max_batch (energy shared by the batch); a batch-1 fit with max_batch > 1
    warns; idle_w comes from the fits, --idle-w NAME=W overrides it, and a missing one warns (0 W)."""
    from llm_energy.fit.fits import DeploymentFit, FitsFile, TargetModel
    from llm_energy.plan.deployments import parse_deployments
    from llm_energy.route.fleet import build_fleet

    pooled = DeploymentFit(deployment="m@h100x1/cache/b*", model="m", node_type="h100", n_gpus=1, backend="cache",
                           batch="*", idle_w=70.0,
                           targets={"energy_j": TargetModel("batched", ["batch*tout"], [2.0]),
                                    "runtime_s": TargetModel("batched", ["tout", "batch"], [0.01, 0.5])})
    single = DeploymentFit(deployment="m@h100x1/cache/b1", model="m", node_type="h100", n_gpus=1, backend="cache",
                           batch=1, targets={"energy_j": TargetModel("paper", ["tout"], [3.0]),
                                             "runtime_s": TargetModel("paper", ["tout"], [0.02])})
    fits = FitsFile(deployments={d.deployment: d for d in (pooled, single)})
    deps = parse_deployments({"deployments": [
        {"name": "pooled", "fit": "m@h100x1/cache/b*", "accuracy": 50, "replicas": 2, "max_batch": 4},
        {"name": "single", "fit": "m@h100x1/cache/b1", "accuracy": 55, "max_batch": 3}]})
    tin, tout = np.array([10, 10]), np.array([100, 200])
    f = build_fleet(fits, deps, tin, tout)
    c = f.qclass[1]  # tout 200
    assert f.runtime_s[c, 0] == pytest.approx(0.01 * 200 + 0.5 * 4) and f.energy_j[c, 0] == pytest.approx(2.0 * 200)
    assert f.runtime_s[c, 1] == pytest.approx(4.0) and f.energy_j[c, 1] == pytest.approx(600.0)
    assert f.slots.tolist() == [8, 3] and f.idle_w.tolist() == [70.0, 0.0]
    assert any("single: max_batch=3 but its fit is at batch 1" in w for w in f.warnings)
    assert any("no idle_w for single" in w for w in f.warnings)
    f2 = build_fleet(fits, deps, tin, tout, idle_w="pooled=10,single=20")
    assert f2.idle_w.tolist() == [10.0, 20.0] and not any("idle_w" in w for w in f2.warnings)
    assert build_fleet(fits, deps, tin, tout, idle_w=5).idle_w.tolist() == [70.0, 5.0]  # the fits' own wins
