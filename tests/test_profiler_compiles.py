"""The profiler's guard against compilation inside a measurement window: a trial during whose window
torch compiled is measured again (the compile is then done); one that compiles again is stored flagged
``suspect:compiled``, never as a plausible number (H200, llama-2-7b static 16 x 256: 31.9 ms/step
instead of 5.1, stored ok)."""

import logging
import time

import polars as pl

from llm_energy.measure.design import SweepDesign
from llm_energy.measure.inference import backends
from llm_energy.measure.inference.backends import CacheBackend
from llm_energy.measure.integrate import window_energy
from llm_energy.measure.profiler import Profiler
from llm_energy.measure.record import record_events
from llm_energy.measure.spec import ProfileSpec
from llm_energy.trials.store import TrialStore
from tests.test_static_recompile import fresh_compile


class LazyCompile(CacheBackend):
    """The cache backend, except that its first ``n`` measured generations (after ``prepare``) each
    compile something (a decode step compiling lazily past the warm-up) and take 0.4 s longer."""

    n = 1
    serial = 0

    def prepare(self, batch, tin, tout):
        super().prepare(batch, tin, tout)
        self.armed = True

    def generate(self, input_ids, tout):
        if getattr(self, "armed", False) and self.n > 0:
            type(self).n -= 1
            LazyCompile.serial += 1
            fresh_compile(LazyCompile.serial)
            time.sleep(0.4)
        return super().generate(input_ids, tout)



def lazy_sweep(tmp_path, monkeypatch, n):
    monkeypatch.setattr(LazyCompile, "n", n)
    monkeypatch.setattr(backends, "make_backend", lambda name, loaded: LazyCompile(loaded))
    design = SweepDesign.grid([8], [4], repeats=1, warmups=0)
    spec = ProfileSpec(model="tiny-llama", design=design, device="cpu", idle_s=0.1, min_window_s=0.05, threads=1)
    store = TrialStore(tmp_path)
    record_events(Profiler(spec, node="n").events(), store)
    df = store.trials()
    # the stored energy is what the stored samples integrate to over the stored window (the rerun's)
    e = window_energy(store.samples(), df.select("trial_id", "node", "session", "t_start_mono", "t_end_mono"))
    stored = dict(zip(df["devices"][0].to_list(), df["device_energy_j"][0].to_list()))
    for r in e.sort(pl.col("method") != "counter").unique("device", keep="first").iter_rows(named=True):
        assert abs(r["energy_j"] / df["n_inner"][0] - stored[r["device"]]) <= 1e-6 * abs(stored[r["device"]]) + 1e-9
    return df


def codes(quality: str) -> list[str]:
    """The quality codes of a trial ("ok": none; a busy shared CPU may add estimate-pinned)."""
    return quality.removeprefix("suspect:").split(",") if quality.startswith("suspect:") else []


def test_a_trial_that_compiled_in_its_window_is_measured_again(tmp_path, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="llm_energy.profile"):
        df = lazy_sweep(tmp_path, monkeypatch, n=1)
    assert df.height == 1
    assert "compiled" not in codes(df["quality"][0])
    assert df["t_end_mono"][0] - df["t_start_mono"][0] < 0.3  # the stored window is the second: no compile, no 0.4 s
    assert any("torch compiled during its window" in r.getMessage() and "measured again" in r.getMessage()
               for r in caplog.records)
    # the discarded window's seconds (the compile and its 0.4 s) are prepare's, recorded apart (prepare_s)
    assert df["prepare_compiled"][0] is True and df["prepare_s"][0] >= 0.4


def test_a_trial_that_compiles_again_when_measured_again_is_stored_flagged(tmp_path, monkeypatch):
    df = lazy_sweep(tmp_path, monkeypatch, n=10)
    assert df.height == 1
    assert "compiled" in codes(df["quality"][0])
    note = df["quality_note"][0]
    assert "torch compiled during the window" in note and "dynamo compile" in note and "measured again" in note


def test_a_trial_without_compiles_is_measured_once(tmp_path, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="llm_energy.profile"):
        df = lazy_sweep(tmp_path, monkeypatch, n=0)
    assert "compiled" not in codes(df["quality"][0])
    assert not any("torch compiled" in r.getMessage() for r in caplog.records)
