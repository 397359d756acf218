import json

import numpy as np
import polars as pl
import pytest

from llm_energy.errors import UserError
from llm_energy.plan.workload import (
    GRID_TOKENS,
    Workload,
    aggregate,
    bin_classes,
    load_workload,
    parse_column_mapping,
    save_workload,
    synth_workload,
)


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_save_load_roundtrip(tmp_path, ext):
    w = synth_workload("mix", 500, seed=3)
    path = save_workload(w, tmp_path / f"w.{ext}")
    back = load_workload(path)
    assert np.array_equal(back.tin, w.tin) and np.array_equal(back.tout, w.tout)
    assert back.tin.dtype == np.int64


def test_column_aliases_and_mapping(tmp_path):
    f = tmp_path / "azure.csv"
    f.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,374,44\n2023-11-16 18:15:50,396,109\n")
    w = load_workload(f)  # recognised without a mapping
    assert w.tin.tolist() == [374, 396] and w.tout.tolist() == [44, 109]
    assert load_workload(f, parse_column_mapping("azure")).tout.tolist() == [44, 109]
    g = tmp_path / "other.jsonl"
    g.write_text("\n".join(json.dumps({"p": a, "g": b}) for a, b in [(5, 6), (7, 8)]) + "\n")
    w = load_workload(g, parse_column_mapping("tin=p,tout=g"))
    assert w.tin.tolist() == [5, 7] and w.tout.tolist() == [6, 8]
    with pytest.raises(UserError, match="no tin/tout columns"):
        load_workload(g)
    with pytest.raises(UserError, match=r"column 'q' \(for tin\) not found"):
        load_workload(g, parse_column_mapping("tin=q,tout=g"))
    with pytest.raises(UserError, match="--columns"):
        parse_column_mapping("input=p")


@pytest.mark.parametrize("body,match", [
    ("tin,tout\n5,6\n,7\n", r"row 1: tin=NaN: missing, NaN"),
    ("tin,tout\n5,6\nNaN,7\n", r"row 1: tin=NaN: missing, NaN"),
    ("tin,tout\n5,6\n4,-2\n", r"row 1: tout=-2: negative token count"),
    ("tin,tout\n5,6.5\n", r"row 0: tout=6.5: token counts must be whole numbers"),
    ("tin,tout\n5,6\nabc,7\n", r"row 1: tin='abc': not a number"),
    ("tin,tout\n", r"no queries"),
])
def test_bad_token_values_name_row_column_value(tmp_path, body, match):
    f = tmp_path / "bad.csv"
    f.write_text(body)
    with pytest.raises(UserError, match=match) as e:
        load_workload(f)
    assert str(f) in str(e.value)


def test_bad_paths(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_workload(tmp_path / "none.csv")
    (tmp_path / "w.txt").write_text("tin,tout\n1,2\n")
    with pytest.raises(UserError, match="unknown format"):
        load_workload(tmp_path / "w.txt")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="cannot read"):
        load_workload(tmp_path / "broken.parquet")


def test_aggregate_is_exact_and_maps_queries_back():
    w = Workload(np.array([5, 3, 5, 5, 9, 3]), np.array([1, 2, 1, 2, 0, 2]))
    c = aggregate(w)
    assert list(zip(c.tin.tolist(), c.tout.tolist(), c.count.tolist())) == [(3, 2, 2), (5, 1, 2), (5, 2, 1), (9, 0, 1)]
    assert np.array_equal(c.tin[c.query_class], w.tin) and np.array_equal(c.tout[c.query_class], w.tout)
    assert c.n_queries == w.n_queries


def test_binning_keeps_counts_and_token_sums():
    w = synth_workload("lognormal", 5000, seed=1)
    c = aggregate(w)
    b = bin_classes(c, 8)
    assert b.bins.n_classes <= 64 and b.bins.n_queries == c.n_queries
    # representatives are count-weighted means: total tin and tout are preserved
    assert np.isclose((b.bins.count * b.bins.tin).sum(), w.tin.sum())
    assert np.isclose((b.bins.count * b.bins.tout).sum(), w.tout.sum())
    # every class lies inside its bin's edges, and bins are log-spaced
    ratios = b.tin_edges[1:] / b.tin_edges[:-1]
    assert np.allclose(ratios, ratios[0])
    counts = np.bincount(b.class_bin, weights=c.count)
    assert np.array_equal(counts.astype(np.int64), b.bins.count)
    assert np.array_equal(b.bins.query_class, b.class_bin[c.query_class])
    with pytest.raises(UserError, match="--bins"):
        bin_classes(c, 0)


def test_synth_kinds_are_seeded_and_shaped():
    a, b = synth_workload("mix", 2000, seed=5), synth_workload("mix", 2000, seed=5)
    assert np.array_equal(a.tin, b.tin) and not np.array_equal(a.tin, synth_workload("mix", 2000, seed=6).tin)
    g = synth_workload("grid", 81 * 3, seed=0)
    cells = pl.DataFrame({"tin": g.tin, "tout": g.tout}).group_by("tin", "tout").len()
    assert cells.height == 81 and set(cells["len"].to_list()) == {3} and set(g.tin.tolist()) == set(GRID_TOKENS)
    chat, code = synth_workload("chat", 4000, seed=0), synth_workload("code", 4000, seed=0)
    assert np.median(code.tin) > 2 * np.median(chat.tin) and np.median(code.tout) < np.median(chat.tout) / 2
    for kind in ("lognormal", "chat", "code", "mix"):
        w = synth_workload(kind, 3000, seed=2, max_tokens=1024)
        assert w.tin.min() >= 1 and w.tout.min() >= 1 and max(w.tin.max(), w.tout.max()) <= 1024
    with pytest.raises(UserError, match="--kind"):
        synth_workload("poisson", 10)
