"""Measurement windows (llm_energy.measure.window) on the fake NVML (real-time clock, counters that
update every 100 ms), the fake powercap tree and the labelled CPU estimate."""

import json
import os
import time

import pytest

from llm_energy.errors import UserError
from llm_energy.measure.samplers.estimate import EstimateSampler
from llm_energy.measure.samplers.nvml import NvmlSampler
from llm_energy.measure.samplers.rapl import RaplSampler
from llm_energy.measure.window import EnergyMeter, Measurement
from tests.fakes.fake_pynvml import UPDATE_S, FakeNvml, NoDriverNvml, RealtimeNvml
from tests.fakes.powercap import MAX_RANGE_UJ, make_powercap


@pytest.fixture
def gpus():
    fake = RealtimeNvml()
    sampler = NvmlSampler("n", gpu_indices=[0, 1], period_s=0.02, nvml=fake)
    yield fake, sampler
    sampler.close()


def busy_for(fake: RealtimeNvml, gpu: int, start_in: float, seconds: float) -> None:
    """Put GPU ``gpu`` under load from ``start_in`` s from now, for ``seconds``."""
    a = fake.now + start_in
    fake.gpus[gpu].busy.append((a, a + seconds))


def true_j(fake: RealtimeNvml, gpu: int, m: Measurement) -> float:
    g = fake.gpus[gpu]
    return g.energy(m.t_end_mono - fake.t0) - g.energy(m.t_start_mono - fake.t0)


def counter_bracket(fake: RealtimeNvml, gpu: int, m: Measurement) -> tuple[float, float]:
    """What the replayed counter itself allows: between the deltas of the counter values around each edge."""
    g = fake.gpus[gpu]

    def tick(t):
        return (int((t - fake.t0) / UPDATE_S + 1e-9)) * UPDATE_S

    a, b = tick(m.t_start_mono), tick(m.t_end_mono)
    return g.energy(b) - g.energy(a + UPDATE_S), g.energy(b + UPDATE_S) - g.energy(a)


def test_gpu_window_is_the_interpolated_counter_delta(gpus):
    fake, sampler = gpus
    meter = EnergyMeter([sampler], min_window_s=0.6)
    assert meter.devices == ("gpu0", "gpu1") and meter.energy_source == "nvml-counter"
    meter.begin_window("gen")
    busy_for(fake, 0, 0.2, 0.35)  # the H100 at ~310 W for 0.35 s of a ~0.8 s window
    time.sleep(0.8)
    m = meter.end_window("gen")
    assert isinstance(m, Measurement) and m.name == "gen" and not m.short_window and m.note == ""
    assert m.time_s == pytest.approx(0.8, abs=0.1)
    for gpu, dev in ((0, "gpu0"), (1, "gpu1")):
        got = m.device_energy_j[dev]
        lo, hi = counter_bracket(fake, gpu, m)
        assert lo <= got <= hi, (dev, lo, got, hi)
        assert got == pytest.approx(true_j(fake, gpu, m), rel=0.04), dev
        assert m.device_source[dev] == "nvml-counter"
    # the load is in it: far above the H100's idle, and the total is the sum of the two GPUs
    assert m.device_energy_j["gpu0"] > 1.5 * fake.gpus[0].idle_w * m.time_s
    assert m.energy_j == pytest.approx(m.device_energy_j["gpu0"] + m.device_energy_j["gpu1"])
    assert m.mean_w == pytest.approx(m.energy_j / m.time_s) and not m.is_estimate
    assert m.n_samples >= 0.8 / 0.02 * 2 * 0.5  # both GPUs' power polled at ~50 Hz through the window
    assert not sampler.running  # polling stops with the last window


def test_first_window_waits_for_a_counter_update_before_its_start(gpus):
    """The counter only moves every 100 ms. A window opened 60 ms after an update, on a GPU under
    load, must not take the stale value as its start (that would add ~60 ms x 310 W = ~19 J, 10%):
    the meter starts polling one update period before the edge, so the edge is interpolated."""
    fake, sampler = gpus
    busy_for(fake, 0, 0.0, 3.0)
    meter = EnergyMeter([sampler], devices=["gpu0"], min_window_s=0.5)
    while not 0.055 < fake.now % UPDATE_S < 0.065:
        time.sleep(0.002)
    meter.begin_window("loaded")
    time.sleep(0.6)
    m = meter.end_window("loaded")
    assert m.energy_j == pytest.approx(true_j(fake, 0, m), rel=0.03)


