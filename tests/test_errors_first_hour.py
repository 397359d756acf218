"""Issue 16, a newcomer's first hour: stable per-(node, model) rows in the live view with totals that add up,
progress that counts a resumed sweep whole (and shows a sweep with nothing left as done, not an empty
table), a "compiling" state, full preset names, and a Ctrl-C that stops at once keeping committed trials."""

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from llm_energy.cli import main
from llm_energy.measure.design import design_from_lists
from llm_energy.measure.events import ProgressTick
from llm_energy.measure.profiler import Profiler
from llm_energy.measure.prepare import _will_compile
from llm_energy.measure.spec import ProfileSpec
from llm_energy.report.live import SweepView, view_from_progress

REPO = Path(__file__).resolve().parents[1]


def tick(node, model, state, done, total, cells_done=0, cells_total=0, **kw):
    return ProgressTick(node=node, node_type="cpu", state=state, done=done, total=total, model=model, backend="cache",
                        cells_done=cells_done, cells_total=cells_total, **kw)


def text(view) -> str:
    buf = io.StringIO()
    Console(file=buf, width=200).print(view.render())
    return buf.getvalue()


def test_a_node_moving_to_its_next_model_keeps_its_row_and_totals_add_up(tmp_path):
    v = SweepView(Console(file=io.StringIO()), live=False, mirror=tmp_path / "progress.json", mirror_every_s=0)
    v.update(tick("n1", "tiny-llama", "running", 2, 4, 1, 2))
    v.update(tick("n1", "tiny-llama", "done", 4, 4, 2, 2))
    v.update(tick("n1", "tiny-mistral", "loading", 0, 6, 0, 3))
    v.update(tick("n1", "tiny-mistral", "failed", 0, 0, message="ActorDiedError"))  # no counts: keeps its own
    out = text(v)
    rows = [ln for ln in out.splitlines() if "tiny-" in ln]
    assert len(rows) == 2 and "done" in rows[0] and "failed" in rows[1]  # old code: one row, the second model's
    assert "2/5" in out and "4/10" in out  # cells 2 + 0 of 2 + 3; trials 4 + 0 of 4 + 6
    assert "1 nodes" in out and "2 sweeps" in out
    assert text(view_from_progress(tmp_path / "progress.json")) == out  # watch shows the same rows


def _spec(tmp_path, **kw):
    design = design_from_lists("grid", [8, 16], [4], [1], repeats=2, warmups=0, seed=0)
    return ProfileSpec(model="tiny-llama", design=design, device="cpu", idle_s=0.1, **kw)


def test_progress_counts_a_resumed_sweep_whole(tmp_path):
    prof = Profiler(_spec(tmp_path))
    trials = prof.spec.design.trials()
    skip = {prof.trial_id(t) for t in trials[:3]}
    first = next(iter(prof.events(skip=skip)))
    assert (first.state, first.done, first.total, first.cells_total) == ("loading", 3, 4, 2)  # old code: 0/1, 1 cell
    assert first.cells_done == 1
    done = list(prof.events(skip={prof.trial_id(t) for t in trials}))  # nothing left: one "done" row, no model load
    assert [(t.state, t.done, t.total, t.cells_done, t.cells_total) for t in done] == [("done", 4, 4, 2, 2)]


def test_a_static_compile_is_its_own_state():
    class Static:
        _caches = {(1, 256): object()}

    class Cell:
        batch, tin, tout = 1, 8, 4

    big = type("Big", (), {"batch": 4, "tin": 8, "tout": 4})
    assert not _will_compile(Static(), Cell()) and _will_compile(Static(), big())
    assert not _will_compile(object(), Cell())  # cache / no-cache backends never compile
    v = SweepView(Console(file=io.StringIO()), live=False)
    v.update(tick("n1", "tiny-llama", "compiling", 0, 4, message="batch 4, 12 tokens"))
    assert "compiling" in text(v)


def test_models_prints_whole_preset_names_at_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "…" not in "".join(ln.split("│")[1] for ln in out.splitlines() if ln.startswith("│"))
    assert "tiny-mistral" in out or "tiny-llama" in out


def test_ctrl_c_stops_at_once_and_keeps_committed_trials(tmp_path):
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "llm_energy.cli", "profile", "--model", "tiny-llama", "--device", "cpu", "--tin", "8,16",
           "--tout", "4", "--repeats", "50", "--warmups", "0", "--idle-s", "0.1", "--min-window-s", "0.05",
           "--out", str(out), "--no-live"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    trials = out / "trials"
    while time.monotonic() < deadline and not (trials.is_dir() and len(list(trials.glob("part-*"))) >= 2):
        time.sleep(0.2)
    at_signal = len(list(trials.glob("part-*")))  # trials committed (one chunk each) when the Ctrl-C comes
    p.send_signal(signal.SIGINT)
    log, _ = p.communicate(timeout=30)
    assert p.returncode == 130, log[-500:]
    assert "interrupted:" in log and "rerun the same command to resume" in log
    import polars as pl

    from llm_energy.trials.store import open_store

    df = open_store(out).trials()
    n = df.height
    # stopped at once: no trial ran to its end after the interrupt (at most the one committing as it came),
    # so the sweep of 100 is left unfinished; what the message counts is what the store holds
    assert 2 <= at_signal <= n <= at_signal + 1 < 100, (at_signal, n, log[-500:])
    assert f"interrupted: {n} of 100 trials" in log
    # the committed trials kept whole: one chunk each, one sweep, distinct ids, each a measured trial of the design
    assert len(list(trials.glob("part-*"))) == n and df["trial_id"].n_unique() == n and df["sweep_id"].n_unique() == 1
    assert set(df["tin"].to_list()) <= {8, 16} and df["tout"].to_list() == [4] * n and not df["warmup"].any()
    assert df.select(pl.col("runtime_s", "energy_j", "t_start_mono", "t_end_mono").is_null().sum()).sum_horizontal()[0] == 0
    assert (df["runtime_s"] > 0).all() and (df["t_end_mono"] > df["t_start_mono"]).all()


def test_a_resumed_cluster_run_with_nothing_left_shows_its_sweeps_done(tmp_path):
    pytest.importorskip("ray")
    import yaml

    from cluster.collector import _stored_sweep_ticks
    from cluster.config import load_config
    from cluster.placement import specs_for
    from llm_energy.measure.spec import sweep_id, trial_id
    from llm_energy.trials.store import TrialStore

    d = {"out": str(tmp_path / "out"), "node_types": {"cpu": {"models": ["tiny-llama"]}},
         "sweep": {"tin": [8, 16], "tout": [4], "repeats": 2, "warmups": 0}, "workload": {"synth": "chat"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(d))
    cfg = load_config(tmp_path / "c.yaml")
    (nt, spec), = specs_for(cfg)
    store = TrialStore(tmp_path / "store")
    store._done = {trial_id(sweep_id(spec), t) for t in spec.design.trials()}  # every trial stored
    ticks = _stored_sweep_ticks(cfg, store, planned=[])
    assert [(t.node, t.model, t.state, t.done, t.total, t.cells_done, t.cells_total) for t in ticks] == \
        [("cpu", "tiny-llama", "done", 4, 4, 2, 2)]
