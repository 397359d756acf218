"""The static backend's variants (fusion.py): labels, compile settings, and fused projections that
give the unfused model's logits (float32, CPU) for a prefill and several decode steps."""

import inspect

import pytest
import torch

from llm_energy.errors import UserError
from llm_energy.measure.inference.backends import BACKENDS, StaticBackend, cache_keyword, make_backend
from llm_energy.measure.inference.fusion import (
    FusedInput, compile_kwargs, fuse_projections, is_fused, parse_static, set_fused, static_label,
)
from llm_energy.measure.inference.loading import load_model
from llm_energy.measure.inference.sizing import kv_cache_len


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_labels_are_canonical_and_unknown_options_refused():
    assert parse_static("static") == () and parse_static("cache") is None
    assert parse_static("static+cdt+fused") == ("fused", "cdt")
    assert static_label(("cdt", "fused")) == "static+fused+cdt" == static_label(parse_static("static+cdt+fused"))
    for bad in ("static+turbo", "static+fused+fused"):
        with pytest.raises(UserError, match="static options are"):
            parse_static(bad)
    assert all(parse_static(b) is not None for b in BACKENDS if b.startswith("static"))


def test_static_variants_hold_a_static_cache_bucket():
    assert kv_cache_len("static+fused+cdt", 300) == kv_cache_len("static", 300) == 512
    assert kv_cache_len("cache", 300) == 300


def test_compile_settings_per_variant():
    assert compile_kwargs((), True) == {"mode": "reduce-overhead"} and compile_kwargs((), False) == {"mode": None}
    opts = compile_kwargs(("fused", "cdt"), True)["options"]
    assert opts["triton.cudagraphs"] and opts["coordinate_descent_tuning"]
    assert compile_kwargs(("ma",), True) == {"mode": "max-autotune"}
    assert compile_kwargs(("ma", "combo"), True)["options"] == {"max_autotune": True, "triton.cudagraphs": True,
                                                                "coordinate_descent_tuning": True, "combo_kernels": True}
    assert compile_kwargs(("cdt",), False) == {"options": {"coordinate_descent_tuning": True,
                                                           "triton.unique_kernel_names": True}}


def _logits_over_steps(model, ids, steps=4):
    """Prefill then ``steps`` greedy decode steps on a StaticCache; the logits of each call."""
    from transformers import StaticCache

    kw = cache_keyword(model)
    cache = StaticCache(config=model.config, max_cache_len=64)
    out = []
    with torch.inference_mode():
        logits = model(input_ids=ids, use_cache=True, **{kw: cache}).logits
        out.append(logits)
        for i in range(steps):
            tok = logits[:, -1:].argmax(-1)
            pos = torch.full((ids.shape[0], 1), ids.shape[1] + i)
            logits = model(input_ids=tok, position_ids=pos, use_cache=True, **{kw: cache}).logits
            out.append(logits)
    return out


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-mistral"])
def test_fused_model_gives_the_unfused_logits(preset):
    ref, fused = load_model(preset, "cpu", "float32"), load_model(preset, "cpu", "float32")  # same seed: same weights
    n_params = sum(p.numel() for p in ref.model.parameters())
    assert fuse_projections(fused.model) == 2 * ref.config.num_hidden_layers and is_fused(fused.model)
    assert sum(p.numel() for p in fused.model.parameters()) == n_params  # the same weights, laid out differently
    assert fuse_projections(fused.model) == 0  # idempotent
    layer = fused.model.model.layers[0]
    assert isinstance(layer.self_attn, FusedInput) and isinstance(layer.mlp, FusedInput)
    ids = torch.randint(5, ref.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(3))
    a, b = _logits_over_steps(ref.model, ids), _logits_over_steps(fused.model, ids)
    assert len(a) == 5 and a[0].shape == (2, 11, ref.config.vocab_size)
    for x, y in zip(a, b):
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-5)
    assert [x[:, -1].argmax(-1).tolist() for x in a] == [y[:, -1].argmax(-1).tolist() for y in b]


def test_falcon_has_nothing_to_fuse():
    lm = load_model("tiny-falcon", "cpu", "float32")
    assert fuse_projections(lm.model) == 0  # query_key_value is one matrix already, the MLP has no gate/up
    assert is_fused(lm.model) and not any(isinstance(m, FusedInput) for m in lm.model.modules())


