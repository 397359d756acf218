"""Resume mixes nothing (issue 16): a rerun of `profile --out S` resumes a sweep only with the settings
it was measured with (design, seed, window, energy source), says what differs otherwise, or starts a
new sweep beside it with --new-sweep; the manifest's record is never rewritten and each run keeps
its own idle baseline; the shipped stores (data/h100) keep their ids and still resume."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from llm_energy.cli import main
from llm_energy.errors import UserError
from llm_energy.measure.design import SweepDesign
from llm_energy.measure.profiler import Profiler
from llm_energy.measure.record import record_events
from llm_energy.measure.samplers.estimate import EstimateSampler
from llm_energy.measure.spec import ProfileSpec
from llm_energy.trials.schema import SweepInfo
from llm_energy.trials.store import TrialStore, open_store

REPO = Path(__file__).resolve().parents[1]
BASE = ["profile", "--model", "tiny-llama", "--tin", "8,16", "--tout", "4", "--repeats", "1", "--warmups", "0",
        "--device", "cpu", "--threads", "1", "--idle-s", "0.1", "--min-window-s", "0.1", "--no-live"]


def with_flag(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One sweep of 2 cells on this node's meter (the CPU estimate here), measured once."""
    out = tmp_path_factory.mktemp("base") / "s"
    assert main([*BASE, "--out", str(out)]) == 0
    return out


@pytest.fixture
def store(measured, tmp_path):
    dst = tmp_path / "s"
    shutil.copytree(measured, dst)
    return dst


