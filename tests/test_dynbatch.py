"""``static+dynbatch``: the decode step compiled once per length bucket for every batch >= 2 (issue 13: the
planned batch sweeps recompiled 35-95 s per batch size on the H200). ``static`` compiles once per bucket x
batch; with ``dynbatch`` batch 1 compiles as ``static`` does and batches 2, 4, 8 share one compile (on CUDA
each records a CUDA graph of its own). Tokens equal ``static``'s. These tests fail if the option does nothing."""

import pytest
import torch

from llm_energy.measure.inference.backends import StaticBackend, make_backend
from llm_energy.measure.inference.compiles import compile_count
from llm_energy.measure.inference.fusion import parse_static
from llm_energy.measure.inference.loading import load_model


@pytest.fixture(autouse=True)
def _fresh_dynamo(monkeypatch):
    """One thread; dynamo's compiled code is shared by every backend of equal shapes in a process (an earlier
    test's static decode step would serve this one's): counted from a fresh state."""
    torch.set_num_threads(1)
    monkeypatch.setattr(StaticBackend, "_setting_in_process", None)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def decode_tokens(b, ids, tout):
    """Every token one generation of ``ids`` decodes (the decode step's outputs recorded), [batch, tout - 1]."""
    toks, orig = [], b._decode

    def record(tok, pos, cache):
        nxt = orig(tok, pos, cache)
        toks.append(nxt.clone())
        return nxt

    b._decode = record
    try:
        b.generate(ids, tout)
    finally:
        b._decode = orig
    return torch.cat(toks, 1).tolist()


def _sweep(name, loaded, batches, tin=8, tout=10):
    """Per batch, in one bucket (256): (dynamo frames compiled by prepare and generate, the window's compiles,
    the generated tokens)."""
    b = make_backend(name, loaded)
    assert b.name == name
    out = {}
    for batch in batches:
        before = compile_count()
        b.prepare(batch, tin, tout)
        mid = compile_count()
        toks = decode_tokens(b, b.make_prompt(batch, tin, seed=batch), tout)
        window = compile_count() - mid
        out[batch] = ((compile_count() - before).frames, window, toks)
    assert set(b._caches) == {(batch, 256) for batch in batches}
    return out


def _check(model, ref_batches, dyn_batches, dyn_frames, device="cpu"):
    """static over ``ref_batches``, then static+dynbatch over ``dyn_batches`` (from a fresh dynamo): static
    compiles once per batch, dynbatch ``dyn_frames``; no compile in a window; equal tokens where both ran.
    Returns the model."""
    loaded = load_model(model, device, "float32")
    ref = _sweep("static", loaded, ref_batches)
    torch._dynamo.reset()
    dyn = _sweep("static+dynbatch", loaded, dyn_batches)
    assert [v[0] for v in ref.values()] == [1] * len(ref_batches), ref  # static: one decode compile per batch
    assert [v[0] for v in dyn.values()] == dyn_frames, {b: v[0] for b, v in dyn.items()}
    for batch, (_, window, toks) in (*ref.items(), *dyn.items()):
        assert not window, (batch, window.describe())  # every compile (and CUDA graph) in prepare
    assert set(ref) & set(dyn) == set(ref_batches)
    for batch in ref_batches:
        assert dyn[batch][2] == ref[batch][2], batch
    return loaded


def test_label():
    assert parse_static("static+dynbatch+fused") == ("fused", "dynbatch")
    lm = load_model("tiny-llama", "cpu", "float32")
    assert make_backend("static", lm)._mark_batch is None
    assert make_backend("static+dynbatch", lm)._mark_batch is not None


def test_llama_one_decode_compile_for_batches_2_4_8_and_the_static_tokens():
    """static: batches 1, 2, 4 compile once each; dynbatch: batch 1 once, then 2, 4 and 8 once together."""
    loaded = _check("tiny-llama", [1, 2, 4], [1, 2, 4, 8], [1, 1, 0, 0])
    # static after dynbatch in one process compiles its own batch-8 step (StaticBackend._isolate_attention resets
    # dynamo), rather than running dynbatch's dynamic graph under the static label
    assert [v[0] for v in _sweep("static", loaded, [8]).values()] == [1]


@pytest.mark.inductor  # inductor too must keep the batch dim dynamic: batch 4 served by batch 2's compile
def test_mistral_dynbatch_gives_the_static_tokens():
    """static at batch 2 only (each static batch is an inductor compile of its own, ~10 s here)."""
    _check("tiny-mistral", [2], [2, 4], [1, 0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA")
def test_on_cuda_one_compile_for_batches_2_4_8_each_its_own_cuda_graph():
    """reduce-overhead (CUDA graphs): dynbatch compiles the decode step once for batches 2, 4, 8 (each records
    a CUDA graph in prepare, none in a window), static once per batch; tokens equal."""
    _check("tiny-llama", [1, 2, 4, 8], [1, 2, 4, 8], [1, 1, 0, 0], device="cuda:0")
