"""``benchmarks.gpu.plot_buckets``: the per-bucket decode figure from measured stores (docs/h200/decode_by_bucket.png),
on the committed llama-2-7b store; an erratum store (no decode step read its cache) draws nothing."""

from pathlib import Path

from benchmarks.gpu.plot_buckets import main

H200 = Path(__file__).resolve().parents[1] / "data" / "h200"


def test_the_figure_is_written_from_a_store_that_read_its_cache(tmp_path, capsys):
    out = tmp_path / "b.png"
    assert main([str(H200 / "v2" / "grid-static"), "--bw", "4.265", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert f"wrote {out}: llama-2-7b" in capsys.readouterr().out


def test_an_erratum_store_draws_nothing(tmp_path, capsys):
    out = tmp_path / "b.png"
    assert main([str(H200 / "mistral-7b-static"), "--bw", "4.265", "--out", str(out)]) == 2
    assert not out.exists() and "no store gave bucket rows" in capsys.readouterr().err