def test_windows_nest_and_overlap(gpus):
    fake, sampler = gpus
    meter = EnergyMeter([sampler], devices=["gpu0"], min_window_s=0.5)
    meter.begin_window("outer")
    time.sleep(0.2)
    with meter.window("inner") as inner:
        busy_for(fake, 0, 0.0, 0.3)
        time.sleep(0.6)
        meter.begin_window("crossing")  # opens inside inner, ends after it
    time.sleep(0.6)
    crossing = meter.end_window("crossing")
    outer = meter.end_window("outer")
    assert meter.open_windows == ()
    for m in (inner.measurement, crossing, outer):
        assert not m.short_window and m.devices == ("gpu0",)
        assert m.energy_j == pytest.approx(true_j(fake, 0, m), rel=0.04), m.name
    assert inner.energy_j == inner.measurement.energy_j  # the handle reads through to its Measurement
    assert outer.t_start_mono < inner.t_start_mono < crossing.t_start_mono < inner.t_end_mono < crossing.t_end_mono < outer.t_end_mono
    assert outer.energy_j > inner.energy_j + crossing.energy_j * 0.5  # outer holds inner and most of crossing
    assert set(outer.device_energy_j) == {"gpu0", "gpu1"}  # every metered device is reported, gpu0 summed


def test_short_window_reports_no_energy(gpus):
    _, sampler = gpus
    meter = EnergyMeter([sampler])
    assert meter.min_window_s == pytest.approx(2.0)  # the profiler's auto_min_window: 20 NVML updates
    with meter.window("tiny") as w:
        time.sleep(0.3)
    m = w.measurement
    assert m.short_window and m.energy_j is None and m.mean_w is None
    assert set(m.device_energy_j.values()) == {None}
    assert "shorter than min_window_s 2 s" in m.note
    with pytest.raises(UserError, match="3 meter update periods"):
        EnergyMeter([sampler], min_window_s=0.2)


def test_errors_and_cancel(gpus):
    _, sampler = gpus
    meter = EnergyMeter([sampler], min_window_s=0.5)
    with pytest.raises(UserError, match="no open window 'nope'"):
        meter.end_window("nope")
    meter.begin_window("a")
    with pytest.raises(UserError, match="already open"):
        meter.begin_window("a")
    with pytest.raises(UserError, match="non-empty"):
        meter.begin_window("")
    meter.cancel_window("a")
    with pytest.raises(UserError, match="no open window 'a'"):
        meter.end_window("a")
    with pytest.raises(ZeroDivisionError):
        with meter.window("fails") as w:
            with pytest.raises(UserError, match="still open"):
                w.energy_j
            1 / 0
    assert meter.open_windows == () and w.measurement is None and not sampler.running
    with pytest.raises(UserError, match="not metered here"):
        EnergyMeter([sampler], devices=["package-0"])
    meter.close()
    assert not sampler._closed  # given samplers stay open for their owner
    with pytest.raises(UserError, match="closed"):
        meter.begin_window("b")


def test_polling_held_between_windows(gpus):
    _, sampler = gpus
    with EnergyMeter([sampler], min_window_s=0.5) as meter:
        assert sampler.running
        with meter.window("a"):
            time.sleep(0.55)
        assert sampler.running  # held by `with meter`: the next window needs no warm-up
        assert meter._frame["t_mono"].min() >= time.monotonic() - 1.5  # only ~1 s of history is kept
    assert not sampler.running


def advance_atomic(path, joules: float) -> None:
    """tests.fakes.powercap.advance, written with a rename so the polling thread never reads a half-written file."""
    v = (int(path.read_text()) + int(joules * 1e6)) % MAX_RANGE_UJ
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{v}\n")
    os.replace(tmp, path)


def test_rapl_window_on_the_fake_powercap_tree(tmp_path):
    files = make_powercap(tmp_path)
    meter = EnergyMeter(nvml=NoDriverNvml(), powercap_root=tmp_path, allow_estimate=False)
    assert [type(s) for s in meter.samplers] == [RaplSampler]
    assert meter.devices == ("package-0", "dram-0", "package-1", "dram-1") and meter.energy_source == "rapl"
    assert meter.min_window_s == pytest.approx(0.5)
    meter.begin_window("cpu")
    added = 0.0
    for _ in range(80):  # 2.5 J to package-0 every ~10 ms (~250 W): its counter wraps 143 J in
        advance_atomic(files["package-0"], 2.5)
        advance_atomic(files["dram-0"], 0.25)
        added += 2.5
        time.sleep(0.01)
    m = meter.end_window("cpu")
    meter.close()
    assert int(files["package-0"].read_text()) < 262_000_000_000  # the raw counter did wrap
    # The fake counter moves in 10 ms steps and the window starts between two of them: the start
    # edge is interpolated towards the first new value read after it (at most two steps away), the
    # end edge is exact (nothing moves after the last step).
    assert added - 2 * 2.5 <= m.device_energy_j["package-0"] <= added + 1e-6
    assert 80 * 0.25 - 2 * 0.25 <= m.device_energy_j["dram-0"] <= 80 * 0.25 + 1e-6
    assert m.device_energy_j["package-1"] == 0.0 and m.device_energy_j["dram-1"] == 0.0
    assert m.energy_j == pytest.approx(sum(m.device_energy_j.values()))
    assert set(m.device_source.values()) == {"rapl"} and not m.is_estimate


