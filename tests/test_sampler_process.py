"""ProcessSampler: a sampler's polling in a spawned child (``llm-energy profile --sampler-process``), against
the fake NVML (its real-time clock: the child's copy keeps the parent's) and a fake powercap tree."""

import os
import signal
import time

import pytest

from llm_energy.measure.samplers.base import FAIL_POLLS, MeterReadError
from llm_energy.measure.samplers.estimate import EstimateSampler
from llm_energy.measure.samplers.nvml import NvmlSampler
from llm_energy.measure.samplers.process import ProcessSampler, in_processes, recipe
from llm_energy.measure.samplers.rapl import RaplSampler
from tests.fakes.fake_pynvml import RealtimeNvml
from tests.fakes.powercap import advance, make_powercap


def _wait(pred, s=10.0):
    end = time.monotonic() + s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_nvml_polled_in_a_child_streams_power_and_counters():
    nv = RealtimeNvml()
    s = ProcessSampler(NvmlSampler("n", period_s=0.02, nvml=nv))
    assert (s.source, s.has_counter, s.update_period_s) == ("nvml-power", True, 0.1)
    assert [d.device for d in s.devices()] == ["gpu0", "gpu1"]  # this process's sampler answers
    s.poll_counters = True
    t0 = time.monotonic()
    s.start()
    assert s.running
    try:
        time.sleep(0.4)
        got = s.drain()
        t1 = time.monotonic()
        assert s.polls >= 5 and s.poll_cpu_s > 0 and s.poll_errors == 0 and s.failure() is None
        assert {(x.device, x.source) for x in got} == {(d, src) for d in ("gpu0", "gpu1")
                                                        for src in ("nvml-power", "nvml-counter")}
        assert all(t0 <= x.t_mono <= t1 and x.node == "n" for x in got)  # one monotonic clock in both processes
        assert [x.t_mono for x in got] == sorted(x.t_mono for x in got) or len({x.device for x in got}) > 1
        assert all(50 < x.watts < 80 for x in got if x.watts is not None)  # the fake's idle power
        assert s.read_counters()[0].joules > 0  # window edges: read in this process
        time.sleep(0.1)
    finally:
        s.stop()
    assert not s.running and s.drain()  # what was polled before stop comes with it
    assert s.drain() == []
    s.close()
    assert nv.shutdowns == 1  # this process's NVML released


def test_a_lost_gpu_in_the_child_is_a_failed_meter():
    nv = RealtimeNvml()
    s = ProcessSampler(NvmlSampler("n", gpu_indices=[0], period_s=0.02, nvml=nv))
    nv.gpus[0].lost_at = 0.0  # the child's copy: every poll fails from the start
    s.start()
    try:
        assert _wait(lambda: s.failure() is not None)
        err = s.failure()
        assert isinstance(err, MeterReadError) and str(err) == "gpu0 (NVML): NVMLError_GpuIsLost: GPU is lost"
        assert s.poll_errors >= FAIL_POLLS and s.drain() == []
    finally:
        s.close()


def test_rapl_and_estimate_in_children(tmp_path):
    files = make_powercap(tmp_path / "pc", max_power_uw=300_000_000)
    r = ProcessSampler(RaplSampler("n", root=tmp_path / "pc", period_s=0.02))
    e = ProcessSampler(EstimateSampler("n", tdp_w=100.0, idle_w=20.0, period_s=0.02))
    r.poll_counters = True
    for s in (r, e):
        s.start()
    try:
        for _ in range(8):
            time.sleep(0.05)
            for f in files.values():
                advance(f, 5.0)  # 100 W a zone, crossing the packages' wrap point
        got = r.drain()
        assert {x.device for x in got} == {"package-0", "package-1", "dram-0", "dram-1"}
        counters = [x.joules for x in got if x.device == "package-0" and x.joules is not None]
        assert len(counters) >= 3 and counters == sorted(counters)  # unwrapped in the child
        assert any(x.watts is not None and x.watts > 0 for x in got)
        est = e.drain()
        assert est and {x.source for x in est} == {"estimate"} and all(20 <= x.watts <= 100 for x in est)
    finally:
        for s in (r, e):
            s.close()


def test_a_child_that_cannot_build_its_meter_or_dies(tmp_path):
    make_powercap(tmp_path / "pc")
    inner = RaplSampler("n", root=tmp_path / "pc")
    for z in inner.zones:
        (z.path / "energy_uj").unlink()  # gone before the child looks
    s = ProcessSampler(inner)
    with pytest.raises(MeterReadError, match="RaplSampler in a child process.*FileNotFoundError: no RAPL zones"):
        s.start()
    assert not s.running

    s = ProcessSampler(EstimateSampler("n", tdp_w=50.0))
    s.start()
    os.kill(s._proc.pid, signal.SIGINT)  # a Ctrl-C reaches the whole group: the child leaves it to the parent
    time.sleep(0.2)
    assert s.failure() is None and s.drain() and s.running
    s._proc.kill()  # the child this test started
    s._proc.join(5)
    err = s.failure()
    assert isinstance(err, MeterReadError) and "sampler process is gone" in str(err) and "exit code -9" in str(err) and s.drain() == []
    s.close()
    assert not s.running


