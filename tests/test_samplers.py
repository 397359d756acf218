"""Samplers against a fake pynvml and a fake powercap tree (neither exists on this machine)."""

import time

import numpy as np
import polars as pl
import pytest

from llm_energy.measure.integrate import window_energy
from llm_energy.measure.samplers.discover import describe_meters, discover_samplers
from llm_energy.measure.samplers.estimate import EstimateSampler
from llm_energy.measure.samplers.nvml import NvmlSampler
from llm_energy.measure.samplers.rapl import RaplSampler
from llm_energy.trials.schema import samples_frame
from tests.fakes.fake_pynvml import FakeNvml, NoDriverNvml
from tests.fakes.powercap import MAX_RANGE_UJ, advance, make_powercap


@pytest.fixture
def fake(monkeypatch):
    nv = FakeNvml()
    monkeypatch.setattr("llm_energy.measure.samplers.nvml.now", lambda: (nv.now, nv.now))
    return nv


def test_nvml_devices_and_power_paths(fake):
    s = NvmlSampler("n", nvml=fake)
    devs = s.devices()
    assert [d.device for d in devs] == ["gpu0", "gpu1"]
    assert devs[0].name == "NVIDIA H100 80GB HBM3" and "POWER_INSTANT" in devs[0].note
    assert "nvmlDeviceGetPowerUsage" in devs[1].note and devs[1].power_limit_w == 400
    assert s.instant == [True, False] and s.has_counter
    p = s.read_power()
    assert [x.source for x in p] == ["nvml-power"] * 2 and 50 < p[0].watts < 80 and p[0].joules is None
    s.close()
    assert fake.shutdowns == 1


def test_nvml_counter_in_joules_and_monotone(fake):
    s = NvmlSampler("n", gpu_indices=[0], nvml=fake)
    vals = []
    for k in range(12):
        fake.now = 0.037 * k
        (c,) = s.read_counters()
        assert c.source == "nvml-counter" and c.watts is None
        vals.append(c.joules)
    assert all(b >= a for a, b in zip(vals, vals[1:]))
    assert 12_345 < vals[0] < 12_346 + 1  # the counter's mJ base, in J
    assert len(set(vals)) == 5  # 0.44 s of fake time: it changed only at 100 ms updates


def test_polled_power_integrates_to_the_counter(fake):
    """Over windows of several update periods, the trapezoid of polled power and the interpolated
    counter agree with each other and with the true energy within a few %."""
    s = NvmlSampler("n", nvml=fake)
    for g in fake.gpus:
        g.busy = [(0.8, 2.6)]
    rows = []
    for k in range(int(3.2 / 0.02)):
        fake.now = 0.02 * k + 0.004
        rows += s.read_power() + s.read_counters()
    frame = samples_frame(rows, "s")
    win = pl.DataFrame({"trial_id": ["a", "b"], "node": ["n", "n"], "session": ["s", "s"],
                        "t_start_mono": [0.9, 0.3], "t_end_mono": [2.5, 0.75]})
    out = window_energy(frame, win)
    for dev, gpu in (("gpu0", fake.gpus[0]), ("gpu1", fake.gpus[1])):
        for tid, (a, b) in (("a", (0.9, 2.5)), ("b", (0.3, 0.75))):
            true = gpu.energy(b) - gpu.energy(a)
            got = out.filter((pl.col("trial_id") == tid) & (pl.col("device") == dev))
            assert set(got["method"]) == {"counter", "trapezoid"}
            for e in got["energy_j"]:
                assert e == pytest.approx(true, rel=0.04), (dev, tid)


def test_gpu_selection(fake, monkeypatch):
    assert NvmlSampler("n", gpu_indices=[1], nvml=fake).indices == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert NvmlSampler("n", nvml=fake).indices == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-6c1b2e9a")
    assert NvmlSampler("n", nvml=fake).indices == [0, 1]
    with pytest.raises(ValueError, match="not present"):
        NvmlSampler("n", gpu_indices=[5], nvml=fake)