@pytest.mark.parametrize("flag, value, says", [
    ("--tin", "8,32", "--tin 8,32 (stored: 8,16)"),
    ("--tout", "8", "--tout 8 (stored: 4)"),
    ("--repeats", "2", "--repeats 2 (stored: 1)"),
    ("--seed", "7", "--seed 7 (stored: 0)"),
    ("--min-window-s", "0.3", "--min-window-s 0.3 (stored: 0.1)"),
    ("--min-window-s", "auto", "--min-window-s auto (stored: 0.1)"),
])
def test_a_resume_with_other_settings_is_refused_saying_what_differs(store, capsys, flag, value, says):
    before = (store / "manifest.json").read_bytes()
    n = open_store(store).trials().height
    capsys.readouterr()
    rc = main([*with_flag(BASE, flag, value), "--out", str(store)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert says in err and "--new-sweep" in err
    assert (store / "manifest.json").read_bytes() == before  # nothing rewritten
    assert open_store(store).trials().height == n


def test_a_resume_on_a_machine_with_another_energy_source_is_refused(store, capsys, monkeypatch, tmp_path):
    from llm_energy.measure.samplers.rapl import RaplSampler
    from tests.fakes.powercap import make_powercap

    make_powercap(tmp_path / "pc")
    monkeypatch.setattr("llm_energy.measure.samplers.discover.discover_samplers",
                        lambda *a, **k: [RaplSampler("n", root=tmp_path / "pc")])
    before = (store / "manifest.json").read_bytes()
    capsys.readouterr()
    rc = main([*BASE, "--out", str(store)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "energy source rapl (stored: estimate)" in err and len(err.splitlines()) == 1, err
    assert (store / "manifest.json").read_bytes() == before


def test_new_sweep_starts_a_sweep_beside_it_and_resumes_it(store, capsys):
    old = json.loads((store / "manifest.json").read_text())["sweeps"]
    (sid,) = old
    argv = [*with_flag(BASE, "--tin", "8,32"), "--out", str(store), "--new-sweep"]
    assert main(argv) == 0
    sweeps = json.loads((store / "manifest.json").read_text())["sweeps"]
    assert set(sweeps) > {sid} and len(sweeps) == 2 and sweeps[sid] == old[sid]  # the first one untouched
    (new,) = set(sweeps) - {sid}
    assert sweeps[new]["spec"]["sweep_variant"] == 1 and [c[0] for c in sweeps[new]["design"]["cells"]] == [8, 32]
    df = open_store(store).trials()
    assert df.filter(df["sweep_id"] == new).height == 2 and df.filter(df["sweep_id"] == sid).height == 2
    capsys.readouterr()
    assert main(argv) == 0  # the same command again resumes the new sweep: nothing to run, nothing added
    assert "resuming: 2 of 2" in capsys.readouterr().out
    assert open_store(store).trials().height == 4 and len(json.loads((store / "manifest.json").read_text())["sweeps"]) == 2
    assert main([*BASE, "--out", str(store)]) == 0  # and the first settings still resume the first sweep


class FixedLoad(EstimateSampler):
    """The CPU estimate at a fixed utilisation (another run, another load on the machine)."""

    def __init__(self, util: float) -> None:
        super().__init__("n", tdp_w=100.0, idle_w=30.0)
        self._util = lambda: util


def test_a_plain_rerun_keeps_the_first_runs_record_and_each_runs_idle(tmp_path):
    design = SweepDesign.grid([8], [4, 8], repeats=1, warmups=0)
    spec = ProfileSpec(model="tiny-llama", design=design, device="cpu", idle_s=0.2, min_window_s=0.05, threads=1)
    st = TrialStore(tmp_path)
    p1 = Profiler(spec, node="n", samplers=[FixedLoad(0.1)])
    record_events(p1.events(trials=design.trials()[:1]), st)
    first = json.loads((tmp_path / "manifest.json").read_text())["sweeps"][p1.sweep_id]
    p2 = Profiler(spec, node="n", samplers=[FixedLoad(0.6)])  # the rest, later, under more load
    record_events(p2.events(skip=st.done_trial_ids()), st)
    rec = json.loads((tmp_path / "manifest.json").read_text())["sweeps"][p1.sweep_id]
    assert rec["idle_w"] == first["idle_w"] == pytest.approx(37.0)  # never overwritten (was 72 W after the rerun)
    assert rec["created"] == first["created"] and rec["design"] == first["design"] and rec["spec"] == first["spec"]
    runs = {r["session"]: r for r in rec["runs"]}
    assert set(runs) == {p1.session, p2.session}
    assert runs[p1.session]["idle_w"] == pytest.approx(37.0) and runs[p2.session]["idle_w"] == pytest.approx(72.0)
    df = st.trials()
    by_session = dict(zip(df["session"], df["idle_w"]))  # each trial nets out its own run's idle
    assert by_session[p1.session] == pytest.approx(37.0) and by_session[p2.session] == pytest.approx(72.0)


def test_the_store_itself_refuses_to_mix_energy_sources(tmp_path):
    """What the Ray driver writes through: register_sweep checks the record, not only the CLI."""
    st = TrialStore(tmp_path)
    design = {"kind": "grid", "cells": [[8, 4, 1]], "repeats": 1, "warmups": 0, "seed": 0}
    st.register_sweep("s1", SweepInfo("s1", "m", "cache", "bfloat16", "h100", 1, energy_source="nvml-counter",
                                      idle_w=120.0, design=design))
    with pytest.raises(UserError, match="energy_source='nvml-counter' \\(this run: 'estimate'\\)"):
        st.register_sweep("s1", SweepInfo("s1", "m", "cache", "bfloat16", "h100", 1, energy_source="estimate",
                                          idle_w=80.0, design=design))
    with pytest.raises(UserError, match="repeats=1 \\(this run: 3\\)"):
        st.register_sweep("s1", SweepInfo("s1", "m", "cache", "bfloat16", "h100", 1, energy_source="nvml-counter",
                                          design={**design, "repeats": 3}))
    info = TrialStore(tmp_path).sweeps()["s1"]
    assert info.energy_source == "nvml-counter" and info.idle_w == 120.0


SHIPPED = sorted(p.parent for p in (REPO / "data").glob("*/*/manifest.json") if (p.parent / "trials").is_dir())


@pytest.mark.parametrize("root", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_stores_open_show_and_resume_under_their_ids(root, tmp_path, monkeypatch, capsys):
    import llm_energy.measure.profiler as profiler

    assert main(["show", str(root)]) == 0 and main(["show", str(root), "--json"]) == 0
    capsys.readouterr()
    # on the node type they were measured on (one H100 behind NVML's energy counter)
    monkeypatch.setattr(profiler, "resolve_device", lambda device, gpus: "cuda:0")
    monkeypatch.setattr(profiler, "cuda_ordinals", lambda device, gpus: (0,))
    monkeypatch.setattr(profiler.Profiler, "energy_source", lambda self: "nvml-counter")
    store = open_store(root)
    trials = store.trials()
    for sid, info in store.sweeps().items():
        prof = Profiler(ProfileSpec.from_dict(info.spec), node="n")
        prof.resume_into(store.sweeps(), where=str(root))
        assert prof.sweep_id == sid  # the same sweep, not a new one beside it
        planned = {prof.trial_id(t) for t in prof.spec.design.trials()}
        assert set(trials.filter(trials["sweep_id"] == sid)["trial_id"]) <= planned  # its trials are skipped
    # a resumed run is added as a run: the record's idle stays, the old one becomes the first run
    copy = tmp_path / "s"
    shutil.copytree(root, copy)
    st = TrialStore(copy)
    sid, info = next(iter(st.sweeps().items()))
    st.register_sweep(sid, dataclasses.replace(info, idle_w=1.0, runs=[{"session": "x", "idle_w": 1.0}]))
    again = TrialStore(copy).sweeps()[sid]
    before = [r.get("idle_w") for r in info.runs] or [info.idle_w]  # a resumed store has its runs already
    assert again.idle_w == info.idle_w and [r.get("idle_w") for r in again.runs] == [*before, 1.0]