def test_estimate_window_is_labelled():
    s = EstimateSampler("n", tdp_w=100, idle_w=30)
    meter = EnergyMeter([s])
    assert meter.devices == ("cpu",) and meter.min_window_s == pytest.approx(0.5)
    with meter.window("work") as w:
        t_end = time.monotonic() + 0.6
        while time.monotonic() < t_end:
            sum(i * i for i in range(1000))
    m = w.measurement
    assert m.energy_source == "estimate" and m.is_estimate and m.device_source == {"cpu": "estimate"}
    assert 30 * m.time_s <= m.energy_j <= 100 * m.time_s
    assert m.n_samples >= 10  # ~30 polls at 50 Hz
    d = m.to_dict()
    assert json.loads(json.dumps(d)) == d and d["device_energy_j"] == {"cpu": m.energy_j} and d["n_calls"] == 1
    s.close()


def test_discovery_falls_back_to_the_estimate(tmp_path):
    meter = EnergyMeter(nvml=NoDriverNvml(), powercap_root=tmp_path / "none")
    assert [type(s) for s in meter.samplers] == [EstimateSampler] and meter.energy_source == "estimate"
    meter.close()
    with pytest.raises(UserError, match="no power meter"):
        EnergyMeter(nvml=NoDriverNvml(), powercap_root=tmp_path / "none", allow_estimate=False)


def test_repeat_fills_the_minimum_window_and_divides():
    s = EstimateSampler("n", tdp_w=100, idle_w=30)
    meter = EnergyMeter([s])
    m, out = meter.repeat("step", lambda: time.sleep(0.02) or "ok")
    assert m.name == "step" and out == ["ok"] * m.n_calls and m.n_calls >= 10
    assert not m.short_window and m.time_s >= meter.min_window_s
    assert m.energy_per_call_j == pytest.approx(m.energy_j / m.n_calls) and 30 * m.time_s <= m.energy_j
    m, out = meter.repeat("capped", lambda: time.sleep(0.02), max_calls=3)
    assert m.n_calls == 3 and m.short_window and m.energy_per_call_j is None  # capped short of the window
    with pytest.raises(UserError, match="max_calls"):
        meter.repeat("none", lambda: None, max_calls=0)
    s.close()


def test_meter_leaves_what_it_was_given_and_closes_what_it_found(gpus, tmp_path):
    _, sampler = gpus
    sampler.start()  # the caller's own polling
    meter = EnergyMeter([sampler], min_window_s=0.5)
    with meter.window("w"):
        time.sleep(0.1)
    meter.close()
    assert sampler.running  # not the meter's to stop
    sampler.stop()
    nv = FakeNvml()
    with pytest.raises(UserError, match="gpu7"):
        EnergyMeter(nvml=nv, powercap_root=tmp_path / "none", devices=["gpu7"])
    assert nv.shutdowns == 1  # what discovery opened is closed again when the meter refuses


def test_a_frozen_counter_is_flagged_and_its_energy_kept(gpus):
    fake, sampler = gpus
    fake.gpus[0].counter_frozen_at = fake.now + 0.3  # the counter stops; power still reads ~71 W
    meter = EnergyMeter([sampler], devices=["gpu0"], min_window_s=0.5)
    with meter.window("frozen") as w:
        time.sleep(1.4)
    m = w.measurement
    assert m.quality == "suspect:counter-frozen" and "gpu0: energy counter unchanged" in m.quality_note
    assert m.energy_j is not None and m.energy_j < 0.5 * fake.gpus[0].idle_w * m.time_s  # as measured, not mended
    with meter.window("still-frozen") as w:  # too short to call frozen: 0 J is flagged all the same
        time.sleep(0.6)
    assert w.quality == "suspect:energy-nonpositive" and w.energy_j == 0.0
    other = EnergyMeter([sampler], devices=["gpu1"], min_window_s=0.5)
    with other.window("healthy") as h:  # the A100's counter is fine
        time.sleep(0.6)
    assert h.quality == "ok" and h.quality_note == "" and h.energy_j > 0


def test_a_gpu_lost_mid_window_gives_no_energy(gpus):
    fake, sampler = gpus
    meter = EnergyMeter([sampler], min_window_s=0.5)
    meter.begin_window("lost")
    fake.gpus[1].lost_at = fake.now + 0.2  # falls off the bus inside the window
    time.sleep(0.7)
    m = meter.end_window("lost")
    assert m.energy_j is None and m.note.startswith("meter failed: gpu1 (NVML): NVMLError_GpuIsLost: GPU is lost")
    with pytest.raises(UserError, match="meter failed: gpu1"):
        meter.begin_window("next")
    assert meter.open_windows == ()
