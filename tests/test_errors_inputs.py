"""Issue 16: every bad input a user can give is a one-line error (exit 2), never a traceback, and what was
accepted silently (NaN or negative energies, a duplicated header, an unknown form, schema_version 0, a
coefficient that overflows) is refused. Each case failed on the code before this file."""

import csv
import io
import json
from pathlib import Path

import pytest

from llm_energy.cli import main
from llm_energy.fit import fits as fits_mod
from llm_energy.fit.fits import DeploymentFit, FitsFile, TargetModel, save_fits

RANDOM = bytes(range(256))[::-1] * 2  # not UTF-8, not JSON

GRID_HEADER = ["Timestamp", "Phase", "Runtime (s)", "GPU Energy (mJ)", "Number of Output Tokens",
               "Number of Input Tokens", "Iteration", "Model", "Number of GPUs", "Prompt", "Total Number of Tokens",
               "Batch Size", "System", "CPU Core", "GPU Total Memory (MB)", "GPU Used Memory (MB)"]


def grid_file(path: Path, energies=(3000.0, 5000.0, 7000.0), cut: bool = False) -> Path:
    """An authors'-format grid file (all-stats-raw.csv layout) with one inference row per energy."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(GRID_HEADER)
    for k, e in enumerate(energies):
        tin, tout = 8 * 2 ** k, 8
        w.writerow([1714146368 + k, f"start-inference-I-{tin}", 0.5 + k, e, tout, tin, 0, "falcon-7b", 1, "a prompt",
                    tin + tout, 32, "argonne-swing", 22, 40960, 14925.6])
    text = buf.getvalue()
    if cut:
        text = text[:text.rstrip().rindex("\n") + 1] + "1714146999,start-inference-I-64,0.9,31"
    path.write_text(text)
    return path


def one_line(capsys, argv) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if "error:" in x]
    assert rc == 2 and len(lines) == 1, (rc, err)
    return lines[0]


@pytest.fixture
def store(tmp_path, capsys):
    assert main(["import", "wilkins2024", str(grid_file(tmp_path / "g.csv")), "--out", str(tmp_path / "st")]) == 0
    capsys.readouterr()
    return tmp_path / "st"


def _fits(tmp_path, coef=(0.5, 20, 0.02), form="paper", version=1) -> Path:
    dep = DeploymentFit(deployment="m@cpux1/cache/b1", model="m", node_type="cpu", n_gpus=1, backend="cache", batch=1,
                        targets={"energy_j": TargetModel("paper", ["tin", "tout", "tin*tout"], [0.5, 20, 0.02]),
                                 "runtime_s": TargetModel("paper", ["tin", "tout", "tin*tout"], [1e-4, 0.03, 1e-6])})
    p = tmp_path / "FITS.json"
    save_fits(FitsFile(deployments={dep.deployment: dep}, source="t"), p)
    d = json.loads(p.read_text())
    d["schema_version"] = version
    d["deployments"][0]["targets"]["energy_j"].update(form=form, coef=list(coef))
    p.write_text(json.dumps(d))
    (tmp_path / "dep.yaml").write_text("deployments:\n  - {name: m, fit: 'm@cpux1/cache/b1', accuracy: 50}\n")
    (tmp_path / "w.csv").write_text("tin,tout\n8,8\n16,8\n")
    return p


def _plan(tmp_path, fits):
    return ["plan", "--fits", fits, "--deployments", tmp_path / "dep.yaml", "--workload", tmp_path / "w.csv",
            "--min-share", "0", "--out", tmp_path / "plan"]


# ---- store manifests of random bytes or the wrong JSON type ----------------------------------------
@pytest.mark.parametrize("content", [RANDOM, b"[1, 2]", b'{"kind": "llm-energy-store", "schema_version": 1, "sweeps": [1]}'])
@pytest.mark.parametrize("cmd", ["fit", "compact", "import", "show"])
def test_a_bad_manifest_is_one_line(store, tmp_path, capsys, content, cmd):
    (store / "manifest.json").write_bytes(content)
    argv = {"fit": ["fit", store, "--out", tmp_path / "f.json"], "compact": ["compact", store],
            "import": ["import", "wilkins2024", grid_file(tmp_path / "h.csv"), "--out", store],
            "show": ["show", store]}[cmd]
    assert "manifest.json" in one_line(capsys, argv)


def test_a_bad_manifest_in_profile_is_one_line(store, capsys):
    (store / "manifest.json").write_bytes(RANDOM)
    line = one_line(capsys, ["profile", "--model", "tiny-llama", "--device", "cpu", "--tin", "8", "--tout", "4",
                             "--repeats", "1", "--idle-s", "0.1", "--out", store, "--no-live"])
    assert "manifest.json" in line and "unreadable manifest" in line


def test_schema_version_0_store_is_refused(store, capsys):
    m = json.loads((store / "manifest.json").read_text())
    (store / "manifest.json").write_text(json.dumps({**m, "schema_version": 0}))
    assert "schema_version=0" in one_line(capsys, ["show", store])


# ---- fits files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [RANDOM, b"[1, 2]", b'"x"'])
def test_a_bad_fits_file_is_one_line_in_plan_and_predict(tmp_path, capsys, content):
    _fits(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    assert "bad.json" in one_line(capsys, _plan(tmp_path, bad))
    assert "bad.json" in one_line(capsys, ["predict", bad, "--deployment", "m@cpux1/cache/b1", "--tin", 8, "--tout", 8])


@pytest.mark.parametrize("kw, match", [({"form": "quadratic-magic"}, "form='quadratic-magic': unknown form"),
                                       ({"version": 0}, "schema_version=0"),
                                       ({"coef": (1e308, 1e308, 1e308)}, "non-finite")])
def test_fits_silent_accepts_are_refused(tmp_path, capsys, kw, match):
    p = _fits(tmp_path, **kw)
    assert match in one_line(capsys, _plan(tmp_path, p))


def test_known_forms_are_the_forms_fit_writes():
    from llm_energy.fit.forms import FORMS

    assert set(fits_mod.KNOWN_FORMS) == set(FORMS)


# ---- progress files (watch) ----------------------------------------------------------------------
@pytest.mark.parametrize("content", [RANDOM, b"[1]", b'{"version": 1, "title": "x", "t_wall": 1, "rows": [1], "sweeps": []}'])
def test_watch_on_a_bad_progress_file_is_one_line(tmp_path, capsys, content):
    (tmp_path / "progress.json").write_bytes(content)
    assert "not a progress file" in one_line(capsys, ["watch", tmp_path, "--once"])


# ---- CSV files -----------------------------------------------------------------------------------
def test_header_only_csvs_are_one_line(tmp_path, capsys):
    (tmp_path / "h.csv").write_text("a,b,c,d\n")
    line = one_line(capsys, ["import", "csv", tmp_path / "h.csv", "--map", "tin=a,tout=b,energy_j=c,runtime_s=d",
                             "--out", tmp_path / "s"])
    assert "no data rows" in line
    (tmp_path / "g.csv").write_text(",".join(GRID_HEADER) + "\n")
    assert "no data rows" in one_line(capsys, ["import", "wilkins2024", tmp_path / "g.csv", "--out", tmp_path / "s"])


def test_a_grid_file_cut_mid_row_names_the_row(tmp_path, capsys):
    line = one_line(capsys, ["import", "wilkins2024", grid_file(tmp_path / "g.csv", cut=True), "--out", tmp_path / "s"])
    assert "data row 3" in line and "cut mid-row" in line
    assert not (tmp_path / "s" / "trials").exists() or not list((tmp_path / "s" / "trials").glob("part-*"))


@pytest.mark.parametrize("energy, shown", [(float("nan"), "nan"), (-5000.0, "-5000")])
def test_nan_and_negative_energies_in_the_authors_format_are_refused(tmp_path, capsys, energy, shown):
    line = one_line(capsys, ["import", "wilkins2024", grid_file(tmp_path / "g.csv", energies=(3000.0, energy, 7000.0)),
                             "--out", tmp_path / "s"])
    assert "GPU Energy (mJ)" in line and shown in line and "data row 2" in line


def test_a_duplicated_csv_header_is_refused(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("tin,tout,tin,e,r\n8,8,9,1.0,0.1\n")
    line = one_line(capsys, ["import", "csv", tmp_path / "d.csv", "--map", "tin=tin,tout=tout,energy_j=e,runtime_s=r",
                             "--out", tmp_path / "s"])
    assert "'tin' 2 times" in line


# ---- profile arguments, refused before any model loads or memory is allocated ---------------------
@pytest.mark.parametrize("extra, match", [(["--idle-s", "nan"], "idle_s=nan"), (["--threads", "-1"], "threads=-1"),
                                          (["--repeats", "100000000"], "at most 1000000")])
def test_profile_arguments(tmp_path, capsys, extra, match):
    line = one_line(capsys, ["profile", "--model", "tiny-llama", "--device", "cpu", "--tin", "8", "--tout", "4",
                             "--idle-s", "0.1", "--out", tmp_path / "s", "--no-live", *extra])
    assert match in line
    assert not (tmp_path / "s").exists()  # nothing written


# ---- output directories that cannot be written -----------------------------------------------------
def test_unwritable_outputs_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert "--out" in one_line(capsys, ["workload", "synth", "--kind", "lognormal", "--n", 5, "--out", "/proc/w.csv"])
    assert "--out" in one_line(capsys, ["workload", "synth", "--kind", "lognormal", "--n", 5,
                                        "--out", tmp_path / "file" / "w.csv"])
    p = _fits(tmp_path)
    argv = _plan(tmp_path, p)
    argv[-1] = tmp_path / "file" / "plan"
    assert "--out" in one_line(capsys, argv)


# ---- a local checkpoint directory, and show on an imported store -----------------------------------
def test_a_checkpoint_needing_a_missing_package_is_refused_before_the_store(tmp_path, capsys, monkeypatch):
    import importlib.util

    from llm_energy.measure.inference.presets import get_preset

    ckpt = tmp_path / "ckpt"
    get_preset("tiny-llama").config().save_pretrained(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"")  # weights present: they load through accelerate
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "accelerate" else real(n, *a))
    line = one_line(capsys, ["profile", "--model", ckpt, "--device", "cpu", "--tin", "8", "--tout", "4", "--repeats", "1",
                             "--idle-s", "0.1", "--out", tmp_path / "s", "--no-live"])
    assert "accelerate" in line
    assert not (tmp_path / "s").exists()  # old code: a traceback after the store and idle samples were written


def test_show_on_an_imported_store(store, capsys):
    assert main(["show", str(store)]) == 0  # imported rows have null columns a measured store has
    assert "Traceback" not in capsys.readouterr().err
