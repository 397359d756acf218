"""On a real NVIDIA GPU (skipped without one): NVML readings, the hardware probe, a profiled sweep
with exact tokens and NVML energy, the static backend's buckets on CUDA, and the memory refusal.

Run on the GPU machine with ``python3 -m pytest -m gpu tests/test_gpu.py``."""

import time

import polars as pl
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA")]


def busy_gpu(seconds: float) -> None:
    """Real load: bf16 matrix products for ``seconds``."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t = time.monotonic()
    while time.monotonic() - t < seconds:
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()


def test_nvml_power_and_counter_are_live_and_agree():
    from llm_energy.measure.integrate import window_energy
    from llm_energy.measure.samplers.nvml import NvmlSampler
    from llm_energy.trials.schema import samples_frame

    s = NvmlSampler("gpu-test", gpu_indices=[0], period_s=0.02)
    s.poll_counters = True  # as the profiler does: counter update points for window edges
    try:
        (dev,) = s.devices()
        assert dev.device == "gpu0" and dev.name.startswith("NVIDIA") and dev.memory_total_b > 2**30
        idle = [p.watts for p in s.read_power()]
        assert 20 < idle[0] < 1500
        s.start()
        t0 = time.monotonic()
        busy_gpu(4.0)
        t1 = time.monotonic()
        s.stop()
        rows = s.drain()
    finally:
        s.close()
    frame = samples_frame(rows, "s")
    power = frame.filter(pl.col("watts").is_not_null())
    counter = frame.filter(pl.col("joules").is_not_null())
    assert power.height > 100 and counter.height > 100  # 20 ms polling over 4 s
    assert (counter["joules"].diff().drop_nulls() >= 0).all()  # the counter never runs backwards
    assert power["watts"].max() > 1.3 * idle[0]  # the load shows
    win = pl.DataFrame({"trial_id": ["w"], "node": ["gpu-test"], "session": ["s"],
                        "t_start_mono": [t0 + 0.5], "t_end_mono": [t1 - 0.2]})
    got = {r["method"]: r["energy_j"] for r in window_energy(frame, win).iter_rows(named=True)}
    assert got["counter"] > 100 and got["trapezoid"] == pytest.approx(got["counter"], rel=0.05)


def test_probe_sees_the_gpu_and_nvml():
    from llm_energy.measure.hardware import probe_hardware

    hw = probe_hardware()
    assert hw.gpus and "nvml" in hw.meters
    assert hw.gpus[0].memory_total_b >= torch.cuda.get_device_properties(0).total_memory * 0.9


def test_profiled_sweep_on_cuda_has_exact_tokens_and_nvml_energy(tmp_path):
    from llm_energy.measure.design import SweepDesign
    from llm_energy.measure.profiler import Profiler
    from llm_energy.measure.spec import ProfileSpec
    from llm_energy.measure.record import record_events
    from llm_energy.trials.store import TrialStore

    design = SweepDesign.grid([8, 64], [8, 32], [1, 4], repeats=1, warmups=0, seed=0)
    spec = ProfileSpec(model="tiny-llama", design=design, device="cuda", idle_s=1.0, min_window_s=0.5,
                       node_type="gpu-test")
    store = TrialStore(tmp_path)
    record_events(Profiler(spec, node="gpu-node").events(), store)
    df = store.trials()
    assert df.height == 8
    assert (df["tin_actual"] == df["tin"]).all() and (df["tout_actual"] == df["tout"]).all()
    assert set(df["energy_source"]) == {"nvml-counter"}
    assert (df["n_gpus"] == 1).all() and df["device"][0].startswith("NVIDIA")
    assert (df["energy_j"] > 0).all() and (df["runtime_s"] > 0).all()
    # a window covers at least the minimum (short generations repeated inside it), never 0 J
    assert ((df["t_end_mono"] - df["t_start_mono"]) >= 0.5).all()


def test_static_backend_on_cuda_compiles_once_per_bucket():
    from llm_energy.measure.inference.backends import make_backend
    from llm_energy.measure.inference.loading import load_model
    from llm_energy.measure.inference.sizing import bucket_len

    b = make_backend("static", load_model("tiny-llama", "cuda"))
    for tin in (8, 30, 100):  # one 256-token bucket with tout 16
        b.prepare(1, tin, 16)
        assert b.generate(b.make_prompt(1, tin, 0), 16).tout_actual == 16
    assert b.compiles == 1 and bucket_len(100 + 16) == 256


def refusal_batch(free_bytes: int, model: str = "llama-2-70b", max_seq_len: int = 4096) -> int:
    """The smallest power-of-two batch at which ``model`` (weights + KV cache of ``max_seq_len`` tokens a
    sequence + margin) needs more than ``free_bytes``: 1 on an 80 GB card, more on an H200, where
    llama-2-70b fits at batch 1."""
    from llm_energy.measure.inference.loading import read_model
    from llm_energy.measure.inference.presets import memory_needed_bytes

    src = read_model(model)
    batch = 1
    while memory_needed_bytes(src.n_params, src.hf_config, "bfloat16", batch, max_seq_len)[0] <= free_bytes:
        batch *= 2
    return batch


def test_a_model_larger_than_the_gpu_is_refused_up_front():
    from llm_energy.measure.inference.loading import load_model
    from llm_energy.errors import UserError

    free = torch.cuda.mem_get_info(0)[0]
    batch = refusal_batch(free)  # what does not fit the card this runs on, not an assumed 80 GB
    with pytest.raises(UserError, match=rf"llama-2-70b.*needs .* GiB.*batch {batch} x 4096"):
        load_model("llama-2-70b", "cuda", batch=batch)
    assert torch.cuda.mem_get_info(0)[0] >= free * 0.95  # refused before any weights were allocated
