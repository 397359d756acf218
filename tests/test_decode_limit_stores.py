"""``benchmarks.gpu.decode_limit --stores``: ms/step from measured stores leaves out the trials ``fit``
leaves out (the H200 grid's two trials that compiled inside their window ran at 32 and 19 ms/step, and
took the range's top), and adds one row per static-cache bucket whose limit counts the KV bytes a step
reads there. On the committed store ``data/h200/v2/grid-static`` (llama-2-7b, 162 trials)."""

from pathlib import Path

import pytest

from benchmarks.gpu.decode_limit import from_stores, print_buckets
from llm_energy.measure.inference.presets import get_preset

STORE = Path(__file__).resolve().parents[1] / "data" / "h200" / "v2" / "grid-static"
BW = 4.242e12


@pytest.fixture(scope="module")
def rows():
    return from_stores([str(STORE)], BW)


def test_store_rows_leave_out_the_compiled_trials(rows, capsys):
    main = [r for r in rows if r.get("kind") is None]
    assert len(main) == 1 and main[0]["preset"] == "llama-2-7b" and main[0]["backend"] == "static"
    assert main[0]["ms_max"] < 6.0  # the two compiled-in-window trials (19-32 ms/step) are gone
    trusted = [r for r in rows if r.get("kind") == "bucket"]
    assert sum(r["n_trials"] for r in trusted) == main[0]["n_trials"]


def test_bucket_rows_add_the_kv_bytes_of_the_bucket(rows, capsys):
    buckets = [r for r in rows if r.get("kind") == "bucket"]
    assert [r["bucket"] for r in buckets] == [256, 512, 1024, 2048, 4096]
    kv = get_preset("llama-2-7b").kv_bytes_per_token
    for r in buckets:
        assert r["kv_b"] == r["bucket"] * kv
        assert r["limit_kv_ms"] == pytest.approx(1e3 * (r["read_b"] + r["kv_b"]) / BW)
        assert r["ratio_kv"] == pytest.approx(r["ms_per_step"] / r["limit_kv_ms"])
    ms = [r["ms_per_step"] for r in buckets]
    assert ms == sorted(ms)  # a longer bucket reads more cache: measured, every step slower
    print_buckets(rows)
    assert "| llama-2-7b | static | 4096 |" in capsys.readouterr().out


def test_no_bucket_rows_for_trials_that_read_no_kv_cache(capsys):
    """An erratum store (``kv-cache-ignored``: no decode step read the cache) keeps its row, but gets no
    bucket rows: their limit would add bucket x KV bytes the steps never read (the old code printed five,
    whose x limit fell with the bucket only because the limit grew)."""
    old = STORE.parent.parent / "mistral-7b-static"
    rows = from_stores([str(old)], BW)
    assert [r.get("kind") for r in rows] == [None] and rows[0]["n_trials"] == 18  # tout >= 64
    assert "no bucket rows for 18 mistral-7b static trial(s) of erratum kv-cache-ignored" in capsys.readouterr().err


def test_compile_seconds_come_from_the_stores_prepare_columns(tmp_path, capsys):
    """A store measured with ``prepare_s``: each row's compile s is the median of its preset's recorded
    batch-1 compiles (each bucket row its own bucket's); a store from before the columns has none."""
    from llm_energy.cli import main

    out = tmp_path / "s"
    assert main(["profile", "--model", "tiny-llama", "--backend", "static", "--tin", "8", "--tout", "100,300",
                 "--repeats", "1", "--warmups", "0", "--device", "cpu", "--threads", "1", "--idle-s", "0.1",
                 "--min-window-s", "0.05", "--no-live", "--out", str(out)]) == 0
    from llm_energy.trials.store import open_store

    df = open_store(out).trials()
    compiled = {int(t + o): s for t, o, s, c in zip(df["tin"], df["tout"], df["prepare_s"], df["prepare_compiled"]) if c}
    assert sorted(compiled) == [108, 308]  # one compile per bucket (256, 512)
    rows = from_stores([str(out)], BW)
    by = {r.get("bucket"): r for r in rows}
    assert by[256]["compile_s"] == pytest.approx(compiled[108]) and by[512]["compile_s"] == pytest.approx(compiled[308])
    assert by[None]["compile_s"] == pytest.approx((compiled[108] + compiled[308]) / 2)
    assert all(r["compile_s"] is None for r in from_stores([str(STORE)], BW))


def test_bucket_rows_of_a_gqa_store_count_the_kv_bytes_its_cache_holds(capsys):
    """falcon-40b's cache holds its 128 query heads under ``static`` but its 8 KV groups under ``static+gqa``
    (packed_gqa.py) with the transformers the GPU machine runs (5.17), and 8 groups either way from 5.25:
    each bucket row's KV bytes follow the backend and the transformers its trials recorded (none recorded: the
    older layout), as the memory check's follow the installed one. Trials of both layouts in one bucket get no
    row (a line on stderr)."""
    import json

    import polars as pl

    from benchmarks.gpu.decode_limit import _bucket_rows
    g = pl.DataFrame({"tin": [8, 2000], "tout": [100, 100], "decode_s": [0.5, 0.6], "batch": [1, 1],
                      "energy_j": [1.0, 1.0]})

    def ran(*versions):
        return g.with_columns(pl.lit(backend).alias("backend"), pl.Series("versions", [json.dumps({"transformers": v, "kv_cache_keyword": "cache"})
                                                     for v in versions]))

    for backend, heads, heads_525 in (("static", 128, 8), ("static+gqa", 8, 8), ("static+fused+gqa+math", 8, 8)):
        for trials, want in ((ran("5.17.0", "5.17.0"), heads), (ran("5.25.0", "5.25.0"), heads_525),
                             (g, heads)):  # no versions recorded: the older layout
            rows = _bucket_rows("falcon-40b", backend, "s", trials, 1, 1, BW)
            assert [(r["bucket"], r["kv_b"]) for r in rows] == [(b, b * 2 * 60 * want * 64 * 2) for b in (256, 4096)]
    mixed = ran("5.17.0", "5.25.0").vstack(ran("5.25.0", "5.17.0"))  # each bucket holds one trial of each
    assert _bucket_rows("falcon-40b", "static", "s", mixed, 1, 1, BW) == []
    assert "no 256-token bucket row for falcon-40b static: its trials ran transformers versions" in capsys.readouterr().err
    assert len(_bucket_rows("falcon-40b", "static+gqa", "s", mixed, 1, 1, BW)) == 2  # the same bytes either way
