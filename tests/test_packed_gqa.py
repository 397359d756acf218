"""The static backend's ``gqa`` option (packed_gqa.py): a single query token attends on the KV heads,
without transformers' copy of a grouped-query model's cache to every query head. Same attention as
repeat_kv + SDPA; the same greedy tokens as ``static``; and in the compiled decode step the attention
reads the cache with its KV heads (the copy is gone), which is what makes it faster on a GPU."""

import pytest
import torch

from llm_energy.measure.inference.backends import make_backend
from llm_energy.measure.inference.loading import load_model
from llm_energy.measure.inference.packed_gqa import NAME, applies, packed_gqa_attention, set_packed_gqa
from llm_energy.measure.inference.sizing import bucket_len


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class _Attn(torch.nn.Module):
    num_key_value_groups = 4
    is_causal = True


def _repeat_kv_attention(q, k, v, mask, groups):
    k, v = (x.repeat_interleave(groups, dim=1) for x in (k, v))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


def test_packed_attention_is_repeat_kv_attention():
    g = torch.Generator().manual_seed(0)
    b, kv, groups, length, d = 2, 3, 4, 37, 16
    q = torch.randn(b, kv * groups, 1, d, generator=g)
    k, v = torch.randn(b, kv, length, d, generator=g), torch.randn(b, kv, length, d, generator=g)
    mask = torch.zeros(b, 1, 1, length, dtype=torch.bool)
    mask[0, ..., :20], mask[1, ..., :31] = True, True  # a static cache's used part; the tail is masked
    out, weights = packed_gqa_attention(_Attn(), q, k, v, mask)
    assert weights is None and out.shape == (b, 1, kv * groups, d)
    torch.testing.assert_close(out, _repeat_kv_attention(q, k, v, mask, groups), rtol=1e-5, atol=1e-6)
    # more than one query token (prefill) goes to transformers' own sdpa: the same result as repeat_kv
    q3 = torch.randn(b, kv * groups, 3, d, generator=g)
    m3 = mask.expand(b, 1, 3, length)
    torch.testing.assert_close(packed_gqa_attention(_Attn(), q3, k, v, m3)[0], _repeat_kv_attention(q3, k, v, m3, groups),
                               rtol=1e-5, atol=1e-6)


def _sdpa_key_heads(backend, tin, tout):
    """The key's head count at every SDPA call of the backend's traced decode step (one graph)."""
    tok, pos = torch.ones((1, 1), dtype=torch.long), torch.full((1, 1), tin)
    with torch.inference_mode():
        ex = torch._dynamo.explain(backend._decode_step)(tok, pos, backend._caches[(1, bucket_len(tin + tout))])
    assert ex.graph_count == 1 and ex.graph_break_count == 0
    return [n.args[1].meta["example_value"].shape[1] for n in ex.graphs[0].graph.nodes
            if n.op == "call_function" and "scaled_dot_product_attention" in str(n.target)]


@pytest.mark.parametrize("preset,variant", [("tiny-mistral", "static+gqa"), ("tiny-mixtral", "static+gqa"),
                                            ("tiny-mistral", "static+gqa+math")])
def test_gqa_static_backend_gives_the_static_tokens_and_reads_the_kv_heads(preset, variant):
    ref = make_backend("static", load_model(preset, "cpu", "float32"))
    ids = ref.make_prompt(1, 9, seed=5)
    ref.prepare(1, 9, 8)
    ref.generate(ids, 8)
    b = make_backend(variant, load_model(preset, "cpu", "float32"))
    assert b.name == variant and b.packed_gqa and b.loaded.model.config._attn_implementation == NAME
    b.prepare(1, 9, 8)
    r = b.generate(ids, 8)
    assert r.tout_actual == 8 and b.compiles == 1
    assert b.last_tokens[:, -1].tolist() == ref.last_tokens[:, -1].tolist()
    cfg = b.loaded.config
    layers, heads, kv = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
    assert _sdpa_key_heads(ref, 9, 8) == [heads] * layers  # the copy: every query head's own K and V
    assert _sdpa_key_heads(b, 9, 8) == [kv] * layers  # on the KV heads


def test_backends_sharing_a_model_restore_their_attention():
    lm = load_model("tiny-mistral", "cpu", "float32")
    gqa, plain = make_backend("static+gqa", lm), make_backend("cache", lm)
    ids = plain.make_prompt(1, 9, seed=2)
    plain.generate(ids, 4)
    assert lm.model.config._attn_implementation == "sdpa"
    gqa.generate(ids, 4)
    assert lm.model.config._attn_implementation == NAME
    assert gqa.last_tokens[:, -1].tolist() == plain.last_tokens[:, -1].tolist()


def test_gqa_leaves_models_it_does_not_apply_to():
    for preset in ("tiny-llama", "tiny-falcon"):  # as many KV heads as query heads; falcon's own attention
        lm = load_model(preset, "cpu", "float32")
        assert not applies(lm.model) and not set_packed_gqa(lm.model, True)
        b = make_backend("static+gqa", lm)
        assert b.name == "static+gqa" and not b.packed_gqa and lm.model.config._attn_implementation != NAME


@pytest.mark.gpu
def test_gqa_variants_on_cuda_give_the_static_tokens():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    ids, toks = None, {}
    for name in ("static", "static+gqa", "static+gqa+math", "static+fused+gqa+cdt"):
        b = make_backend(name, load_model("tiny-mistral", "cuda:0", "float32"))
        ids = b.make_prompt(1, 9, seed=5) if ids is None else ids
        b.prepare(1, 9, 8)
        assert b.generate(ids, 8).tout_actual == 8
        toks[name] = b.last_tokens[:, -1].tolist()
    assert len(set(map(tuple, toks.values()))) == 1, toks
