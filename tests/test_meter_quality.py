"""Meters that cannot lie silently (issue 16): readings that cannot be trusted are flagged per trial.

End to end through the profiler, on meters replaying what real ones do when they fail: the fake NVML
(real-time clock, counters and power updating every 100 ms, an H100 idling at ~71.5 W and drawing
~310 W busy, 700 W power limit) and a fake powercap tree whose counters a thread advances in real
time. The model is a real tiny transformer on the CPU."""

import threading
import time

import polars as pl
import pytest

import llm_energy.measure.inference.loading as loading
import llm_energy.measure.inference.sizing as sizing
from llm_energy.errors import UserError
from llm_energy.measure.design import SweepDesign
from llm_energy.measure.events import ProgressTick
from llm_energy.measure.profiler import Profiler
from llm_energy.measure.record import record_events
from llm_energy.measure.samplers.estimate import EstimateSampler
from llm_energy.measure.samplers.nvml import NvmlSampler
from llm_energy.measure.samplers.rapl import RaplSampler
from llm_energy.measure.spec import ProfileSpec
from llm_energy.trials.store import TrialStore
from tests.fakes.fake_pynvml import RealtimeNvml
from tests.fakes.powercap import make_powercap, write_atomic


@pytest.fixture
def gpus_on_cpu(monkeypatch):
    """The model loads on the CPU while the profiler meters the fake GPUs (as tests/test_multi_gpu.py)."""
    real_load = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda name, *a, **k: real_load(name, "cpu", "float32"))
    monkeypatch.setattr(sizing, "check_sweep", lambda *a, **k: None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")


def gpu_sweep(tmp_path, fake, *, cells=([8], [4]), window=1.3, events=None):
    design = SweepDesign.grid(*cells, repeats=1, warmups=0)
    spec = ProfileSpec(model="tiny-llama", design=design, device="cuda", gpu_indices=(0,), idle_s=0.5,
                       min_window_s=window, node_type="h100", threads=1)
    store = TrialStore(tmp_path)
    sampler = NvmlSampler("n", gpu_indices=[0], period_s=0.02, nvml=fake)
    record_events(Profiler(spec, node="n", samplers=[sampler]).events(), store,
                  on_event=events.append if events is not None else None)
    return store.trials()


def test_power_stuck_at_zero_without_a_counter_is_flagged_not_stored_as_a_clean_zero(tmp_path, gpus_on_cpu):
    fake = RealtimeNvml()
    fake.gpus[0].counter = False  # pre-Volta: power only
    fake.gpus[0].power_stuck = 0.0
    (r,) = gpu_sweep(tmp_path, fake).iter_rows(named=True)
    assert r["energy_source"] == "nvml-power" and r["energy_j"] == 0.0  # visible as measured ...
    assert r["quality"].startswith("suspect:") and "power-zero" in r["quality"]  # ... and flagged
    assert "gpu0: power read 0 W" in r["quality_note"]


def test_frozen_nvml_counter_while_power_says_busy_is_flagged(tmp_path, gpus_on_cpu):
    fake = RealtimeNvml()
    g = fake.gpus[0]
    g.busy = [(0.0, 1e9)]  # ~310 W throughout
    g.counter_frozen_at = 0.0  # ... but the energy counter never moves
    (r,) = gpu_sweep(tmp_path, fake).iter_rows(named=True)
    assert r["energy_source"] == "nvml-counter" and r["energy_j"] == pytest.approx(0.0, abs=1e-9)
    assert "counter-frozen" in r["quality"]
    assert "while power read 3" in r["quality_note"]  # ~310 W


def test_power_above_the_nvml_limit_is_flagged(tmp_path, gpus_on_cpu):
    fake = RealtimeNvml()
    fake.gpus[0].counter = False
    fake.gpus[0].power_stuck = 950.0  # the H100's limit is 700 W: a broken sensor, not a GPU
    (r,) = gpu_sweep(tmp_path, fake, window=0.6).iter_rows(named=True)
    assert r["mean_w"] == pytest.approx(950.0, rel=0.02)
    assert "above-limit" in r["quality"] and "700 W limit" in r["quality_note"]


def test_healthy_meters_are_ok(tmp_path, gpus_on_cpu):
    df = gpu_sweep(tmp_path, RealtimeNvml(), window=0.6)
    assert df["quality"].to_list() == ["ok"] and df["quality_note"].to_list() == [""]


def test_nvml_error_mid_sweep_is_one_line_and_the_sweep_resumes(tmp_path, gpus_on_cpu):
    fake = RealtimeNvml()
    fake.gpus[0].lost_at = 1e9
    design_cells = ([8, 16, 24], [4])
    events = []

    def lose_gpu_after_first_trial(ev):
        events.append(ev)
        if type(ev).__name__ == "TrialDone" and ev.done == 1:
            fake.gpus[0].lost_at = fake.now

    design = SweepDesign.grid(*design_cells, repeats=1, warmups=0)
    spec = ProfileSpec(model="tiny-llama", design=design, device="cuda", gpu_indices=(0,), idle_s=0.3,
                       min_window_s=0.4, node_type="h100", threads=1)
    store = TrialStore(tmp_path)
    with pytest.raises(UserError) as e:
        record_events(Profiler(spec, node="n", samplers=[NvmlSampler("n", gpu_indices=[0], nvml=fake)]).events(),
                      store, on_event=lose_gpu_after_first_trial)
    msg = str(e.value)
    assert "gpu0 (NVML)" in msg and "GPU is lost" in msg and "resume" in msg and "\n" not in msg
    kept = TrialStore(tmp_path).trials()
    assert kept.height == 1  # the trial committed before the GPU was lost
    # the node is back: the same sweep resumes and runs only what is missing
    again = TrialStore(tmp_path)
    prof = Profiler(spec, node="n", samplers=[NvmlSampler("n", gpu_indices=[0], nvml=RealtimeNvml())])
    record_events(prof.events(skip=again.done_trial_ids()), again)
    df = TrialStore(tmp_path).trials()
    assert df.height == 3 and df["trial_id"].n_unique() == 3
    assert kept["trial_id"][0] in df["trial_id"].to_list()


def test_profile_cli_turns_an_nvml_error_into_one_line(tmp_path, gpus_on_cpu, monkeypatch, capsys):
    from llm_energy.cli import main

    fake = RealtimeNvml()
    fake.gpus[0].lost_at = 1.0  # lost during the idle baseline
    monkeypatch.setattr("llm_energy.measure.samplers.discover.discover_samplers",
                        lambda *a, **k: [NvmlSampler("n", gpu_indices=[0], nvml=fake)])
    rc = main(["profile", "--model", "tiny-llama", "--tin", "8", "--tout", "4", "--repeats", "1", "--warmups", "0",
               "--device", "cuda", "--gpus", "0", "--idle-s", "1.5", "--out", str(tmp_path / "s"), "--no-live"])
    err = capsys.readouterr().err.strip()  # the plain progress log, then the error
    errors = [line for line in err.splitlines() if "error" in line]
    assert rc == 2 and "Traceback" not in err and len(errors) == 1 and errors[0] == err.splitlines()[-1]
    assert errors[0].startswith("llm-energy profile: error: meter failed mid-sweep: gpu0 (NVML): "
                                "NVMLError_GpuIsLost: GPU is lost")


class PowercapClock:
    """Advances a fake powercap tree in real time: each zone draws its watts; ``step_back`` makes a
    counter fall by some joules once, as a glitching RAPL counter does."""

    def __init__(self, files: dict, watts: dict) -> None:
        self.files, self.watts = files, watts
        self.raw = {d: int(p.read_text()) for d, p in files.items()}
        self.pending: dict[str, float] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.001):
            t = time.monotonic()
            for d, w in self.watts.items():
                self.raw[d] += int(w * (t - last) * 1e6) - int(self.pending.pop(d, 0.0) * 1e6)
                write_atomic(self.files[d], self.raw[d])
            last = t

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def cpu_sweep(tmp_path, samplers, *, window=0.6, on_event=None):
    design = SweepDesign.grid([8], [4], repeats=2, warmups=0)
    spec = ProfileSpec(model="tiny-llama", design=design, device="cpu", idle_s=0.3, min_window_s=window,
                       node_type="cpu", threads=1)
    store = TrialStore(tmp_path / "store")
    record_events(Profiler(spec, node="n", samplers=samplers).events(), store, on_event=on_event)
    return store.trials()


