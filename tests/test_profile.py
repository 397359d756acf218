"""End-to-end profiling on this CPU node with a real tiny transformers model."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from llm_energy.cli import main
from llm_energy.measure.design import SweepDesign
from llm_energy.measure.profiler import Profiler
from llm_energy.measure.spec import ProfileSpec
from llm_energy.measure.record import record_events
from llm_energy.measure.events import TrialDone
from llm_energy.trials.store import TrialStore

REPO = Path(__file__).resolve().parents[1]


def test_tiny_sweep_exact_counts_and_energy(tmp_path):
    design = SweepDesign.grid([8, 24], [4, 9], [1, 2], repeats=1, warmups=1, seed=1)
    spec = ProfileSpec(model="tiny-llama", design=design, device="cpu", idle_s=0.3, min_window_s=0.2,
                       node_type="cpu-test", threads=1)
    store = TrialStore(tmp_path)
    prof = Profiler(spec, node="test-node")
    summary = record_events(prof.events(), store)
    df = store.trials()
    assert summary.trials_written == df.height == design.n_trials == 16
    assert (df["tin_actual"] == df["tin"]).all() and (df["tout_actual"] == df["tout"]).all()
    assert df["warmup"].sum() == 8
    assert (df["energy_j"] > 0).all() and (df["runtime_s"] > 0).all()
    assert (df["prefill_s"] < df["runtime_s"]).all()
    # windows last at least min_window_s: short generations were repeated inside them
    win = df["t_end_mono"] - df["t_start_mono"]
    assert (win >= 0.2).all()
    assert (df["n_inner"] > 1).any()
    # the stored energy is what the stored samples integrate to
    from llm_energy.measure.integrate import window_energy

    e = window_energy(store.samples(), df.select("trial_id", "node", "session", "t_start_mono", "t_end_mono"))
    per = e.group_by("trial_id").agg(pl.col("energy_j").sum()).join(df.select("trial_id", "energy_j", "n_inner"),
                                                                      on="trial_id", suffix="_stored")
    assert per.height == df.height
    assert ((per["energy_j"] / per["n_inner"] - per["energy_j_stored"]).abs() < 1e-6 * per["energy_j_stored"] + 1e-9).all()
    info = store.sweeps()[prof.sweep_id]
    assert info.idle_w is not None and info.model == "tiny-llama" and info.node_type == "cpu-test"
    # this machine has no meter: the label says estimate and the manifest says so in words
    if df["energy_source"][0] == "estimate":
        assert any("estimate" in n for n in info.notes)


def test_resume_skips_done_trials(tmp_path):
    design = SweepDesign.grid([8], [4, 8], repeats=2, warmups=0)
    spec = ProfileSpec(model="tiny-llama", design=design, device="cpu", idle_s=0.1, min_window_s=0.05, threads=1)
    store = TrialStore(tmp_path)
    prof = Profiler(spec, node="n")
    first = design.trials()[:2]
    record_events(prof.events(trials=first), store)
    assert store.trials().height == 2
    done = store.done_trial_ids()
    ran = [ev.record.trial_id for ev in Profiler(spec, node="n").events(skip=done) if isinstance(ev, TrialDone)]
    assert len(ran) == 2 and not set(ran) & done


def _trial_chunks(out: Path) -> int:
    d = out / "trials"
    return len(list(d.glob("part-*.parquet"))) if d.is_dir() else 0


@pytest.mark.slow
def test_sigkill_then_resume_loses_and_repeats_nothing(tmp_path):
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "llm_energy.cli", "profile", "--model", "tiny-llama", "--tin", "8,16,32",
           "--tout", "4,8", "--repeats", "2", "--warmups", "0", "--device", "cpu", "--threads", "1",
           "--idle-s", "0.2", "--min-window-s", "0.3", "--out", str(out), "--no-live"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    while _trial_chunks(out) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "sweep finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = TrialStore(out).trials()
    assert 3 <= before.height < 12
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"resuming: {before.height} of 12" in r.stdout
    after = TrialStore(out).trials()
    assert after.height == 12 and after["trial_id"].n_unique() == 12
    # the trials committed before the kill are untouched
    kept = after.filter(pl.col("trial_id").is_in(before["trial_id"].to_list())).sort("trial_id")
    assert kept["t_start"].to_list() == before.sort("trial_id")["t_start"].to_list()


def test_show_json_lists_trials_with_the_documented_columns(tmp_path, capsys):
    design = SweepDesign.grid([8], [4], repeats=1, warmups=0)
    spec = ProfileSpec(model="tiny-llama", design=design, device="cpu", idle_s=0.1, min_window_s=0.05, threads=1)
    record_events(Profiler(spec, node="n").events(), TrialStore(tmp_path))
    assert main(["show", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1
    for col in ("cell_id", "repeat", "warmup", "tin", "tout", "batch", "tin_actual", "tout_actual", "runtime_s",
                "prefill_s", "energy_j", "energy_net_j", "energy_source", "node", "device", "n_gpus", "model", "backend"):
        assert col in rows[0]
    assert rows[0]["tin_actual"] == 8 and rows[0]["tout_actual"] == 4


@pytest.mark.parametrize("argv, needle", [
    (["--model", "no-such-model"], "no-such-model"),
    (["--model", "tiny-llama", "--tin", "0"], "--tin"),
    (["--model", "tiny-llama", "--tin", "-8"], "--tin"),
    (["--model", "tiny-llama", "--tout", "a,b"], "--tout"),
    (["--model", "tiny-llama", "--backend", "vllm"], "--backend"),
    (["--model", "tiny-llama", "--repeats", "0"], "--repeats"),
])
def test_profile_bad_inputs_give_one_line_errors(tmp_path, capsys, argv, needle):
    rc = main(["profile", *argv, "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert needle in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_profile_unwritable_out_dir(tmp_path, capsys):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    rc = main(["profile", "--model", "tiny-llama", "--out", str(blocker / "o"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "cannot write" in err and str(blocker / "o") in err and len(err.splitlines()) == 1


@pytest.fixture
def no_idle(monkeypatch):
    """Fail if a sweep starts measuring idle: the refusals below must come before any measurement."""
    def refuse(*a, **k):
        raise AssertionError("idle was measured before the refusal")

    monkeypatch.setattr(Profiler, "_idle_baseline", refuse)


def _profile_err(capsys, argv):
    rc = main(["profile", *argv, "--device", "cpu", "--idle-s", "0.1", "--no-live"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_memory_refusal_uses_the_sweeps_largest_batch_and_sequence_before_the_store(tmp_path, capsys, monkeypatch, no_idle):
    from llm_energy.measure.inference.presets import count_params, get_preset, memory_needed_bytes

    p = get_preset("tiny-llama")
    need = lambda b, s: memory_needed_bytes(count_params("tiny-llama"), p.hf_config, "float32", b, s)[0]  # noqa: E731
    monkeypatch.setattr("llm_energy.measure.inference.sizing.free_memory_bytes", lambda d: need(1, 4096) + 2**20)
    out = tmp_path / "o"
    err = _profile_err(capsys, ["--model", "tiny-llama", "--tin", "8,2048", "--tout", "8,2048", "--batch", "1,64",
                                "--out", str(out)])
    assert "'tiny-llama'" in err and "at batch 64 x 4096 tokens" in err and "GiB free" in err
    assert not out.exists()


def test_a_sweep_that_fits_is_not_refused_at_a_fixed_4096_tokens(tmp_path, monkeypatch):
    from llm_energy.measure.inference.presets import count_params, get_preset, memory_needed_bytes

    p = get_preset("tiny-llama")
    need = lambda b, s: memory_needed_bytes(count_params("tiny-llama"), p.hf_config, "float32", b, s)[0]  # noqa: E731
    monkeypatch.setattr("llm_energy.measure.inference.sizing.free_memory_bytes", lambda d: need(1, 4096) - 1)
    design = SweepDesign.grid([8], [4], repeats=1, warmups=0)
    spec = ProfileSpec(model="tiny-llama", design=design, device="cpu", idle_s=0.1, min_window_s=0.05, threads=1)
    assert record_events(Profiler(spec, node="n").events(), TrialStore(tmp_path)).trials_written == 1


def test_sequence_past_max_position_embeddings_is_refused_before_the_store(tmp_path, capsys, no_idle):
    out = tmp_path / "o"
    err = _profile_err(capsys, ["--model", "tiny-falcon", "--tin", "8,2048", "--tout", "8", "--out", str(out)])
    assert "'tiny-falcon'" in err and "2056" in err and "max_position_embeddings=2048" in err
    assert not out.exists()


def test_static_sweep_past_the_sliding_window_is_refused_before_the_store(tmp_path, capsys, no_idle):
    """tiny-mistral's window is 256 tokens: a static cache of 512 would recompile its decode step at every
    token (transformers' sliding-window static layer), so the sweep is refused; the cache backend runs it."""
    out = tmp_path / "o"
    err = _profile_err(capsys, ["--model", "tiny-mistral", "--backend", "static", "--tin", "8,250", "--tout", "8",
                                "--out", str(out)])
    assert "'tiny-mistral'" in err and "256-token sliding window" in err and "512-token bucket" in err
    assert "--backend cache" in err and not out.exists()
    from llm_energy.measure.inference.loading import read_model
    from llm_energy.measure.inference.sizing import check_static_window

    src = read_model("tiny-mistral")
    check_static_window(src, "static+fused", 256)  # the 256 bucket: inside the window, cached without it
    check_static_window(src, "cache", 4096)
    from llm_energy.errors import UserError

    with pytest.raises(UserError, match="256-token sliding window"):
        check_static_window(src, "static+fused+cdt", 257)
    off = dataclasses.replace(src, hf_config={**src.hf_config, "use_sliding_window": False})
    check_static_window(off, "static", 4096)  # a config that carries a window but does not use it (Qwen2)


@pytest.mark.parametrize("config, needle", [
    ("{not json", "not a usable model config"),
    ('{"model_type": "no-such-architecture"}', "not a usable model config"),
])
def test_bad_checkpoint_config_is_refused_before_the_store(tmp_path, capsys, no_idle, config, needle):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(config)
    out = tmp_path / "o"
    err = _profile_err(capsys, ["--model", str(ckpt), "--out", str(out)])
    assert f"{ckpt / 'config.json'}: {needle}" in err
    assert not out.exists()


def test_show_json_is_strict_json_with_null_for_nan_and_inf(tmp_path, capsys):
    from tests.test_store import make_record

    rec = make_record(1)
    rec.energy_net_j, rec.mean_w, rec.device_energy_j = float("nan"), float("inf"), [float("-inf")]
    TrialStore(tmp_path).append_trials([rec])
    capsys.readouterr()
    assert main(["show", str(tmp_path), "--json"]) == 0
    out = capsys.readouterr().out

    def refuse(c):
        raise ValueError(f"non-JSON constant {c}")

    (row,) = json.loads(out, parse_constant=refuse)
    assert row["energy_net_j"] is None and row["mean_w"] is None and row["device_energy_j"] == [None]
    assert row["energy_j"] == 4.0


def test_progress_counts_a_cell_done_when_all_its_trials_are(tmp_path):
    from llm_energy.measure.events import ProgressTick

    design = SweepDesign.grid([8, 16], [4], repeats=2, warmups=1, seed=3)  # 2 cells x 3 trials, shuffled
    spec = ProfileSpec(model="tiny-llama", design=design, device="cpu", idle_s=0.1, min_window_s=0.05, threads=1)
    ticks = [ev for ev in Profiler(spec, node="n").events() if isinstance(ev, ProgressTick)]
    running = [t for t in ticks if t.state == "running"]
    assert [t.done for t in running] == list(range(1, 7)) and {t.cells_total for t in ticks} == {2}
    seen: list[str] = []
    for t in running:  # t.cell is the trial key "cell/rN"
        seen.append(t.cell.split("/")[0])
        assert t.cells_done == sum(seen.count(c) == 3 for c in set(seen))
    assert ticks[-1].state == "done" and ticks[-1].cells_done == 2