def test_polling_thread_rate_and_stop():
    s = EstimateSampler("n", tdp_w=100, idle_w=30, period_s=0.02)
    s.start()
    time.sleep(0.4)
    s.stop()
    got = s.drain()
    assert 8 <= len(got) <= 25  # ~20 at 50 Hz; loose for a busy 2-core machine
    ts = np.array([x.t_mono for x in got])
    assert np.median(np.diff(ts)) == pytest.approx(0.02, abs=0.01)
    time.sleep(0.1)
    assert s.drain() == []  # stopped means stopped


def test_rapl_counters_wraparound_and_power(tmp_path, monkeypatch):
    files = make_powercap(tmp_path)
    clock = {"t": 10.0}
    monkeypatch.setattr("llm_energy.measure.samplers.rapl.now", lambda: (clock["t"], clock["t"]))
    s = RaplSampler("n", root=tmp_path)
    assert [d.device for d in s.devices()] == ["package-0", "dram-0", "package-1", "dram-1"]
    assert [d.kind for d in s.devices()] == ["cpu", "dram", "cpu", "dram"]
    first = {c.device: c.joules for c in s.read_counters()}
    s.read_power()  # primes the power deltas
    # package-0 starts 143 J below the wrap point and draws 95 W for 2 s: its counter wraps
    clock["t"] += 2.0
    advance(files["package-0"], 190.0)
    advance(files["dram-0"], 12.0)
    assert int(files["package-0"].read_text()) < 262_000_000_000  # the raw counter did wrap
    after = {c.device: c.joules for c in s.read_counters()}
    assert after["package-0"] - first["package-0"] == pytest.approx(190.0)
    assert after["dram-0"] - first["dram-0"] == pytest.approx(12.0)
    assert after["package-1"] == first["package-1"]
    clock["t"] += 1.0
    advance(files["package-0"], 80.0)
    w = {p.device: p.watts for p in s.read_power()}
    assert w["package-0"] == pytest.approx((190 + 80) / 3.0)  # both counter moves since the priming read
    assert MAX_RANGE_UJ == s.zones[0].max_range_uj


def test_estimate_is_labelled_and_bounded():
    s = EstimateSampler("n", tdp_w=120, idle_w=36)
    (d,) = s.devices()
    assert d.source == "estimate" and "estimate: no meter" in d.note
    for _ in range(5):
        (p,) = s.read_power()
        assert p.source == "estimate" and 36 <= p.watts <= 120
    with pytest.raises(ValueError):
        EstimateSampler("n", tdp_w=100, idle_w=150)


def test_discovery(tmp_path):
    reports = []
    got = discover_samplers("n", nvml=NoDriverNvml(), powercap_root=tmp_path / "none", reports=reports)
    assert [type(s).__name__ for s in got] == ["EstimateSampler"]
    why = {r.meter: r.why for r in reports}
    assert "NVMLError" in why["nvml"] and "missing" in why["rapl"] and "not a measurement" in why["estimate"]
    make_powercap(tmp_path / "pc")
    got = discover_samplers("n", nvml=FakeNvml(), powercap_root=tmp_path / "pc")
    assert [type(s).__name__ for s in got] == ["NvmlSampler", "RaplSampler"]
    for s in got:
        s.close()
    found = {r.meter for r in describe_meters("n", nvml=FakeNvml(), powercap_root=tmp_path / "pc") if r.found}
    assert found == {"nvml", "rapl"}


