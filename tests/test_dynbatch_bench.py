"""benchmarks/gpu/dynbatch (session.sh's dynbatch step) on the CPU: its rows, and static+dynbatch's batch-4
decode compiled by its batch-2 compile (no compile counted at 4), with static's tokens."""

from benchmarks.gpu.dynbatch import main


def test_dynbatch_bench_rows(tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    assert main(["--preset", "tiny-llama", "--device", "cpu", "--dtype", "float32", "--static-batches", "4",
                 "--dyn-batches", "2,4", "--tout", "6", "--jsonl", str(out)]) == 0
    import json

    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["backend"], r["batch"]) for r in rows] == [("static", 4), ("static+dynbatch", 2), ("static+dynbatch", 4)]
    assert rows[2]["tokens_as_static"] is True and rows[1]["tokens_as_static"] is None
    assert rows[2]["sequences_as_static"] == "4/4" and rows[1]["sequences_as_static"] is None
    assert rows[0]["compiles"] != "no compiles" and rows[1]["compiles"] != "no compiles"
    assert rows[2]["compiles"] == "no compiles"  # batch 4 reuses batch 2's compile
    assert all(r["window"] == "no compiles" for r in rows)
    assert all(r["ms_step"] > 0 for r in rows)
