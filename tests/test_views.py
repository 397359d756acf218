"""The live view's bookkeeping: one row per node, totals over every (node, model) sweep, failures that
keep their progress, and the progress.json mirror that `llm-energy watch` renders."""

import io
import json

from rich.console import Console

from llm_energy.cli import main
from llm_energy.measure.events import ProgressTick
from llm_energy.report.live import SweepView, read_progress, view_from_progress


def tick(node, model, state, done, total, **kw):
    """Trials done/total; two trials a cell (a warm-up and a repeat)."""
    kw.setdefault("cells_done", done // 2)
    return ProgressTick(node=node, node_type=node.split("/")[0], state=state, done=done, total=total, model=model,
                        backend="cache", cells_total=total // 2, **kw)


def text(view: SweepView) -> str:
    buf = io.StringIO()
    Console(file=buf, width=200).print(view.render())
    return buf.getvalue()


def test_rows_per_node_totals_per_sweep_and_failures_keep_progress(tmp_path):
    v = SweepView(Console(file=io.StringIO()), live=False, mirror=tmp_path / "progress.json", mirror_every_s=0)
    v.update(tick("a100/n1", "llama-2-7b", "running", 4, 4, watts_now=300.0, joules_so_far=100.0, eta_s=0))
    v.update(tick("a100/n1", "llama-2-7b", "done", 4, 4, joules_so_far=120.0))
    v.update(tick("a100/n1", "llama-2-13b", "running", 1, 4, watts_now=350.0, joules_so_far=40.0, eta_s=30))
    v.update(tick("cpu/n2", "tiny-llama", "running", 3, 8, watts_now=50.0, joules_so_far=9.0, eta_s=12))
    v.update(tick("cpu/n2", "tiny-llama", "failed", 0, 0, message="ActorDiedError"))
    assert list(v.rows) == ["a100/n1", "cpu/n2"]  # one row per node, its current model
    assert v.rows["a100/n1"].model == "llama-2-13b"
    failed = v.rows["cpu/n2"]
    assert (failed.state, failed.done, failed.total, failed.joules_so_far) == ("failed", 3, 8, 9.0)
    out = text(v)
    assert "2 nodes" in out and "3 sweeps" in out
    assert "8/16" in out  # trials: 4 + 1 + 3 done of 4 + 4 + 8
    assert "3/8" in out  # cells (2 trials each): 2 + 0 + 1 done of 2 + 2 + 4
    assert "169.0 J" in out  # 120 + 40 + 9
    assert "350 W" in out and "1 running, 1 failed" in out  # watts now: the running node only
    # the mirror holds the same state
    w = view_from_progress(tmp_path / "progress.json")
    assert {k: (t.model, t.state, t.done) for k, t in w.rows.items()} == \
        {k: (t.model, t.state, t.done) for k, t in v.rows.items()}
    assert set(w.sweeps) == set(v.sweeps) and text(w) == out


def test_progress_file_absent_torn_or_foreign_is_none(tmp_path):
    assert read_progress(tmp_path / "none.json") is None
    (tmp_path / "torn.json").write_text('{"version": 1, "rows": [')
    assert read_progress(tmp_path / "torn.json") is None
    (tmp_path / "v9.json").write_text(json.dumps({"version": 9, "rows": [], "sweeps": []}))
    assert read_progress(tmp_path / "v9.json") is None


def test_watch_once_renders_and_missing_file_is_one_line(tmp_path, capsys):
    v = SweepView(Console(file=io.StringIO()), live=False, mirror=tmp_path / "progress.json")
    with v:
        v.update(tick("cpu/n1", "tiny-llama", "done", 6, 6, joules_so_far=12.0))
    assert main(["watch", str(tmp_path), "--once"]) == 0
    out = capsys.readouterr().out
    assert "cpu/n1" in out and "6/6" in out and "tiny-llama" in out
    assert main(["watch", str(tmp_path / "nowhere"), "--once"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llm-energy watch: error: ") and len(err.strip().splitlines()) == 1