@pytest.mark.inductor  # cdt's inductor options reach inductor on the CPU here alone (other backends drop them)
def test_fused_static_backend_generates_the_static_tokens():
    ref = load_model("tiny-llama", "cpu", "float32")
    ids = make_backend("cache", ref).make_prompt(2, 11, seed=7)
    toks = {}
    for name in ("no-cache", "static"):
        b = make_backend(name, ref)
        b.generate(ids, 6)
        toks[name] = b.last_tokens[:, -1].tolist()
    b = make_backend("static+cdt+fused", load_model("tiny-llama", "cpu", "float32"))
    assert isinstance(b, StaticBackend) and b.name == "static+fused+cdt"
    assert b.fused_modules == 2 * ref.config.num_hidden_layers
    b.prepare(2, 11, 6)
    r = b.generate(ids, 6)
    assert (r.tin_actual, r.tout_actual) == (11, 6) and b.compiles == 1
    assert b.last_tokens[:, -1].tolist() == toks["static"] == toks["no-cache"]
    plain = make_backend("static", b.loaded)  # the same model: unfused again before it generates
    plain.generate(ids, 6)
    assert not is_fused(b.loaded.model) and plain.last_tokens[:, -1].tolist() == toks["static"]
    b.generate(ids, 6)
    assert is_fused(b.loaded.model) and b.last_tokens[:, -1].tolist() == toks["static"]


def test_unfuse_restores_the_layout_without_copies():
    lm = load_model("tiny-mistral", "cpu", "float32")
    before = {n: p.clone() for n, p in lm.model.named_parameters()}
    assert set_fused(lm.model, True) == 8 and set_fused(lm.model, True) == 0
    fused_w = lm.model.model.layers[0].self_attn.proj.weight
    assert set_fused(lm.model, False) == 8 and not is_fused(lm.model)
    after = dict(lm.model.named_parameters())
    assert after.keys() == before.keys() and all(torch.equal(after[n], p) for n, p in before.items())
    assert lm.model.model.layers[0].self_attn.q_proj.weight.data_ptr() == fused_w.data_ptr()  # a view


def test_cache_keyword_follows_the_installed_signature():
    class Old(torch.nn.Module):  # transformers 5.17: `cache=` would land in **kwargs, unused
        def forward(self, input_ids=None, past_key_values=None, **kwargs):
            return input_ids

    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, **kwargs):
            return input_ids

    assert cache_keyword(Old()) == "past_key_values" and cache_keyword(New()) == "cache"
    lm = load_model("tiny-llama", "cpu", "float32")
    assert cache_keyword(lm.model) in inspect.signature(lm.model.forward).parameters


@pytest.mark.gpu
def test_fused_variants_on_cuda_give_the_static_tokens():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    ids = None
    toks = {}
    for name in ("static", "static+fused+cdt", "static+fused+cdt+math"):
        lm = load_model("tiny-llama", "cuda:0", "float32")
        b = make_backend(name, lm)
        ids = b.make_prompt(1, 9, seed=5) if ids is None else ids
        b.prepare(1, 9, 8)
        assert b.generate(ids, 8).tout_actual == 8
        toks[name] = b.last_tokens[:, -1].tolist()
    assert len(set(map(tuple, toks.values()))) == 1, toks


def test_fused_decode_step_has_four_matrix_products_per_layer():
    """The traced decode step (one graph, no breaks): 7 linears a layer unfused, 4 fused, + the LM head."""
    from llm_energy.measure.inference.sizing import bucket_len

    counts = {}
    for name in ("static", "static+fused"):
        lm = load_model("tiny-llama", "cpu", "float32")
        b = make_backend(name, lm)
        b.prepare(1, 8, 4)
        tok, pos = torch.ones((1, 1), dtype=torch.long), torch.full((1, 1), 8)
        with torch.inference_mode():
            ex = torch._dynamo.explain(b._decode_step)(tok, pos, b._caches[(1, bucket_len(12))])
        assert ex.graph_count == 1 and ex.graph_break_count == 0
        counts[name] = sum(1 for n in ex.graphs[0].graph.nodes if n.op == "call_function" and "linear" in str(n.target))
    layers = lm.config.num_hidden_layers
    assert counts == {"static": 7 * layers + 1, "static+fused": 4 * layers + 1}


@pytest.mark.parametrize("name", ["static", "static+fused"])
def test_mistral_static_decode_compiles_once_and_gives_the_no_cache_tokens(name):
    """tiny-mistral has a 256-token sliding window: in a 256 bucket the cache is built without it
    (static_cache_config), else transformers' sliding static layer keeps its position as a Python int and
    the compiled step recompiled at every token."""
    from torch._dynamo.utils import counters

    from llm_energy.measure.inference.backends import static_cache_config

    lm = load_model("tiny-mistral", "cpu", "float32")
    assert static_cache_config(lm.config, 512) is lm.config and lm.config.sliding_window == 256
    assert static_cache_config(lm.config, 256).sliding_window is None and lm.config.sliding_window == 256
    ref = make_backend("no-cache", lm)
    ids = ref.make_prompt(1, 9, seed=4)
    ref.generate(ids, 8)
    b = make_backend(name, load_model("tiny-mistral", "cpu", "float32"))
    b.prepare(1, 9, 8)
    graphs = counters["stats"]["unique_graphs"]
    for tin in (9, 20):
        assert b.generate(b.make_prompt(1, tin, 1), 8).tout_actual == 8
    assert counters["stats"]["unique_graphs"] == graphs  # no recompile after prepare
    b.generate(ids, 8)
    assert b.last_tokens[:, -1].tolist() == ref.last_tokens[:, -1].tolist()