def test_in_processes_wraps_the_kinds_a_child_can_build():
    from llm_energy.measure.samplers.base import PowerSampler

    class Other(PowerSampler):
        def devices(self):
            return []

        def read_power(self):
            return []

    nv = RealtimeNvml()
    nvml, est, other = NvmlSampler("n", nvml=nv), EstimateSampler("n", tdp_w=80.0), Other("n")
    wrapped = in_processes([nvml, est, other])
    assert [type(x).__name__ for x in wrapped] == ["ProcessSampler", "ProcessSampler", "Other"]
    assert recipe(nvml) == (NvmlSampler, {"gpu_indices": [0, 1], "nvml": nv}) and recipe(other) is None
    import pynvml

    nvml.nvml = pynvml  # the real module is imported again in the child, not pickled
    assert recipe(nvml)[1]["nvml"] is None
    nvml.nvml = nv
    for x in wrapped:
        x.close()


def test_profile_sampler_process_measures_through_children(tmp_path, monkeypatch):
    """``llm-energy profile --sampler-process`` on the CPU: the discovered meter (the estimate here) polls in a
    child; the trials are stored with their energy as without the option."""
    from llm_energy.cli.main import main
    from llm_energy.trials.store import load_trials

    started = []
    start = ProcessSampler.start
    monkeypatch.setattr(ProcessSampler, "start", lambda self: (started.append(type(self.inner).__name__), start(self))[1])
    out = tmp_path / "s"
    assert main(["profile", "--model", "tiny-llama", "--tin", "8", "--tout", "4", "--repeats", "2", "--device", "cpu",
                 "--node-type", "cpu", "--idle-s", "0.3", "--out", str(out), "--no-live", "--sampler-process"]) == 0
    assert started and set(started) <= {"EstimateSampler", "RaplSampler"}
    t = load_trials([str(out)])
    assert t.height == 3 and (t["energy_j"] > 0).all()


def test_profile_sampler_process_whose_child_cannot_build_its_meter_is_one_line(tmp_path, monkeypatch, capsys):
    """The child's meter fails to build (ProcessSampler.start raises MeterReadError, before any trial): one line
    naming the meter and why, exit 2, no traceback, no child left running."""
    import multiprocessing

    import llm_energy.measure.samplers.process as process
    from llm_energy.cli.main import main

    monkeypatch.setattr(process, "recipe", lambda s: (RaplSampler, {"root": str(tmp_path / "no-powercap")}))
    assert main(["profile", "--model", "tiny-llama", "--tin", "8", "--tout", "4", "--repeats", "1", "--device", "cpu",
                 "--node-type", "cpu", "--idle-s", "0.3", "--out", str(tmp_path / "s"), "--no-live",
                 "--sampler-process"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("llm-energy profile: error: meter failed "
                                                                            "to start: "), err
    assert "in a child process" in err and "no RAPL zones" in err
    assert not multiprocessing.active_children()


def test_read_timing_in_the_child_is_optional_and_comes_back_with_the_stop():
    """benchmarks/gpu/eager_meters.py's cache+nvml-proc: the child clocks each read it polls (and ``idle_reads``
    back to back before polling); off, the default (profile --sampler-process), nothing is timed or sent."""
    timed = ProcessSampler(NvmlSampler("n", period_s=0.02, nvml=RealtimeNvml()), time_reads=True, idle_reads=5)
    plain = ProcessSampler(EstimateSampler("n", period_s=0.02))
    timed.poll_counters = True
    for s in (timed, plain):
        s.start()
    try:
        time.sleep(0.3)
        timed.drain()
        assert timed.read_times == {}  # only the stop's answer carries them
    finally:
        for s in (timed, plain):
            s.close()
    assert set(timed.read_times) == {"read_power", "read_counters"} and timed.polls >= 3
    assert all(len(v) == timed.polls and all(w > 0 and c >= 0 for w, c in v) for v in timed.read_times.values())
    assert {k: len(v) for k, v in timed.idle_read_times.items()} == {"read_power": 5, "read_counters": 5}
    assert timed.child_imported_torch is False
    assert plain.polls >= 3 and plain.read_times == plain.idle_read_times == {} and plain.child_imported_torch is None
