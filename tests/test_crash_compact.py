"""Issue 16: compaction is idempotent and self-cleaning; samples() never returns a crashed compaction's duplicates."""

import json
from pathlib import Path

import polars as pl
import pytest

from benchmarks.crash_kill import kill_at
from llm_energy.trials import store as store_mod
from llm_energy.trials.schema import SAMPLE_SCHEMA, TRIAL_SCHEMA
from llm_energy.trials.store import COMPACTING, TrialStore, open_store

REPO = Path(__file__).resolve().parents[1]


def _trials(ids):
    rows = []
    for i in ids:
        r = {k: None for k in TRIAL_SCHEMA}
        r.update(trial_id=f"t{i}", sweep_id="s", tin=8, tout=8, energy_j=1.0 + i, runtime_s=0.5)
        rows.append(r)
    return pl.DataFrame(rows, schema=TRIAL_SCHEMA)


def _samples(start, n=50):
    rows = []
    for i in range(start, start + n):
        r = {k: None for k in SAMPLE_SCHEMA}
        r.update({k: v for k, v in dict(node="n", session="x", device="cpu", source="rapl", t_mono=float(i),
                                        watts=10.0 + i, joules=float(i)).items() if k in SAMPLE_SCHEMA})
        rows.append(r)
    return pl.DataFrame(rows, schema=SAMPLE_SCHEMA)


@pytest.fixture
def store(tmp_path):
    st = TrialStore(tmp_path / "s", writer="test")
    for k in range(4):
        st.append_samples(_samples(k * 50))
        st.append_trials(_trials(range(k * 5, k * 5 + 5)))
    st.close()
    return tmp_path / "s"


def _counts(root):
    s = open_store(root)
    t, smp = s.trials(), s.samples().collect()
    return t.height, t["trial_id"].n_unique(), smp.height, smp.unique().height


def test_killed_after_writing_merged_chunks_samples_has_no_duplicates_and_next_open_cleans(store, monkeypatch):
    assert _counts(store) == (20, 20, 200, 200)
    st = TrialStore(store, writer="compact")
    monkeypatch.setattr(st, "_finish_compaction", lambda j: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        st.compact()
    st.close()
    monkeypatch.undo()
    assert (store / COMPACTING).exists()
    assert _counts(store) == (20, 20, 200, 200)  # readers see one side only (old code: 400 samples)
    TrialStore(store, writer="next").close()  # the next writer finishes it
    assert not (store / COMPACTING).exists()
    assert len(list((store / "samples").glob("part-*"))) == 1 and len(list((store / "trials").glob("part-*"))) == 1
    assert _counts(store) == (20, 20, 200, 200)


def test_killed_before_every_merged_chunk_landed_is_undone(store, monkeypatch):
    st = TrialStore(store, writer="compact")
    real = st._write_chunk
    calls = []

    def write(kind, df, name=None):
        calls.append(kind)
        if kind == "samples":
            raise KeyboardInterrupt()
        return real(kind, df, name)

    monkeypatch.setattr(st, "_write_chunk", write)
    with pytest.raises(KeyboardInterrupt):
        st.compact()
    st.close()
    assert _counts(store) == (20, 20, 200, 200)
    TrialStore(store, writer="next").close()
    assert not (store / COMPACTING).exists()
    assert len(list((store / "trials").glob("part-*"))) == 4  # the merged trials chunk removed, the old kept
    assert _counts(store) == (20, 20, 200, 200)


def test_tmp_leftovers_are_removed_and_compact_twice_is_idempotent(store):
    (store / "samples" / ".tmp-part-0-dead.parquet").write_bytes(b"half a chunk")
    (store / "trials" / ".tmp-part-0-dead.parquet").write_bytes(b"half")
    (store / ".tmp-manifest.json-dead").write_text("{")
    st = TrialStore(store, writer="compact")
    assert st.compact()[:2] == (20, 200)
    assert st.compact() == (20, 200, 2)
    st.close()
    assert not [p for p in store.rglob(".tmp-*")]
    assert _counts(store) == (20, 20, 200, 200)


def test_a_reader_does_not_clean_what_a_live_writer_is_writing(store):
    tmp = store / "samples" / ".tmp-part-live.parquet"
    tmp.write_bytes(b"being written")
    open_store(store).samples().collect()
    assert tmp.exists()


def test_a_garbage_journal_is_one_line(store):
    (store / COMPACTING).write_text("[1, 2")
    from llm_energy.errors import UserError
    with pytest.raises(UserError, match="compaction journal"):
        open_store(store).trials()


def test_sigkill_compact_at_random_points(store):
    for delay in (0.3, 0.6, 0.9, 1.2, 1.5):
        st = TrialStore(store, writer="test")
        st.append_samples(_samples(int(delay * 1000), 5))
        st.close()
        kill_at(["compact", store], delay)
        t, tu, s, su = _counts(store)
        assert (t, tu) == (20, 20) and s == su
    TrialStore(store, writer="test").close()
    assert not list(store.rglob(".tmp-*")) and not (store / COMPACTING).exists()
    assert json.loads((store / "manifest.json").read_text())["kind"] == store_mod.STORE_KIND
