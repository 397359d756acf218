"""Issue 16: a plan directory is written whole or not at all (staged beside --out, then swapped in)."""

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from benchmarks.crash_kill import kill_at
from llm_energy.cli import main
from llm_energy.plan import outputs
from llm_energy.plan.outputs import write_plan_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from llm_energy.fit.fits import DeploymentFit, FitsFile, TargetModel, save_fits

    d = tmp_path_factory.mktemp("plan_in")
    deps = {}
    for key, e in (("small@l4x1/cache/b1", [0.5, 20, 0.02]), ("big@h100x4/cache/b1", [4.0, 300, 0.2])):
        model, rest = key.split("@")
        deps[key] = DeploymentFit(deployment=key, model=model, node_type=rest.split("x")[0], n_gpus=1,
                                  backend="cache", batch=1,
                                  targets={"energy_j": TargetModel("paper", ["tin", "tout", "tin*tout"], e),
                                           "runtime_s": TargetModel("paper", ["tin", "tout", "tin*tout"],
                                                                    [1e-4, 0.03, 1e-6])})
    save_fits(FitsFile(deployments=deps, source="test"), d / "FITS.json")
    (d / "deploy.yaml").write_text("deployments:\n  - {name: small, fit: 'small@l4x1/cache/b1', accuracy: 45}\n"
                                   "  - {name: big, fit: 'big@h100x4/cache/b1', accuracy: 65}\n")
    main(["workload", "synth", "--kind", "lognormal", "--n", "200", "--seed", "2", "--out", str(d / "w.csv")])
    return d


def _plan(inputs, out, *extra):
    return main(["plan", "--fits", str(inputs / "FITS.json"), "--deployments", str(inputs / "deploy.yaml"),
                 "--workload", str(inputs / "w.csv"), "--out", str(out), *extra])


def _consistent(out: Path) -> bool:
    s = json.loads((out / "summary.json").read_text())
    a = pl.read_parquet(out / "assignment.parquet")
    return int(a["count_assigned"].sum()) == s["workload"]["queries"] and all(Path(f).exists() for f in s["files"].values())


def test_a_failure_mid_write_keeps_the_old_plan_whole(inputs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "plan"
    assert _plan(inputs, out, "--per-query") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.pl.DataFrame, "write_parquet", boom)  # every table write fails
    assert _plan(inputs, out, "--pareto") == 2
    assert "--out" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old plan untouched, no new file in it
    assert not [p for p in tmp_path.iterdir() if p.name != "plan"]  # no staging directory left


def test_stale_files_of_the_old_plan_go_and_summary_lists_final_paths(inputs, tmp_path, capsys):
    out = tmp_path / "plan"
    assert _plan(inputs, out, "--per-query", "--pareto", "--pareto-steps", "3") == 0
    assert (out / "pareto.parquet").exists()
    assert _plan(inputs, out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["assignment.parquet", "summary.json"]
    s = json.loads((out / "summary.json").read_text())
    assert set(s["files"]) == {"assignment", "summary"} and all(".plan-tmp-" not in f for f in s["files"].values())
    assert _consistent(out)


def test_a_directory_with_other_files_is_not_swapped_and_keeps_them(inputs, tmp_path, capsys):
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _plan(inputs, out, "--per-query") == 0
    assert _plan(inputs, out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["assignment.parquet", "notes.txt", "summary.json"]
    assert _consistent(out)


def test_a_killed_writers_staging_directory_is_removed_by_the_next(tmp_path):
    out = tmp_path / "plan"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".plan.plan-tmp-{dead.stdout.strip()}-deadbeef"
    stale.mkdir()
    (stale / "assignment.parquet").write_bytes(b"half")
    with write_plan_dir(out) as stage:
        (stage / "summary.json").write_text("{}")
    assert not stale.exists() and (out / "summary.json").read_text() == "{}"


def test_sigkill_at_random_points_leaves_old_or_new_plan_never_a_mix(inputs, tmp_path, capsys):
    out = tmp_path / "plan"
    assert _plan(inputs, out) == 0
    args = ["plan", "--fits", inputs / "FITS.json", "--deployments", inputs / "deploy.yaml", "--workload",
            inputs / "w.csv", "--out", out, "--per-query"]
    for delay in (0.5, 1.0, 1.5, 2.0):
        kill_at(args, delay)
        assert _consistent(out)
        names = {p.name for p in out.iterdir()}
        assert names in ({"assignment.parquet", "summary.json"},
                         {"assignment.parquet", "assignment_per_query.parquet", "summary.json"})
