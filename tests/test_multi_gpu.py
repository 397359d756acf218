"""A deployment over several GPUs, as far as a CPU machine can show it: the profiler meters exactly the
GPUs the model is on (CUDA ordinals mapped to NVML indices through CUDA_VISIBLE_DEVICES), stores each
GPU's energy and their sum, and n_gpus. The meters are the fake two-GPU NVML on a real-time clock
(an H100 idling at ~71.5 W and an A100 at ~56 W); the model is a real tiny transformer on the CPU
standing in for the sharded one (the sharded build itself: tests/test_backends.py)."""


import pytest

import llm_energy.measure.inference.loading as loading
import llm_energy.measure.inference.sizing as sizing
from llm_energy.measure.design import SweepDesign
from llm_energy.measure.profiler import Profiler
from llm_energy.measure.spec import ProfileSpec
from llm_energy.measure.record import record_events
from llm_energy.measure.samplers.nvml import NvmlSampler
from llm_energy.trials.store import TrialStore
from tests.fakes.fake_pynvml import RealtimeNvml


@pytest.fixture
def gpus_on_cpu(monkeypatch):
    real_load = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda name, *a, **k: real_load(name, "cpu", "float32"))
    monkeypatch.setattr(sizing, "check_sweep", lambda *a, **k: None)  # CUDA memory: tests/test_backends.py


def sweep(tmp_path, gpu_indices):
    design = SweepDesign.grid([8, 16], [4], repeats=1, warmups=0)
    spec = ProfileSpec(model="tiny-llama", design=design, device="cuda", gpu_indices=gpu_indices, idle_s=0.5,
                       min_window_s=0.6, node_type="a100x2", threads=1)
    fake = RealtimeNvml()
    sampler = NvmlSampler("n", gpu_indices=[0, 1], period_s=0.02, nvml=fake)
    store = TrialStore(tmp_path)
    record_events(Profiler(spec, node="n", samplers=[sampler]).events(), store)
    return store.trials(), fake


def test_two_gpu_deployment_stores_each_gpu_and_the_sum(tmp_path, gpus_on_cpu, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    df, fake = sweep(tmp_path, (0, 1))
    assert df.height == 2 and (df["n_gpus"] == 2).all()
    assert df["system"][0].endswith("2x NVIDIA H100 80GB HBM3")
    for r in df.iter_rows(named=True):
        assert r["devices"] == ["gpu0", "gpu1"] and r["energy_source"] == "nvml-counter"
        e0, e1 = r["device_energy_j"]
        assert r["energy_j"] == pytest.approx(e0 + e1, rel=1e-9)
        window = (r["t_end_mono"] - r["t_start_mono"]) / r["n_inner"]
        # both idle: each GPU's energy is its idle power over the window (counter interpolation ~ a few %)
        assert e0 == pytest.approx(fake.gpus[0].idle_w * window, rel=0.08)
        assert e1 == pytest.approx(fake.gpus[1].idle_w * window, rel=0.08)


def test_the_meter_follows_cuda_visible_devices(tmp_path, gpus_on_cpu, monkeypatch):
    # Ray gave this actor NVML GPU 1 only: it is cuda:0 inside the process, and only GPU 1 is its energy
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    df, fake = sweep(tmp_path, (0,))
    assert (df["n_gpus"] == 1).all() and df["device"][0] == "NVIDIA A100-SXM4-40GB"
    for r in df.iter_rows(named=True):
        window = (r["t_end_mono"] - r["t_start_mono"]) / r["n_inner"]
        assert r["energy_j"] == pytest.approx(fake.gpus[1].idle_w * window, rel=0.08)
        assert r["energy_j"] < 0.9 * fake.gpus[0].idle_w * window  # not the H100's
