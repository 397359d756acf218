"""Prepare's energy, measured and counted (H200 batch sweeps: ``check``'s session closure read 0.960 and 0.959
because ``backend.prepare``, compiling, capturing and warming up at batch 256 at ~600 W, was taken for idle).

End to end through the profiler on the fake NVML (real-time clock, counters and power updating every 100 ms;
an H100 idling at ~71.5 W, an A100 at ~56 W) with a real tiny model on the CPU: a backend whose ``prepare``
keeps GPU 0 at 600 W for a second. Each trial records ``prepare_j`` (and per device ``prepare_device_j``),
and the closure adds it: (trials + prepare + idle x rest) / counter, within 2% where the old formula
(trials + idle x outside) / counter falls far below. A store from before the columns checks as it always did."""

import json
import math
import shutil
import time

import polars as pl
import pytest

import llm_energy.measure.inference.loading as loading
import llm_energy.measure.inference.sizing as sizing
import llm_energy.measure.profiler as profiler
from llm_energy.cli import main
from llm_energy.measure.closure import SessionClosure
from llm_energy.measure.design import SweepDesign
from llm_energy.measure.inference import backends
from llm_energy.measure.inference.backends import CacheBackend
from llm_energy.measure.inference.compiles import CompileCount
from llm_energy.measure.record import record_events
from llm_energy.measure.samplers.nvml import NvmlSampler
from llm_energy.measure.spec import ProfileSpec
from llm_energy.trials.store import TrialStore, open_store
from tests.fakes.fake_pynvml import UPDATE_S, RealtimeNvml

BUSY_W, BUSY_S = 600.0, 1.0


def busy(fake: RealtimeNvml, seconds: float) -> None:
    """GPU 0 at BUSY_W for ``seconds`` from the next-but-one meter update on (on update boundaries, so the
    counter's linear interpolation is exact there), busy-waiting until a little past its end."""
    g = fake.gpus[0]
    a = (math.floor(fake.now / UPDATE_S) + 2) * UPDATE_S
    g.busy.append((a, a + seconds))
    while fake.now < a + seconds + 1.5 * UPDATE_S:
        time.sleep(0.005)


class HotPrepare(CacheBackend):
    """The cache backend with a prepare that draws BUSY_W on GPU 0 (a batch-256 compile + warm-up), and, with
    ``compile_first``, a first measured generation that 'compiles' (the profiler's count says so) at BUSY_W."""

    fake: RealtimeNvml
    compile_first = False
    compiled = 0

    def prepare(self, batch, tin, tout):
        super().prepare(batch, tin, tout)  # its warm-up generations too
        self.armed = True
        if not self.compile_first:
            busy(self.fake, BUSY_S)

    def generate(self, input_ids, tout):
        if self.compile_first and getattr(self, "armed", False) and not type(self).compiled:
            type(self).compiled += 1
            busy(self.fake, 0.5)
        return super().generate(input_ids, tout)


def run(path, gpus: str, tins, compile_first=False):
    fake = RealtimeNvml()
    fake.gpus[0].load_w = BUSY_W
    with pytest.MonkeyPatch.context() as mp:
        real_load = loading.load_model
        mp.setattr(loading, "load_model", lambda name, *a, **k: real_load(name, "cpu", "float32"))
        mp.setattr(sizing, "check_sweep", lambda *a, **k: None)
        mp.setenv("CUDA_VISIBLE_DEVICES", gpus)
        mp.setattr(HotPrepare, "fake", fake, raising=False)
        mp.setattr(HotPrepare, "compile_first", compile_first)
        mp.setattr(HotPrepare, "compiled", 0)
        mp.setattr(backends, "make_backend", lambda name, loaded: HotPrepare(loaded))
        mp.setattr(profiler, "compile_count", lambda: CompileCount(frames=HotPrepare.compiled))
        n = len(gpus.split(","))
        design = SweepDesign.grid(tins, [4], repeats=1, warmups=0)
        spec = ProfileSpec(model="tiny-llama", design=design, device="cuda", gpu_indices=tuple(range(n)), idle_s=0.3,
                           min_window_s=0.4, node_type="h100", threads=1)
        sampler = NvmlSampler("n", gpu_indices=list(range(n)), period_s=0.02, nvml=fake)
        record_events(profiler.Profiler(spec, node="n", samplers=[sampler]).events(), TrialStore(path))
    return fake


@pytest.fixture(scope="module")
def hot(tmp_path_factory):
    """Two trials on two GPUs, each prepare 1 s at 600 W on GPU 0 (GPU 1 idle throughout)."""
    path = tmp_path_factory.mktemp("hot") / "s"
    return path, run(path, "0,1", [8, 16])


def check_json(path, capsys) -> dict:
    capsys.readouterr()
    assert main(["check", str(path), "--json"]) == 0
    return {s["device"]: s for s in json.loads(capsys.readouterr().out)["sessions"]}


def test_each_trial_records_prepares_energy_per_device(hot):
    path, fake = hot
    df = open_store(path).trials()
    assert df.height == 2 and df["prepare_j"].is_not_null().all()
    for r in df.iter_rows(named=True):
        e0, e1 = r["prepare_device_j"]
        assert r["devices"] == ["gpu0", "gpu1"] and r["prepare_j"] == pytest.approx(e0 + e1, rel=1e-9)
        idle0, idle1 = fake.gpus[0].idle_w, fake.gpus[1].idle_w
        assert e0 > 3 * idle0 * r["prepare_s"]  # not idle: 600 W for 1 s of it
        assert e0 == pytest.approx(BUSY_W * BUSY_S + idle0 * (r["prepare_s"] - BUSY_S), rel=0.03)
        assert e1 == pytest.approx(idle1 * r["prepare_s"], rel=0.05)
        assert r["energy_j"] < 0.5 * e0  # the window itself ran at idle: prepare stayed out of it