def test_a_rapl_counter_stepping_back_is_flagged_not_taken_for_a_wrap(tmp_path, capsys):
    files = make_powercap(tmp_path / "pc", start_uj=100_000_000_000)  # mid-range: no real wrap possible
    with PowercapClock(files, {"package-0": 40.0, "dram-0": 4.0, "package-1": 35.0, "dram-1": 4.0}) as clock:
        rapl = RaplSampler("n", root=tmp_path / "pc")

        def glitch(ev):  # once the first trial is stored, package-0's counter falls by 3 J
            if type(ev).__name__ == "TrialDone" and ev.done == 1:
                threading.Timer(0.4, lambda: clock.pending.__setitem__("package-0", 3.0)).start()

        df = cpu_sweep(tmp_path, [rapl], window=1.5, on_event=glitch)
    assert df.height == 2 and df["energy_source"].to_list() == ["rapl", "rapl"]
    first, second = df.sort("t_start").iter_rows(named=True)
    assert first["quality"] == "ok"
    # the step back lands in the second trial's window (or just before it): never ~262 kJ in one trial
    assert max(df["energy_j"]) < 200 and max(df["mean_w"]) < 200  # 83 W drawn in all; was ~262 kJ
    assert "counter-step-back" in second["quality"]
    fell = float(second["quality_note"].split("fell by ")[1].split(" J")[0])
    assert 1.0 < fell <= 3.0  # 3 J back, less what 40 W put in between two reads
    # `check` finds the same from the stored raw samples
    import json

    from llm_energy.cli import main

    capsys.readouterr()
    assert main(["check", str(tmp_path / "store"), "--json"]) == 0
    q = json.loads(capsys.readouterr().out)["quality"]
    assert q["suspect"] == 1 and q["recheck"]["reasons"] == {"counter-step-back": 1}


