"""``benchmarks.gpu.gqa_attention``: the four decode-attention variants it times (the copy, packed, packed
as matrix products, the copy as matrix products) give the same result, on CPU at a small size (the script runs on the GPU machine)."""

import json

from benchmarks.gpu.gqa_attention import main


def test_variants_agree_and_the_table_prints(tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    assert main(["--device", "cpu", "--quick", "--presets", "mistral-7b", "--buckets", "256",
                 "--jsonl", str(out)]) == 0
    (row,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert row["layers"] == 2 and row["bucket"] == 256
    assert row["kv_gb"] == 2 * 2 * 8 * 256 * 128 * 4 / 1e9  # K and V, 2 layers, 8 KV heads, float32
    for v in ("gqa", "gqa+math", "copy+math"):
        assert row[f"{v}_maxdiff"] < 1e-5 and row[f"{v}_compiled_ms"] > 0
    assert row["copy_maxdiff"] == 0.0
    assert "| mistral-7b | 256 |" in capsys.readouterr().out