def test_the_closure_counts_prepare_and_closes_within_two_percent(hot, capsys):
    path, _ = hot
    sess = check_json(path, capsys)
    assert set(sess) == {"gpu0", "gpu1"}
    g0 = sess["gpu0"]
    assert g0["idle_closure"] < 0.9  # the old formula: prepare's 600 W taken for idle
    assert g0["closure_counts_prepare"] and abs(g0["closure"] - 1) < 0.02
    assert abs(g0["rest_above_idle_j"]) < 0.02 * g0["counter_j"]
    assert g0["prepare_s"] > 2 * BUSY_S and g0["rest_s"] == pytest.approx(g0["seconds"] - g0["window_s"] - g0["prepare_s"])
    assert abs(sess["gpu1"]["closure"] - 1) < 0.02  # per device: GPU 1's prepare at its own idle
    old = {"session", "device", "seconds", "counter_j", "power_j", "trials_j", "window_s", "idle_w",
           "outside_windows_j", "idle_closure", "power_closure"}
    assert old <= set(g0)  # the keys check --json always had
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "prepare J" in out and "rest J" in out
    assert f"{g0['closure']:.4f}" in out and "prepare J not recorded" not in out


def test_a_discarded_window_that_compiled_is_prepares_energy(tmp_path, capsys):
    """The first window 'compiles' (0.5 s at 600 W) and is measured again: its seconds are prepare's (as
    before) and so is its energy, which the closure then counts."""
    run(tmp_path / "s", "0", [8], compile_first=True)
    (r,) = open_store(tmp_path / "s").trials().iter_rows(named=True)
    assert r["prepare_compiled"] and r["prepare_s"] >= 0.5 and "compiled" not in r["quality"]
    assert r["prepare_j"] >= 0.95 * BUSY_W * 0.5 and r["energy_j"] < 0.3 * r["prepare_j"]
    g0 = check_json(tmp_path / "s", capsys)["gpu0"]
    assert g0["idle_closure"] < 0.95 and abs(g0["closure"] - 1) < 0.02


def test_a_store_from_before_prepare_j_checks_with_the_old_formula(hot, tmp_path, capsys):
    path, _ = hot
    old = tmp_path / "old"
    shutil.copytree(path, old)
    for f in (old / "trials").glob("*.parquet"):  # the trials as the store wrote them before the columns
        pl.read_parquet(f).drop("prepare_j", "prepare_device_j").write_parquet(f)
    df = open_store(old).trials()
    assert df["prepare_j"].null_count() == df.height and df["prepare_s"].is_not_null().all()
    g0 = check_json(old, capsys)["gpu0"]
    assert not g0["closure_counts_prepare"] and g0["prepare_j"] is None
    assert g0["closure"] == g0["idle_closure"] < 0.9  # the old figure, as it always read
    assert g0["rest_s"] == pytest.approx(g0["seconds"] - g0["window_s"])
    assert main(["check", str(old)]) == 0
    out = capsys.readouterr().out
    assert f"{g0['idle_closure']:.4f}*" in out and "prepare J not recorded" in out
    capsys.readouterr()
    assert main(["show", str(old), "--json"]) == 0  # keys as before the columns existed
    assert not {"prepare_j", "prepare_device_j"} & set(json.loads(capsys.readouterr().out)[0])


def test_the_closure_formulas():
    new = SessionClosure("s", "gpu0", 100.0, 20_000.0, 20_000.0, 8_000.0, 20.0, 100.0, 12_000.0,
                         prepare_j=6_000.0, prepare_s=10.0)
    assert new.idle_closure == pytest.approx((8_000 + 100 * 80) / 20_000)  # unchanged: 0.8
    assert new.rest_s == 70.0 and new.rest_above_idle_j == pytest.approx(20_000 - 8_000 - 6_000 - 7_000)
    assert new.closure == pytest.approx((8_000 + 6_000 + 100 * 70) / 20_000)
    old = SessionClosure("s", "gpu0", 100.0, 20_000.0, 20_000.0, 8_000.0, 20.0, 100.0, 12_000.0, prepare_s=10.0)
    assert not old.counts_prepare and old.closure == pytest.approx(old.idle_closure) and old.rest_s == 80.0


def test_each_session_names_the_card_that_measured_it(hot, tmp_path, capsys):
    """The lent H200s are not one card (sessions 8-13: ~10% apart in power at the same ms/step), so a run records
    each GPU's NVML UUID with its meter, and check's closure names it per session and device; a store from before
    it reads null / "-"."""
    path, fake = hot
    (info,) = open_store(path).sweeps().values()
    meters = info.runs[0]["meters"]
    assert {d: meters[d]["uuid"] for d in ("gpu0", "gpu1")} == {"gpu0": fake.gpus[0].uuid, "gpu1": fake.gpus[1].uuid}
    sess = check_json(path, capsys)
    assert sess["gpu0"]["card"] == fake.gpus[0].uuid != sess["gpu1"]["card"] == fake.gpus[1].uuid
    assert main(["check", str(path)]) == 0
    assert fake.gpus[0].uuid[:12] in capsys.readouterr().out
    old = tmp_path / "old"
    shutil.copytree(path, old)
    m = json.loads((old / "manifest.json").read_text())
    for sw in m["sweeps"].values():
        for r in sw["runs"]:
            for v in r["meters"].values():
                del v["uuid"]
    (old / "manifest.json").write_text(json.dumps(m))
    assert check_json(old, capsys)["gpu0"]["card"] is None