def test_rapl_power_above_the_zones_max_power_is_flagged(tmp_path):
    files = make_powercap(tmp_path / "pc", start_uj=100_000_000_000, max_power_uw=60_000_000)
    with PowercapClock(files, {"package-0": 150.0, "dram-0": 4.0, "package-1": 30.0, "dram-1": 4.0}):
        df = cpu_sweep(tmp_path, [RaplSampler("n", root=tmp_path / "pc")])
    for r in df.iter_rows(named=True):
        assert "above-limit" in r["quality"] and "package-0: mean 1" in r["quality_note"] and "60 W limit" in r["quality_note"]
        assert "package-1" not in r["quality_note"]


def test_the_estimate_pinned_at_tdp_on_a_busy_machine_warns_and_flags(tmp_path):
    est = EstimateSampler("n", tdp_w=120.0, idle_w=36.0)
    est._util = lambda: 1.0  # other work keeps every core busy: the estimate reads TDP at idle and under load
    ticks = []
    df = cpu_sweep(tmp_path, [est], window=0.3, on_event=lambda ev: ticks.append(ev) if isinstance(ev, ProgressTick) else None)
    assert (df["idle_w"] == 120.0).all() and (df["energy_net_j"].abs() < 0.1 * df["energy_j"]).all()  # net ~ 0
    assert all(q == "suspect:estimate-pinned" for q in df["quality"])
    assert "100% of its 120 W TDP" in df["quality_note"][0]
    assert any("warning" in t.message and "estimate" in t.message for t in ticks)
    info = TrialStore(tmp_path / "store").sweeps()[df["sweep_id"][0]]
    assert any("estimate read 120 W at idle" in n for n in info.notes)


def test_show_check_and_fit_respect_the_flag(tmp_path, capsys):
    from llm_energy.cli import main
    from tests.test_store import make_record

    recs = []
    for i in range(12):
        r = make_record(i)
        r.tin, r.tout = 8 * (1 + i % 4), 8 * (1 + i // 4)
        r.cell_id, r.tin_actual, r.tout_actual = f"i{r.tin}-o{r.tout}-b1", r.tin, r.tout
        r.trial_id = f"s1/{r.cell_id}/r{i}"
        r.warmup, r.energy_j, r.runtime_s = False, 1.0 + r.tin * 0.01 + r.tout * 0.1, 0.01 * r.tout + 0.001 * r.tin
        if i in (3, 7):
            r.quality, r.quality_note, r.energy_j = "suspect:counter-step-back", "package-0: energy counter fell by 3 J", 262_143.0
        recs.append(r)
    TrialStore(tmp_path / "s").append_trials(recs)
    capsys.readouterr()
    assert main(["show", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "2 of 12 trials suspect (counter-step-back x2)" in out
    assert main(["show", str(tmp_path / "s"), "--json"]) == 0
    rows = {r["trial_id"]: r for r in __import__("json").loads(capsys.readouterr().out)}
    assert rows["s1/i32-o8-b1/r3"]["quality"] == "suspect:counter-step-back" and rows["s1/i32-o8-b1/r3"]["energy_j"] == 262_143.0
    main(["check", str(tmp_path / "s")])  # no counter samples in this store: it says so after the quality line
    cap = capsys.readouterr()
    assert "counter-step-back x2" in cap.out
    assert main(["fit", str(tmp_path / "s"), "--out", str(tmp_path / "f.json"), "--json"]) == 0
    cap = capsys.readouterr()
    assert "left out 2 suspect trial(s) of 12 (counter-step-back x2)" in cap.err
    assert '"n_trials": 10' in cap.out
    assert main(["fit", str(tmp_path / "s"), "--out", str(tmp_path / "g.json"), "--json", "--include-suspect"]) == 0
    assert '"n_trials": 12' in capsys.readouterr().out


def test_old_stores_and_imports_read_as_ok(tmp_path):
    from tests.test_store import make_record

    st = TrialStore(tmp_path)
    old = pl.DataFrame([make_record(0).to_row()]).drop("quality", "quality_note")  # a chunk from before the columns
    st.append_trials(old)
    assert TrialStore(tmp_path).trials()["quality"].to_list() == ["ok"]
    for d in ("data/h100/issue3",):
        from pathlib import Path

        root = Path(__file__).resolve().parents[1] / d
        assert set(TrialStore(root, create=False).trials()["quality"]) == {"ok"}


def test_a_frozen_rapl_counter_is_flagged(tmp_path):
    files = make_powercap(tmp_path / "pc", start_uj=100_000_000_000)
    # package-0's energy_uj stops moving (a stuck MSR read) while the other zones count on
    with PowercapClock(files, {"package-0": 0.0, "dram-0": 4.0, "package-1": 35.0, "dram-1": 4.0}):
        df = cpu_sweep(tmp_path, [RaplSampler("n", root=tmp_path / "pc")], window=0.7)
    for r in df.iter_rows(named=True):
        assert "counter-frozen" in r["quality"] and "package-0: energy counter unchanged for 0." in r["quality_note"]
        assert "package-1" not in r["quality_note"]
