"""``static+cprefill``: the static backend's prefill compiled with dynamic shapes (gpt-fast's
``compile_prefill``). The eager prefill is CPU-bound on the H200 (llama-2-7b, 8-token prompt: 40-56 ms
against a 5 ms decode step, data/h200/plans/kv_check.txt). The compiled prefill must give the
``static`` tokens and compile only in ``prepare()``, never inside a measurement window, whatever the
prompt length and bucket (the profiler flags a trial whose window compiled: compiles.py)."""

import pytest
import torch

from llm_energy.measure.inference.backends import BACKENDS, StaticBackend, make_backend
from llm_energy.measure.inference.compiles import compile_count
from llm_energy.measure.inference.fusion import parse_static, static_label
from llm_energy.measure.inference.loading import load_model


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_label_and_what_it_compiles():
    assert parse_static("static+cprefill+fused") == ("fused", "cprefill")
    assert static_label(("cprefill", "fused")) == "static+fused+cprefill"
    assert "static+cprefill" not in BACKENDS  # not measured yet
    lm = load_model("tiny-llama", "cpu", "float32")
    plain, comp = make_backend("static", lm), make_backend("static+cprefill", lm)
    assert isinstance(comp, StaticBackend) and comp.name == "static+cprefill"
    assert plain._prefill == plain._prefill_step  # static's prefill stays eager
    assert comp._prefill != comp._prefill_step and comp._decode is not comp._prefill


def _window(b, batch, tin, tout, seed=5):
    """One generation after ``prepare``: its last tokens and what torch compiled during it."""
    b.prepare(batch, tin, tout)
    before = compile_count()
    r = b.generate(b.make_prompt(batch, tin, seed=seed), tout)
    got = compile_count() - before
    assert (r.tin_actual, r.tout_actual) == (tin, tout)
    return b.last_tokens[:, -1].tolist(), got


def test_compiled_prefill_compiles_only_in_prepare_and_gives_the_static_tokens():
    """Prompts of 1 (a specialised shape), 8, 13, 40 and 100 tokens in the 256 bucket, 200 in the 512
    bucket, batch 2 at 13 and 200; then the 256 bucket's again after the 512 bucket ran."""
    # dynamo's compiled code is shared by every model of the same shapes in a process (an earlier test's
    # tiny-llama static decode step would serve this one's): counted from a fresh state
    torch._dynamo.reset()
    lm = load_model("tiny-llama", "cpu", "float32")
    ref, b = make_backend("static", lm), make_backend("static+cprefill", lm)
    cells = [(1, 8, 16), (1, 1, 16), (1, 13, 16), (1, 40, 16), (1, 100, 16), (2, 13, 16), (1, 200, 100),
             (2, 200, 100), (1, 13, 16), (1, 1, 16)]
    before = compile_count()
    for batch, tin, tout in cells:
        toks, got = _window(b, batch, tin, tout)
        assert not got, f"{(batch, tin, tout)}: {got.describe()} inside the window"
        assert toks == _window(ref, batch, tin, tout)[0], (batch, tin, tout)
    assert set(b._caches) == {(1, 256), (2, 256), (1, 512), (2, 512)} and b.compiles == 4
    assert (compile_count() - before).frames >= 4 + 2  # 4 decode compiles, and the prefill's in prepare


@pytest.mark.parametrize("name", ["static+cprefill", "static+fused+cprefill"])
def test_mistral_compiled_prefill_gives_the_static_tokens(name):
    lm = load_model("tiny-mistral", "cpu", "float32")
    ref, b = make_backend("static", lm), make_backend(name, load_model("tiny-mistral", "cpu", "float32"))
    assert b.name == name
    for tin in (9, 30, 1):
        toks, got = _window(b, 1, tin, 8, seed=4)
        assert not got, f"tin {tin}: {got.describe()} inside the window"
        assert toks == _window(ref, 1, tin, 8, seed=4)[0], tin


def test_profile_runs_static_cprefill_and_stores_its_label(tmp_path):
    from llm_energy.cli.main import main
    from llm_energy.trials.store import load_trials

    out = tmp_path / "s"
    assert main(["profile", "--model", "tiny-llama", "--backend", "static+cprefill+fused", "--tin", "8,20",
                 "--tout", "4", "--repeats", "1", "--warmups", "0", "--device", "cpu", "--node-type", "cpu", "--threads", "1", "--idle-s", "0.2",
                 "--min-window-s", "0", "--out", str(out), "--no-live"]) == 0
    df = load_trials([str(out)])
    assert df["backend"].unique().to_list() == ["static+fused+cprefill"] and df.height == 2
    assert not any("compiled" in q for q in df["quality"].to_list())


def test_decode_limit_variant_rows_report_the_prefill(capsys):
    """``decode_limit --variants base,cprefill``: each row has its prefill ms (time to the first token at
    its tin) beside the decode's, and both tables print it; rows of another tin are compared apart."""
    from benchmarks.gpu.decode_limit import live_variants, print_table, print_variants, variant_labels

    labels = variant_labels("base,cprefill", "static")
    assert labels == ["static", "static+cprefill"]
    rows = list(live_variants("tiny-llama", labels, 1e12, 8, 5, 0.0, device="cpu"))
    assert [r["backend"] for r in rows] == labels
    for r in rows:
        assert r["tin"] == 8 and 0 < r["prefill_ms_min"] <= r["prefill_ms"] <= r["prefill_ms_max"]
        assert {"ms_per_step", "compile_s", "limit_ms", "ratio", "j_per_token"} <= set(r)  # the keys rows had
    other = {**rows[0], "tin": 1024, "prefill_ms": 99.0}
    print_table(rows)
    print_variants([*rows, other])
    out = capsys.readouterr().out
    assert "| prefill ms |" in out and f"| {rows[1]['prefill_ms']:.1f} @ 8 |" in out
    assert "| 99.0 @ 1024 |" not in out  # alone at its tin: nothing to compare it with


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA")
def test_on_cuda_compiled_prefill_gives_the_static_tokens_and_compiles_only_in_prepare():
    """The decode step's CUDA graphs (reduce-overhead) with a prefill compiled without them, dynamic."""
    toks = {}
    for name in ("static", "static+cprefill"):
        b = make_backend(name, load_model("tiny-llama", "cuda:0", "float32"))
        for batch, tin, tout in [(1, 9, 8), (1, 1, 8), (1, 100, 8), (2, 40, 8), (1, 9, 8)]:
            t, got = _window(b, batch, tin, tout)
            assert not got, f"{name} {(batch, tin, tout)}: {got.describe()} inside the window"
            toks.setdefault((batch, tin), {})[name] = t
    for cell, by in toks.items():
        assert len({tuple(v) for v in by.values()}) == 1, (cell, by)
