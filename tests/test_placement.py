"""Where the cluster's actors go, decided before any work: node hardware probes, GPU groups, memory
checks. Hardware records come from the fake NVML (two GPUs, H100 80 GB and A100 40 GB) and a fake
powercap tree, or are written out as a node of that kind would report them."""

import pytest
import yaml

pytest.importorskip("ray")

from cluster.placement import actor_slots, check_placement, plan_assignments
from cluster.config import load_config  # noqa: E402
from cluster.discovery import NodeInfo  # noqa: E402
from llm_energy.errors import UserError  # noqa: E402
from llm_energy.measure.hardware import GpuInfo, NodeHardware, probe_hardware  # noqa: E402
from llm_energy.measure.samplers.nvml import nvml_indices_for_cuda  # noqa: E402
from llm_energy.trials.store import TrialStore  # noqa: E402
from tests.fakes.fake_pynvml import FakeNvml, NoDriverNvml  # noqa: E402
from tests.fakes.powercap import make_powercap  # noqa: E402

GIB = 2**30


def a100_node(n_gpus: int, gib: int = 40) -> NodeHardware:
    gpus = tuple(GpuInfo(i, f"NVIDIA A100-SXM4-{gib}GB", gib * GIB, gib * GIB - 500 * 2**20, 400.0) for i in range(n_gpus))
    return NodeHardware("gpu-host", "AMD EPYC 7742", 128, 1024 * GIB, 1000 * GIB, gpus, ("nvml", "rapl"))


def cpu_node(mem_gib: float) -> NodeHardware:
    return NodeHardware("cpu-host", "Intel Xeon", 2, int(mem_gib * GIB), int(mem_gib * GIB), (), ("estimate",))


def config(tmp_path, node_types: dict, tin=(8, 128), tout=(8, 64)):
    d = {"out": str(tmp_path / "out"), "node_types": node_types,
         "sweep": {"tin": list(tin), "tout": list(tout), "repeats": 2, "warmups": 0}, "workload": {"synth": "chat"}}
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(d))
    return load_config(p)


def node(node_id: str, node_type: str, hw: NodeHardware | None) -> NodeInfo:
    return NodeInfo(node_id, "10.0.0.1", node_type, float(hw.logical_cores if hw else 1),
                    float(len(hw.gpus) if hw else 0), {}, hw)


