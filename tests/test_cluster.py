"""The Ray layer on a real local cluster: several raylets on this machine."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

ray = pytest.importorskip("ray")

import cluster.collector as collector  # noqa: E402
from cluster.collector import run_cluster_sweep  # noqa: E402
from cluster.config import load_config  # noqa: E402
from cluster.discovery import NodeInfo, discover_nodes, nodes_by_type  # noqa: E402
from cluster.local import LocalNode, start_local_cluster  # noqa: E402
from llm_energy.errors import UserError  # noqa: E402
from llm_energy.trials.store import TrialStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray

CONFIG = {
    "node_types": {
        "cpu-a": {"models": ["tiny-llama"], "backend": "cache", "threads": 1},
        "cpu-b": {"models": ["tiny-mistral"], "backend": "cache", "threads": 1},
    },
    "sweep": {"tin": [8, 32], "tout": [4, 8], "repeats": 2, "warmups": 0, "min_window_s": 0.15, "idle_s": 0.2},
    "workload": {"synth": "chat", "n": 300},
    "planner": {"zeta": 0.5, "min_share": 0.05, "deployments": [
        {"name": "a", "node_type": "cpu-a", "model": "tiny-llama", "accuracy": 40.0},
        {"name": "b", "node_type": "cpu-b", "model": "tiny-mistral", "accuracy": 45.0}]},
}


def write_config(tmp_path, cfg=None, **over) -> Path:
    d = {**CONFIG, **over} if cfg is None else cfg
    d = {**d, "out": str(tmp_path / "out")}
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


@pytest.fixture(scope="module")
def local_cluster():
    # head + worker of type cpu-a, one worker of type cpu-b; fast failure detection for the kill test
    c = start_local_cluster([LocalNode("cpu-a"), LocalNode("cpu-a"), LocalNode("cpu-b")],
                            system_config={"health_check_failure_threshold": 2, "health_check_period_ms": 500})
    ray.init(address=c.address)
    yield c
    ray.shutdown()
    c.shutdown()


def test_actors_pinned_to_distinct_nodes_and_every_sample_stored(local_cluster, tmp_path):
    cfg = load_config(write_config(tmp_path))
    store = TrialStore(tmp_path / "store")
    rep = run_cluster_sweep(cfg, store)
    nodes = {n.node_id: n for n in discover_nodes()}
    assert len(rep.actors) == 3 and len(set(rep.actors.values())) == 3  # one actor on each raylet
    for label, node_id in rep.actors.items():
        assert label.split("/")[0] == nodes[node_id].node_type  # each on a node of its configured type
    trials = store.trials()
    assert trials.height == rep.trials_written == rep.trials_produced == 2 * 4 * 2  # 2 node types x 4 cells x 2
    assert trials["trial_id"].n_unique() == trials.height
    stored = store.samples().select(pl.len()).collect().item()
    assert stored == rep.samples_written == rep.samples_produced > 0
    assert set(trials["node_type"]) == {"cpu-a", "cpu-b"}
    # the seconds each trial's prepare took travel with its record from the actor to the driver's store
    assert trials["prepare_s"].is_not_null().all() and not trials["prepare_compiled"].any()
    # both cpu-a nodes did part of the cpu-a sweep
    assert trials.filter(pl.col("node_type") == "cpu-a")["node"].n_unique() == 2
    # a rerun of the same sweep resumes from the store: nothing is profiled again
    again = run_cluster_sweep(cfg, TrialStore(tmp_path / "store"))
    assert again.actors == {} and again.trials_written == again.samples_written == 0
    assert store.trials().height == 16


def test_worker_killed_mid_sweep_loses_and_repeats_nothing(local_cluster, tmp_path, monkeypatch):
    cfg = load_config(write_config(tmp_path, sweep={**CONFIG["sweep"], "tin": [8, 16, 32, 64], "tout": [4, 8, 16],
                                                    "repeats": 2}))
    cfg = type(cfg)(**{**cfg.__dict__, "node_types": {"cpu-a": cfg.node_types["cpu-a"]},
                       "planner": None})
    store = TrialStore(tmp_path / "store")
    cpu_a = {n.node_id for n in discover_nodes() if n.node_type == "cpu-a"}
    (victim,) = [n for n in local_cluster.worker_nodes if n.node_id in cpu_a]  # the cpu-a worker, not the head
    killed = threading.Event()

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline:
            d = tmp_path / "store" / "trials"
            if d.is_dir() and len(list(d.glob("part-*.parquet"))) >= 4:
                local_cluster.remove_node(victim, allow_graceful=False)
                killed.set()
                return
            time.sleep(0.05)

    # On a real cluster Ray lists a lost node alive until its health checks time out (about 30 s by
    # default; this test cluster's are fast): the requeue sees the node list as it was before the kill.
    before = discover_nodes()
    monkeypatch.setattr(collector, "discover_nodes", lambda *a, **k: before)
    t = threading.Thread(target=killer)
    t.start()
    rep = run_cluster_sweep(cfg, store)
    t.join()
    assert killed.is_set()
    trials = store.trials()
    assert trials.height == 12 * 2 and trials["trial_id"].n_unique() == 24  # all of them, none twice
    assert rep.requeued and not rep.failed
    assert rep.trials_written == 24  # the requeued trials were written once, by the surviving node
    # no attempt spent on the dead node: every requeue went to the surviving cpu-a node at once
    dead = f"cpu-a/{victim.node_id[:8]}"
    assert all(not r.endswith(f"-> {dead}") for r in rep.requeued), rep.requeued


def test_probed_nodes_and_placement_errors_before_any_work(local_cluster, tmp_path, monkeypatch):
    import cluster.collector

    started = []
    monkeypatch.setattr(cluster.collector, "start_actor", lambda *a, **k: started.append(a))
    nodes = discover_nodes(probe=True)
    alive = [n for n in ray.nodes() if n["Alive"]]  # the kill test may have removed a raylet already
    assert len(nodes) == len(alive) >= 2 and all(n.hardware is not None for n in nodes)
    for n in nodes:  # every raylet ran the probe: CPU, memory, meters (no NVML or RAPL here: the estimate)
        assert n.hardware.memory_total_b > 2**30 and n.hardware.logical_cores >= 1 and n.hardware.cpu_model
        assert "estimate" in n.hardware.meters or "rapl" in n.hardware.meters
    cases = [
        # llama-2-70b in float32 (~257 GiB) fits no CPU node of this machine
        ({"cpu-a": {"models": ["llama-2-70b"], "backend": "cache", "threads": 1}},
         r"node_types\.cpu-a\.models: 'llama-2-70b' needs \d+\.\d GiB \(float32.* but node cpu-a/\w+ has"),
        # a node type the cluster does not have
        ({"h100": {"models": ["tiny-llama"], "device": "cuda"}}, r"node_types\.h100: no alive node has the resource"),
        # CUDA asked of a node without a GPU
        ({"cpu-b": {"models": ["tiny-llama"], "device": "cuda"}}, r"node_types\.cpu-b\.device='cuda': node cpu-b/\w+ has no GPU"),
    ]
    for i, (types, needle) in enumerate(cases):
        d = tmp_path / str(i)
        d.mkdir()
        cfg = load_config(write_config(d, {**CONFIG, "node_types": types, "planner": None}))
        store = TrialStore(d / "store")
        with pytest.raises(UserError, match=needle):
            run_cluster_sweep(cfg, store)
        assert store.trials().height == 0 and store.samples().select(pl.len()).collect().item() == 0
    assert started == []  # no actor was started for any of them


def test_max_concurrent_one_profiles_one_node_at_a_time(local_cluster, tmp_path):
    cfg = load_config(write_config(tmp_path, sweep={**CONFIG["sweep"], "tin": [8, 16], "tout": [4], "repeats": 1,
                                                    "max_concurrent": 1}, planner=None))
    store = TrialStore(tmp_path / "store")
    rep = run_cluster_sweep(cfg, store)
    trials = store.trials()
    assert trials.height == rep.trials_written == 2 * 2 and not rep.failed
    spans = trials.group_by("node").agg(pl.col("t_start").min(), pl.col("t_end").max()).sort("t_start").rows()
    assert len(spans) >= 2
    for (_, _, end), (_, start, _) in zip(spans, spans[1:]):
        assert start >= end  # the next node's first trial starts after the previous node's last one


def test_bad_configs_fail_before_any_work(tmp_path):
    bad = [
        ({**CONFIG, "node_types": {"gpu-x": {"models": ["tiny-llama"], "backend": "turbo"}}}, "node_types.gpu-x.backend"),
        ({**CONFIG, "node_types": {"cpu-a": {"models": ["llama-9000"]}}}, "llama-9000"),
        ({k: v for k, v in CONFIG.items() if k != "sweep"}, "sweep: missing"),
        ({**CONFIG, "sweep": {"tin": [8, -1], "tout": [4]}}, "sweep.tin"),
        ({**CONFIG, "planner": {"deployments": [{"name": "z", "node_type": "nope", "model": "tiny-llama",
                                                 "accuracy": 1}]}}, "node_type='nope'"),
        ({**CONFIG, "planner": {**CONFIG["planner"], "zeta": 3}}, "zeta=3"),
        ({**CONFIG, "sweep": {**CONFIG["sweep"], "max_concurrent": 0}}, "sweep.max_concurrent=0"),
        ({**CONFIG, "node_types": {"cpu-a": {"models": ["tiny-llama"], "gpus_per_actor": 0}}},
         "node_types.cpu-a.gpus_per_actor=0"),
        ({**CONFIG, "planner": {**CONFIG["planner"], "pareto_steps": 1}}, "planner.pareto_steps=1"),
        ({**CONFIG, "report": {"grid_gco2_per_kwh": -5}}, "report.grid_gco2_per_kwh=-5"),
        ({**CONFIG, "report": {"grid": 400}}, "report.grid: unknown field"),
    ]
    for i, (cfg, needle) in enumerate(bad):
        d = tmp_path / str(i)
        d.mkdir()
        with pytest.raises(UserError) as e:
            load_config(write_config(d, cfg))
        assert needle in str(e.value) and "config.yaml" in str(e.value)
    cfg = load_config(write_config(tmp_path))
    nodes = [NodeInfo("n1", "", "cpu-a", 1, 0)]
    with pytest.raises(UserError, match="node_types.cpu-b: no alive node"):
        nodes_by_type(cfg, nodes)
