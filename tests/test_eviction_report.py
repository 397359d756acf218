"""A run says how many caches the static backend gave back (H200 session 8: llama-2-7b's static batch sweep
1..256 ran past batch 128, where it used to run out of memory, and nothing said whether caches were given back
or how many). Each trial records ``prepare_evictions`` (null for backends without such caches); ``profile``
and ``show`` print their sum after the prepare line. The device is test_static_eviction's two-cache one; the decode
step runs uncompiled (``torch.compile`` replaced by the identity: what is counted does not depend on it) so
that the profile takes seconds on a CPU."""

import io
from contextlib import redirect_stdout

import polars as pl
import pytest
import torch

from llm_energy.cli import main
from llm_energy.cli.profile import prepare_summary, print_prepare
from llm_energy.measure.inference.backends import StaticBackend
from llm_energy.report.tables import stdout_console
from llm_energy.trials.store import open_store
from tests.test_static_eviction import _fresh_dynamo, kv_and_room  # noqa: F401 - the fixture applies here too

LINE = "prepare (compile + capture) outside the windows"
EVICTED = "static cache evictions"
ARGV = ["profile", "--model", "tiny-llama", "--tin", "8", "--tout", "4", "--repeats", "1", "--warmups", "0", "--device",
        "cpu", "--threads", "1", "--idle-s", "0.1", "--min-window-s", "0.02", "--no-live"]


def profile(out, backend, batches, capsys):
    assert main(ARGV + ["--backend", backend, "--batch", batches, "--out", str(out)]) == 0
    return capsys.readouterr().out


def two_caches(mp):
    """A device with room for two caches of batch <= 8 (of 256 tokens), and no compile."""
    mp.setattr(torch, "compile", lambda fn, **kw: fn)
    mp.setattr(StaticBackend, "device_free_bytes", lambda self: (2 - len(self._caches)) * kv_and_room(self, 8)[1])


@pytest.fixture(scope="module")
def evicting(tmp_path_factory):
    """A static profile of batches 1, 2, 4 and 8 on the two-cache device: its store and what it printed."""
    out = tmp_path_factory.mktemp("evict") / "s"
    with pytest.MonkeyPatch.context() as mp:
        two_caches(mp)
        mp.setattr(StaticBackend, "_setting_in_process", None)
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert main(ARGV + ["--backend", "static", "--batch", "1,2,4,8", "--out", str(out)]) == 0
    return out, buf.getvalue()


def test_each_trial_records_the_caches_given_back_and_the_run_says_how_many(evicting, capsys):
    out, printed = evicting
    t = open_store(out).trials().sort("t_start")
    assert sorted(t["batch"]) == [1, 2, 4, 8]  # in the design's (seeded) order: four keys, room for two
    assert t["prepare_evictions"].to_list() == [0, 0, 1, 1]  # the third and fourth each give one back
    want = f"{EVICTED}: 2 cache(s) given back to fit another (the first for batch {t['batch'][2]}, bucket 256)\n"
    assert f"{LINE}: 4 bucket x batch compile(s)" in printed and want in printed
    assert main(["show", str(out)]) == 0
    assert want in capsys.readouterr().out


def test_a_static_run_that_gave_none_back_says_so_and_other_backends_print_nothing_new(tmp_path, capsys, monkeypatch):
    two_caches(monkeypatch)
    printed = profile(tmp_path / "s", "static", "1,2", capsys)
    assert open_store(tmp_path / "s").trials()["prepare_evictions"].to_list() == [0, 0]
    assert f"{LINE}: 2 bucket x batch compile(s)" in printed and f"{EVICTED}: no cache given back to fit another\n" in printed
    printed = profile(tmp_path / "c", "cache", "1,2", capsys)
    t = open_store(tmp_path / "c").trials()
    assert t.height == 2 and t["prepare_evictions"].null_count() == 2
    assert EVICTED not in printed and "given back" not in printed


def test_a_sweep_resumed_over_older_trials_counts_the_ones_that_record_it(evicting, capsys):
    t = open_store(evicting[0]).trials().sort("t_start")
    older = t.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("prepare_evictions"))
                           .alias("prepare_evictions"))  # the first trial stored by code from before the column
    r, = prepare_summary(older)
    b = t["batch"][2]
    assert (r["evictions"], r["evictions_recorded"], r["first_eviction"]) == (2, 3, (b, 256))
    none, = prepare_summary(t.with_columns(prepare_evictions=pl.lit(None, dtype=pl.Int32)))
    assert none["evictions"] is None and none["first_eviction"] is None
    print_prepare(stdout_console(), older)
    assert f"{EVICTED}: 2 cache(s) given back to fit another (the first for batch {b}, bucket 256), in the 3 of 4 " \
           "trials that record it\n" in capsys.readouterr().out