def test_devices_cli_json(capsys):
    import json

    from llm_energy.cli import main

    assert main(["devices", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["logical_cores"] >= 1 and {m["meter"] for m in info["meters"]} >= {"nvml", "rapl"}
    # this machine has no NVIDIA driver and no powercap tree: the estimate is what it gets, labelled
    assert any(d["source"] == "estimate" for d in info["devices"]) or any(m["found"] for m in info["meters"] if m["meter"] != "estimate")


def test_cpu_utilisation_reads_proc_stat_deltas(tmp_path):
    from llm_energy.measure.samplers.estimate import CpuUtilisation

    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    stat.write_text("cpu  1000 0 500 8000 100 0 0 0 50 0\ncpu0 500 0 250 4000 50 0 0 0 25 0\n")
    u = CpuUtilisation(str(stat))
    assert u() == 0.0  # no tick elapsed yet
    stat.write_text("cpu  1300 0 600 8500 100 0 0 0 90 0\ncpu0 650 0 300 4250 50 0 0 0 45 0\n")
    assert u() == pytest.approx(400 / 900)  # busy +400 (user 300, system 100) of total +900
    assert u() == pytest.approx(400 / 900)  # nothing new: the last value, not 0 or NaN
    stat.write_text("cpu  1300 0 600 9400 100 0 0 0 90 0\n")
    assert u() == 0.0  # only idle advanced
    u.close()
    assert 0.0 <= CpuUtilisation(str(tmp_path / "missing"))() <= 1.0  # no /proc/stat: psutil


def test_rapl_a_counter_falling_a_few_joules_is_not_a_wrap(tmp_path, monkeypatch):
    """A wrap only where max_energy_range_uj makes it plausible: 3 J back 20 ms after the last read
    would be ~262 kJ in 20 ms (13 MW) as a wrap; it stays a visible fall instead."""
    files = make_powercap(tmp_path, start_uj=100_000_000_000, max_power_uw=225_000_000)
    clock = {"t": 10.0}
    monkeypatch.setattr("llm_energy.measure.samplers.rapl.now", lambda: (clock["t"], clock["t"]))
    s = RaplSampler("n", root=tmp_path)
    assert s.devices()[0].power_limit_w == 225.0 and s.devices()[1].power_limit_w is None  # DRAM: no constraint
    before = {c.device: c.joules for c in s.read_counters()}
    clock["t"] += 0.02
    files["package-0"].write_text(f"{100_000_000_000 - 3_000_000}\n")
    after = {c.device: c.joules for c in s.read_counters()}
    assert after["package-0"] - before["package-0"] == pytest.approx(-3.0)  # was +262143 J
    # a real wrap is still a wrap: 100 J over 1 s at up to 225 W
    clock["t"] += 1.0
    files["package-0"].write_text(f"{MAX_RANGE_UJ - 50_000_000}\n")
    j1 = s.read_counters()[0].joules
    clock["t"] += 1.0
    files["package-0"].write_text("50000000\n")
    assert s.read_counters()[0].joules - j1 == pytest.approx(100.0)


def test_nvml_errors_name_the_device_and_a_failing_meter_is_reported(fake):
    from llm_energy.measure.samplers.base import FAIL_POLLS, MeterReadError

    s = NvmlSampler("n", gpu_indices=[0], nvml=fake, period_s=0.005)
    fake.gpus[0].lost_at = 0.0
    with pytest.raises(MeterReadError, match=r"^gpu0 \(NVML\): NVMLError_GpuIsLost: GPU is lost$"):
        s.read_counters()
    s.start()
    deadline = time.monotonic() + 5
    while s.failure() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    s.stop()
    assert s.poll_errors >= FAIL_POLLS and isinstance(s.failure(), MeterReadError) and s.drain() == []


def test_a_transient_nvml_error_is_skipped_not_fatal(fake):
    s = NvmlSampler("n", gpu_indices=[0], nvml=fake, period_s=0.005)
    fake.gpus[0].lost_at = 0.0  # every call fails ...
    s.start()
    time.sleep(0.1)
    assert s.poll_errors >= 3 and s.failure() is None  # ... for ~100 ms: skipped polls, not a failed meter
    fake.gpus[0].lost_at = None
    time.sleep(0.05)
    s.stop()
    assert s.failed_in_a_row == 0 and s.drain()
