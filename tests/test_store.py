import json
import os

import polars as pl
import pytest

from llm_energy.errors import UserError
from llm_energy.trials.schema import SAMPLE_SCHEMA, TRIAL_SCHEMA, PowerSample, SweepInfo, TrialRecord, samples_frame
from llm_energy.trials.store import TrialStore, open_store


def make_record(i: int, sweep: str = "s1") -> TrialRecord:
    return TrialRecord(
        trial_id=f"{sweep}/i8-o8-b1/r{i}", sweep_id=sweep, cell_id="i8-o8-b1", repeat=i, warmup=i == 0,
        tin=8, tout=8, batch=1, tin_actual=8, tout_actual=8, runtime_s=0.1 * (i + 1), prefill_s=0.01,
        decode_s=0.1 * (i + 1) - 0.01, energy_j=3.0 + i, energy_net_j=1.0 + i, idle_w=20.0, energy_source="rapl",
        mean_w=30.0, peak_w=35.0, n_samples=5, n_inner=1, short_window=False, device_energy_j=[3.0 + i],
        devices=["package-0"], t_start=1.0, t_end=2.0, t_start_mono=1.0, t_end_mono=2.0, node="n", node_type="cpu",
        system="cpu", device="cpu", n_gpus=0, model="tiny-llama", backend="cache", dtype="float32",
    )


def test_append_read_roundtrip_and_schema(tmp_path):
    st = TrialStore(tmp_path / "s")
    assert st.append_trials([make_record(0), make_record(1)]) == 2
    st.append_samples(samples_frame([PowerSample(1.0, 1.0, "n", "package-0", "rapl", watts=30.0)]))
    again = open_store(tmp_path / "s")
    df = again.trials()
    assert df.schema == pl.Schema(TRIAL_SCHEMA)
    assert df["trial_id"].to_list() == ["s1/i8-o8-b1/r0", "s1/i8-o8-b1/r1"]
    assert df["device_energy_j"].to_list() == [[3.0], [4.0]]
    assert again.samples().collect().schema == pl.Schema(SAMPLE_SCHEMA)
    assert again.done_trial_ids() == {"s1/i8-o8-b1/r0", "s1/i8-o8-b1/r1"}


def test_duplicate_trials_are_never_stored_twice(tmp_path):
    st = TrialStore(tmp_path)
    st.append_trials([make_record(0)])
    assert st.append_trials([make_record(0), make_record(1)]) == 1
    assert st.append_trials([make_record(1)]) == 0
    # a fresh handle (a resumed process) sees the same
    assert TrialStore(tmp_path).append_trials([make_record(0)]) == 0
    assert TrialStore(tmp_path).trials().height == 2


def test_chunks_are_atomic_no_temp_files_left(tmp_path):
    st = TrialStore(tmp_path)
    for i in range(3):
        st.append_trials([make_record(i)])
    names = os.listdir(tmp_path / "trials")
    assert len(names) == 3 and all(n.startswith("part-") and n.endswith(".parquet") for n in names)
    # a stray temp file (a writer killed mid-write) is ignored by readers
    (tmp_path / "trials" / ".tmp-part-999.parquet").write_bytes(b"garbage")
    assert TrialStore(tmp_path).trials().height == 3


def test_manifest_sweeps_and_validation(tmp_path):
    st = TrialStore(tmp_path)
    st.register_sweep("s1", SweepInfo("s1", "tiny-llama", "cache", "float32", "cpu", 0, notes=["a"]))
    st.register_sweep("s1", SweepInfo("s1", "tiny-llama", "cache", "float32", "cpu", 0, notes=["b"]))
    info = TrialStore(tmp_path).sweeps()["s1"]
    assert info.notes == ["a", "b"] and info.model == "tiny-llama"
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["schema_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="schema_version=99"):
        TrialStore(tmp_path)


def test_unwritable_and_missing_dirs(tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        target = blocker / "store"  # a path under a regular file cannot be created, even by root
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "store"
    with pytest.raises(UserError, match="cannot write"):
        TrialStore(target)
    with pytest.raises(UserError, match="no such directory"):
        open_store(tmp_path / "nope")
    with pytest.raises(UserError, match="not an llm-energy store"):
        open_store(tmp_path)


def test_a_corrupt_chunk_is_a_user_error_naming_it(tmp_path, capsys):
    from llm_energy.cli import main

    st = TrialStore(tmp_path / "s")
    for i in range(3):
        st.append_trials([make_record(i)])
    st.append_samples(samples_frame([PowerSample(1.0, 1.0, "n", "package-0", "rapl", watts=30.0)]))
    bad = sorted((tmp_path / "s" / "trials").glob("part-*.parquet"))[1]
    bad.write_bytes(b"not parquet at all, just garbage bytes")
    with pytest.raises(UserError, match=f"{bad}: unreadable Parquet chunk"):
        TrialStore(tmp_path / "s").trials()
    with pytest.raises(UserError, match=f"{bad}: unreadable Parquet chunk"):
        TrialStore(tmp_path / "s").done_trial_ids()
    for argv in (["show", str(tmp_path / "s")], ["fit", str(tmp_path / "s"), "--out", str(tmp_path / "f.json")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert str(bad) in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    bad.unlink()
    assert TrialStore(tmp_path / "s").trials().height == 2  # the rest reads once the chunk is moved out
    sbad = next((tmp_path / "s" / "samples").glob("part-*.parquet"))
    sbad.write_bytes(b"garbage")
    with pytest.raises(UserError, match=f"{sbad}: unreadable Parquet chunk"):
        TrialStore(tmp_path / "s").samples()