def test_probe_lists_every_gpu_with_memory_and_the_meters(tmp_path, monkeypatch):
    make_powercap(tmp_path / "powercap")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # a process's view must not hide the node's GPUs
    hw = probe_hardware(nvml=FakeNvml(), powercap_root=tmp_path / "powercap")
    assert [g.name for g in hw.gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"]
    assert [g.index for g in hw.gpus] == [0, 1]
    assert hw.gpus[0].memory_total_b == 80 * GIB and hw.min_gpu_memory_b == 40 * GIB
    assert hw.meters == ("nvml", "rapl") and not hw.missing
    assert hw.gpu_kinds == "1x NVIDIA H100 80GB HBM3, 1x NVIDIA A100-SXM4-40GB"
    assert hw.memory_total_b > 0 and hw.logical_cores >= 1 and hw.cpu_model


def test_probe_without_driver_or_rapl_says_why(tmp_path):
    hw = probe_hardware(nvml=NoDriverNvml(), powercap_root=tmp_path / "none")
    assert hw.gpus == () and hw.gpu_kinds == "-" and hw.min_gpu_memory_b == 0
    assert hw.meters == ("estimate",)
    assert any(m.startswith("nvml: ") for m in hw.missing) and any(m.startswith("rapl: ") for m in hw.missing)


def test_cuda_ordinals_map_to_nvml_indices():
    assert nvml_indices_for_cuda([0, 1], env="2,3") == [2, 3]  # Ray gave the actor GPUs 2 and 3
    assert nvml_indices_for_cuda([1], env="5,0") == [0]
    assert nvml_indices_for_cuda([0, 1], env="") == [0, 1]  # nothing hidden
    assert nvml_indices_for_cuda([0], env="GPU-1a2b") == [0]  # UUIDs: cannot map, identity
    with pytest.raises(ValueError, match="cuda:2 is not visible"):
        nvml_indices_for_cuda([2], env="4,5")


def test_gpu_groups_become_actors_with_disjoint_trials(tmp_path):
    cfg = config(tmp_path, {"a100": {"models": ["tiny-llama"], "device": "cuda", "gpus_per_actor": 2}})
    nodes = [node("n1", "a100", a100_node(4)), node("n2", "a100", a100_node(2))]
    check_placement(cfg, nodes)
    assert [actor_slots(cfg, cfg.node_types["a100"], n) for n in nodes] == [2, 1]
    asg = plan_assignments(cfg, TrialStore(tmp_path / "store"), nodes)
    assert len(asg) == 3 and all(a.num_gpus == 2 for a in asg)
    assert len({a.label for a in asg}) == 3
    assert all(a.spec.gpu_indices == (0, 1) for a in asg)  # Ray shows an actor its 2 GPUs as cuda:0, cuda:1
    keys = [k for a in asg for k in a.trial_keys]
    assert len(keys) == len(set(keys)) == 2 * 2 * 2  # 4 cells x 2 repeats, each once


def test_cpu_nodes_get_one_actor_and_no_gpu(tmp_path):
    cfg = config(tmp_path, {"cpu": {"models": ["tiny-llama"], "gpus_per_actor": 2}})
    nodes = [node("c1", "cpu", cpu_node(8)), node("c2", "cpu", None)]  # an unprobed node is not checked
    check_placement(cfg, nodes)
    asg = plan_assignments(cfg, TrialStore(tmp_path / "store"), nodes)
    assert [a.num_gpus for a in asg] == [0, 0] and [actor_slots(cfg, cfg.node_types["cpu"], n) for n in nodes] == [1, 1]


@pytest.mark.parametrize("node_types,nodes,needle", [
    # llama-2-7b in float32 on a 4 GiB CPU node
    ({"cpu": {"models": ["llama-2-7b"], "device": "cpu"}}, [("cpu", cpu_node(4))],
     r"node_types.cpu.models: 'llama-2-7b' needs \d+\.\d GiB \(float32, batch 1 x 192 tokens\) but node cpu/c0 has 4.0 GiB"),
    # llama-2-70b in bf16 does not fit 2 A100-40GB
    ({"a100": {"models": ["llama-2-70b"], "device": "cuda", "gpus_per_actor": 2}}, [("a100", a100_node(2))],
     r"'llama-2-70b' needs 1\d\d\.\d GiB \(bfloat16.*has 2x 40.0 GiB GPU memory"),
    # a group of 4 GPUs on a 2-GPU node
    ({"a100": {"models": ["tiny-llama"], "device": "cuda", "gpus_per_actor": 4}}, [("a100", a100_node(2))],
     r"node_types.a100.gpus_per_actor=4: node a100/c0 has 2 GPU\(s\)"),
    # device cuda on a node whose NVML sees no GPU
    ({"gpu": {"models": ["tiny-llama"], "device": "cuda"}}, [("gpu", cpu_node(64))],
     r"node_types.gpu.device='cuda': node gpu/c0 has no GPU"),
    # a configured type with no node at all
    ({"h100": {"models": ["tiny-llama"]}}, [("cpu", cpu_node(8))], r"node_types.h100: no alive node"),
])
def test_placement_errors_name_the_field_before_any_work(tmp_path, node_types, nodes, needle):
    cfg = config(tmp_path, node_types)
    infos = [node(f"c{i}", t, hw) for i, (t, hw) in enumerate(nodes)]
    with pytest.raises(UserError, match=needle) as e:
        check_placement(cfg, infos)
    assert str(e.value).startswith(str(cfg.source)) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()  # nothing was written


def test_the_70b_fits_four_a100_80gb_as_one_actor(tmp_path):
    cfg = config(tmp_path, {"a100": {"models": ["llama-2-70b"], "device": "cuda", "gpus_per_actor": 4}})
    nodes = [node("n1", "a100", a100_node(8, gib=80))]
    check_placement(cfg, nodes)
    asg = plan_assignments(cfg, TrialStore(tmp_path / "store"), nodes)
    assert [a.num_gpus for a in asg] == [4, 4] and asg[0].spec.gpu_indices == (0, 1, 2, 3)


def test_placement_sizes_a_static_cache_by_its_bucket_as_the_node_will(tmp_path):
    from llm_energy.measure.inference.loading import read_model
    from llm_energy.measure.inference.sizing import sweep_memory_bytes

    src = read_model("llama-2-7b")
    kw = dict(batch=1, max_seq_len=2048 + 1100)  # bucket 4096
    cache_b = sweep_memory_bytes(src, "bfloat16", backend="cache", **kw)[0]
    static_b = sweep_memory_bytes(src, "bfloat16", backend="static", **kw)[0]
    assert static_b > cache_b
    mem = (cache_b + static_b) // 2  # holds the cache backend's sweep, not the static one's bucket
    hw = NodeHardware("h", "cpu", 8, 64 * GIB, 64 * GIB, (GpuInfo(0, "NVIDIA H100 80GB HBM3", mem, mem),), ("nvml",))
    for backend, fits in (("cache", True), ("static", False)):
        d = tmp_path / backend
        d.mkdir()
        cfg = config(d, {"h100": {"models": ["llama-2-7b"], "device": "cuda", "backend": backend}},
                     tin=(8, 2048), tout=(8, 1100))
        if fits:
            check_placement(cfg, [node("n1", "h100", hw)])
        else:
            with pytest.raises(UserError, match=r"'llama-2-7b' needs .* GiB"):
                check_placement(cfg, [node("n1", "h100", hw)])


def test_placement_refuses_a_sequence_past_the_models_positions(tmp_path):
    cfg = config(tmp_path, {"cpu": {"models": ["llama-2-7b"]}}, tin=(8, 2048), tout=(8, 2100))
    with pytest.raises(UserError, match=r"node_types\.cpu\.models: .*tin \+ tout = 4148 tokens exceeds the model's "
                                        r"max_position_embeddings=4096"):
        check_placement(cfg, [node("c1", "cpu", cpu_node(1024))])
