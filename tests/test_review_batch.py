"""Review of plan at a serving batch size (issue 13, 85f990b): an inventory replica at batch b is b servers of
the M/G/c wait (``add_headroom``, ``predicted_waits``), so the Erlang-C sum now runs over replicas x b servers;
summed as powers a^i / i! it overflowed to nan past ~700 busy servers (12 replicas at batch 64), and a nan wait
read as 0 s (``max(0.0, nan)``) and never added headroom (``nan > max_wait_s`` is false)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from llm_energy.plan.inventory_run import predicted_waits
from llm_energy.plan.problem import make_problem
from llm_energy.plan.replay import erlang_c_wait


def reference_wait(rate: float, mean_s: float, cv2: float, servers: int) -> float:
    """Allen-Cunneen's M/G/c wait with Erlang C summed in log space (no overflow)."""
    a = rate * mean_s
    rho = a / servers
    logs = [i * math.log(a) - math.lgamma(i + 1) for i in range(servers)]
    last = servers * math.log(a) - math.lgamma(servers + 1) - math.log(1 - rho)
    top = max(logs + [last])
    pw = math.exp(last - top) / (sum(math.exp(v - top) for v in logs) + math.exp(last - top))
    return pw * mean_s / (servers * (1 - rho)) * (1 + cv2) / 2


@pytest.mark.parametrize("servers, load", [(1, 0.8), (4, 3.0), (64, 50.0), (768, 750.0), (1024, 900.0),
                                           (4096, 4000.0)])
def test_erlang_c_wait_is_finite_and_exact_for_many_servers(servers, load):
    got = erlang_c_wait(load / 10.0, 10.0, 1.0, servers)
    assert math.isfinite(got)
    assert got == pytest.approx(reference_wait(load / 10.0, 10.0, 1.0, servers), rel=1e-9)


def test_predicted_wait_of_a_busy_replica_fleet_at_batch_64_is_not_zero():
    # one deployment at batch 64, 12 replicas = 768 servers, 10 s per batch, 750 servers busy on average
    window_s, runtime_s, n = 3600.0, 10.0, 270_000
    p = make_problem(["big"], [n], [300.0], [[1.0]], [[runtime_s]], [50.0], min_share=0.0, batch=[64])
    wp = SimpleNamespace(rows=np.array([0]), plan=SimpleNamespace(solution=SimpleNamespace(x=np.array([[n]])),
                                                                  replicas=np.array([12])))
    got = predicted_waits(p, SimpleNamespace(windows=[wp]), SimpleNamespace(window_s=window_s))["big"]
    want = reference_wait(n / window_s, runtime_s, 0.0, 12 * 64)
    assert got == pytest.approx(want, rel=1e-9) and want > 0.01
