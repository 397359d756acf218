"""The static backend's ``gqa`` option (packed_gqa.py): a single query token attends on the KV heads,
without transformers' copy of a grouped-query model's cache to every query head. Same attention as
repeat_kv + SDPA; the same greedy tokens as ``static``; and in the compiled decode step the attention
reads the cache with its KV heads (the copy is gone), which is what makes it faster on a GPU."""

import pytest
import torch

from llm_energy.measure.inference.backends import make_backend
from llm_energy.measure.inference.loading import load_model
from llm_energy.measure.inference.presets import falcon_caches_kv_groups
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
    """The key's head count at every attention of the backend's traced decode step (one graph): each SDPA
    call's key, or, under ``static+gqa+math``, the key of packed_matmul_attention's scores product (K
    transposed: its last dim the bucket)."""
    bucket = bucket_len(tin + tout)
    tok, pos = torch.ones((1, 1), dtype=torch.long), torch.full((1, 1), tin)
    with torch.inference_mode():
        ex = torch._dynamo.explain(backend._decode_step)(tok, pos, backend._caches[(1, bucket)])
    assert ex.graph_count == 1 and ex.graph_break_count == 0
    heads = []
    for n in ex.graphs[0].graph.nodes:
        if n.op != "call_function":
            continue
        key = n.args[1].meta["example_value"] if len(n.args) > 1 and hasattr(n.args[1], "meta") else None
        if "scaled_dot_product_attention" in str(n.target) or (n.target is torch.matmul and key.shape[-1] == bucket):
            heads.append(key.shape[1])
    return heads


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


def test_gqa_leaves_models_it_does_not_apply_to(tmp_path):
    import json

    from llm_energy.measure.inference.presets import get_preset

    alibi = tmp_path / "falcon-alibi"  # tiny-falcon with alibi (falcon-rw's position bias): transformers' forward
    alibi.mkdir()
    (alibi / "config.json").write_text(json.dumps({**get_preset("tiny-falcon").hf_config, "alibi": True}))
    for preset in ("tiny-llama", str(alibi)):  # as many KV heads as query heads; a falcon gqa leaves as it is
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


# ---- falcon: its own attention code (packed_gqa.falcon_attention_forward) ------------------------
FALCON = {"model_type": "falcon", "vocab_size": 128, "hidden_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 8, "parallel_attn": True, "bias": False, "alibi": False}
FALCON_LAYOUTS = {"multi-query": {"multi_query": True, "new_decoder_architecture": False},  # falcon-7b's: 1 KV head
                  "new-decoder": {"new_decoder_architecture": True, "num_kv_heads": 2}}  # falcon-40b's: KV groups


def test_falcon_attend_is_repeat_kv_attention():
    from llm_energy.measure.inference.packed_gqa import falcon_attend

    g = torch.Generator().manual_seed(0)
    b, length, d = 2, 37, 16
    for kv, groups in ((1, 5), (3, 4)):  # falcon-7b's one KV head; falcon-40b's groups
        k, v = torch.randn(b, kv, length, d, generator=g), torch.randn(b, kv, length, d, generator=g)
        for t in (1, 4):  # a decode step (packed), a prefill (K and V copied for the call, or enable_gqa)
            q = torch.randn(b, kv * groups, t, d, generator=g)
            mask = torch.ones(b, 1, t, length, dtype=torch.bool).tril(length - t)
            mask[0, ..., 20:] = False
            want = _repeat_kv_attention(q, k, v, mask, groups).reshape(b, t, kv * groups * d)
            torch.testing.assert_close(falcon_attend(q, k, v, mask, True), want, rtol=1e-5, atol=1e-6)
            kt, vt = k[:, :, :t], v[:, :, :t]  # no mask: causal over the prompt's own keys
            causal = torch.ones(t, t, dtype=torch.bool).tril()
            torch.testing.assert_close(falcon_attend(q, kt, vt, None, True),
                                       _repeat_kv_attention(q, kt, vt, causal, groups).reshape(b, t, -1),
                                       rtol=1e-5, atol=1e-6)


def _falcon(layout):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(**FALCON, **FALCON_LAYOUTS[layout])
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()


def _falcon_logits(model, ids, steps, cache_len=32):
    """Logits of a prefill and ``steps`` greedy decode steps into a StaticCache, and the cache."""
    from transformers import StaticCache

    from llm_energy.measure.inference.backends import cache_keyword

    cache, kw = StaticCache(config=model.config, max_cache_len=cache_len), cache_keyword(model)
    with torch.no_grad():
        out = [model(ids, use_cache=True, **{kw: cache}).logits]
        for s in range(steps):
            tok = out[-1][:, -1:].argmax(-1)
            pos = torch.full((ids.shape[0], 1), ids.shape[1] + s)
            out.append(model(tok, position_ids=pos, use_cache=True, **{kw: cache}).logits)
    return out, cache


@pytest.mark.parametrize("layout", sorted(FALCON_LAYOUTS))
def test_falcon_gqa_gives_the_original_logits_and_caches_the_kv_heads(layout):
    from llm_energy.measure.inference.presets import kv_bytes_per_token

    model = _falcon(layout)
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(1))
    ref, ref_cache = _falcon_logits(model, ids, 5)
    assert applies(model) and set_packed_gqa(model, True)
    got, cache = _falcon_logits(model, ids, 5)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-5)
    kv = FALCON_LAYOUTS[layout].get("num_kv_heads", 1)
    assert [layer.keys.shape[1] for layer in cache.layers] == [kv] * 2  # the KV heads, not their copies
    copies = layout == "new-decoder" and not falcon_caches_kv_groups()  # transformers <= 5.24: 8 copies
    assert ref_cache.layers[0].keys.shape[1] == (8 if copies else kv)
    allocated = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    cfg_d = {**FALCON, **FALCON_LAYOUTS[layout]}
    assert kv_bytes_per_token(cfg_d, 4, grouped=True) == allocated // (2 * 32)  # per token a sequence, under gqa
    assert not set_packed_gqa(model, False)  # off: the class's forward again, the same logits exactly
    assert all("forward" not in layer.self_attention.__dict__ for layer in model.transformer.h)
    assert model.config._attn_implementation == "sdpa"
    again, _ = _falcon_logits(model, ids, 5)
    assert all(torch.equal(a, r) for a, r in zip(again, ref))


def _falcon_40b_shaped(tmp_path):
    import json

    d = tmp_path / "falcon-40b-shaped"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**FALCON, **FALCON_LAYOUTS["new-decoder"],
                                               "architectures": ["FalconForCausalLM"]}))
    return str(d)


def _sdpa_heads(backend, tin, tout):
    """(query heads, key heads, whether a fused CPU kernel takes it) at every SDPA call of the traced decode step."""
    backend._restore_layout()  # the model may be shared: trace what this backend runs
    tok, pos = torch.ones((1, 1), dtype=torch.long), torch.full((1, 1), tin)
    with torch.inference_mode():
        ex = torch._dynamo.explain(backend._decode_step)(tok, pos, backend._caches[(1, bucket_len(tin + tout))])
    assert ex.graph_count == 1 and ex.graph_break_count == 0
    out = []
    for n in ex.graphs[0].graph.nodes:
        if n.op == "call_function" and "scaled_dot_product_attention" in str(n.target):
            q, k, v = (torch.zeros(a.meta["example_value"].shape) for a in n.args[:3])
            mask = n.kwargs.get("attn_mask")
            mask = None if mask is None else torch.ones(mask.meta["example_value"].shape, dtype=torch.bool)
            fused = torch._fused_sdp_choice(q, k, v, attn_mask=mask, enable_gqa=n.kwargs.get("enable_gqa", False)) != 0
            out.append((q.shape[1], k.shape[1], fused))
    return out


@pytest.mark.parametrize("preset", ["tiny-falcon", "falcon-40b-shaped"])
def test_gqa_falcon_static_backend_gives_the_static_tokens_and_reads_the_kv_heads(preset, tmp_path):
    name = _falcon_40b_shaped(tmp_path) if preset == "falcon-40b-shaped" else preset
    lm = load_model(name, "cpu", "float32")
    ref, b = make_backend("static", lm), make_backend("static+gqa", lm)  # one model shared, as a sweep shares it
    assert b.packed_gqa and not ref.packed_gqa
    ids = ref.make_prompt(1, 9, seed=5)
    for backend in (ref, b, ref, b):  # each restores its own attention before it generates
        backend.prepare(1, 9, 8)
        assert backend.generate(ids, 8).tout_actual == 8
    assert b.compiles == 1 and b.last_tokens[:, -1].tolist() == ref.last_tokens[:, -1].tolist()
    from llm_energy.measure.inference.compiles import compile_count

    for backend in (b, ref, b):  # a prepared bucket, another prompt, the attention switched: nothing compiles
        before = compile_count()
        backend.generate(ref.make_prompt(1, 11, seed=3), 8)
        assert not (compile_count() - before), (backend.name, (compile_count() - before).describe())
    cfg = lm.config
    layers, heads = cfg.num_hidden_layers, cfg.num_attention_heads
    kv = cfg.num_kv_heads if cfg.new_decoder_architecture else 1
    if falcon_caches_kv_groups():  # transformers >= 5.25: the KV heads cached, copied to the query heads at each call
        static_kv, static_sdpa = kv, (heads, heads, True)
    else:  # falcon-40b's cache holds every query head; falcon-7b's 1 key head against every query head is the
        static_kv = heads if cfg.new_decoder_architecture else 1  # math kernel
        static_sdpa = (heads, static_kv, static_kv == heads)
    assert [x.keys.shape[1] for x in ref._caches[(1, 256)].layers] == [static_kv] * layers
    assert [x.keys.shape[1] for x in b._caches[(1, 256)].layers] == [kv] * layers
    # gqa: the packed layout, one query row block per KV head, on a fused kernel
    assert _sdpa_heads(ref, 9, 8) == [static_sdpa] * layers
    assert _sdpa_heads(b, 9, 8) == [(kv, kv, True)] * layers


@pytest.mark.parametrize("transformers", ["5.17.0", "5.24.0", "5.25.0"])
def test_gqa_sizes_falcon_40b_cache_by_its_kv_groups(transformers, monkeypatch):
    from llm_energy.measure.inference import presets
    from llm_energy.measure.inference.loading import read_model
    from llm_energy.measure.inference.sizing import kv_groups_cached, sweep_memory_bytes

    monkeypatch.setattr(presets, "installed_falcon_caches_kv_groups", lambda: presets.falcon_caches_kv_groups(transformers))
    assert kv_groups_cached("static+gqa") and kv_groups_cached("static+fused+gqa+math")
    assert not any(kv_groups_cached(b) for b in ("static", "static+math", "cache", "no-cache"))
    kw = {"batch": 1, "max_seq_len": 4096}
    copies = 1 if transformers >= "5.25" else 16  # from 5.25 transformers caches falcon-40b's groups itself
    for preset, ratio in (("falcon-40b", copies), ("falcon-7b", 1), ("mistral-7b", 1)):
        src = read_model(preset)
        static, gqa = (sweep_memory_bytes(src, "bfloat16", backend=b, **kw)[2] for b in ("static", "static+gqa"))
        assert static == ratio * gqa, preset
    assert sweep_memory_bytes(read_model("falcon-40b"), "bfloat16", backend="static+gqa", **kw)[2] == \
        2 * 60 * 8 * 64 * 2 * 4096  # 8 groups of 64-wide heads, 60 layers, K and V, bf16


def test_falcon_kv_groups_follow_the_transformers_that_ran():
    from llm_energy.measure.inference.presets import get_preset, kv_bytes_per_token

    cfg = get_preset("falcon-40b").hf_config
    per_head = 2 * 60 * 64 * 2
    for version, heads in (("5.17.0", 128), ("5.24.0", 128), ("5.25.0", 8), ("5.25.1.dev0", 8), ("6.0", 8),
                           ("4.57.6", 128), ("", 128), ("unknown", 128)):
        assert kv_bytes_per_token(cfg, 2, transformers_version=version) == heads * per_head, version
        assert kv_bytes_per_token(cfg, 2, grouped=True, transformers_version=version) == 8 * per_head, version
    assert falcon_caches_kv_groups("5.25.0") and not falcon_caches_kv_groups("5.24.9")


def test_the_falcon_layout_of_the_installed_transformers_is_that_of_its_version():
    """The loaded module's layout (what gqa and the sizing go by) and the version boundary recorded trials are
    read by agree on the installed transformers (make test runs this under 5.24 too)."""
    import transformers

    from llm_energy.measure.inference.presets import installed_falcon_caches_kv_groups

    assert installed_falcon_caches_kv_groups() == falcon_caches_kv_groups(transformers.__version__)
    assert falcon_caches_kv_groups() == installed_falcon_caches_kv_groups()


@pytest.mark.parametrize("transformers", ["5.24.0", "5.25.0"])
def test_the_refusal_check_sizes_falcon_40b_by_the_backend(transformers, monkeypatch):
    from llm_energy.errors import UserError
    from llm_energy.measure.inference import presets, sizing
    from llm_energy.measure.inference.loading import read_model

    src = read_model("falcon-40b")  # bf16: 82.6 GB weights; batch 8 x 4096: 64.4 GB of cache (static), 4.0 (gqa)
    monkeypatch.setattr(sizing, "free_memory_bytes", lambda d: 100 * 2**30)
    monkeypatch.setattr(presets, "installed_falcon_caches_kv_groups", lambda: presets.falcon_caches_kv_groups(transformers))
    kw = {"batch": 8, "max_seq_len": 4000, "beyond_context": True}
    sizing.check_sweep(src, "bfloat16", ["cpu"], backend="static+gqa", **kw)
    if transformers >= "5.25":  # transformers caches the 8 groups under plain static too
        sizing.check_sweep(src, "bfloat16", ["cpu"], backend="static", **kw)
        return
    with pytest.raises(UserError, match="KV cache 60.0 GiB"):
        sizing.check_sweep(src, "bfloat16", ["cpu"], backend="static", **kw)


@pytest.mark.gpu
def test_gqa_falcon_on_cuda_gives_the_static_tokens(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    for name in ("tiny-falcon", _falcon_40b_shaped(tmp_path)):
        ids, toks = None, {}
        for variant in ("static", "static+gqa", "static+gqa+math"):
            b = make_backend(variant, load_model(name, "cuda:0", "float32"))
            assert b.packed_gqa == (variant != "static")
            ids = b.make_prompt(1, 9, seed=5) if ids is None else ids
            b.prepare(1, 9, 8)
            assert b.generate(ids, 8).tout_actual == 8
            toks[variant] = b.last_tokens[:, -1].tolist()
        assert len(set(map(tuple, toks.values()))) == 1, (name, toks)


def test_falcon_switch_touches_only_the_forward_gqa_bound(tmp_path):
    """Off, what every backend but gqa does before each generation (plain ``static``, ``cache``, ``no-cache``
    included), removes only the forward gqa bound: a forward bound on the instance by anyone else (a
    hook's wrapper, as accelerate binds) stays. On over such a module binds nothing and says so, so the
    backend runs the original attention everywhere rather than a mix of the two caches."""
    import functools

    lm = load_model(_falcon_40b_shaped(tmp_path), "cpu", "float32")
    attn = lm.model.transformer.h[0].self_attention
    theirs = functools.partial(type(attn).forward, attn)
    attn.forward = theirs
    plain = make_backend("static", lm)
    plain.prepare(1, 9, 8)
    plain.generate(plain.make_prompt(1, 9, seed=5), 8)
    assert attn.__dict__.get("forward") is theirs
    if falcon_caches_kv_groups():  # transformers >= 5.25: gqa is the attention implementation; no forward is bound
        assert set_packed_gqa(lm.model, True) and lm.model.config._attn_implementation == NAME
        assert attn.__dict__.get("forward") is theirs
        assert all("forward" not in layer.self_attention.__dict__ for layer in lm.model.transformer.h[1:])
        assert not set_packed_gqa(lm.model, False) and lm.model.config._attn_implementation == "sdpa"
        assert attn.__dict__.get("forward") is theirs
        return
    assert not set_packed_gqa(lm.model, True) and not make_backend("static+gqa", lm).packed_gqa
    assert all("forward" not in layer.self_attention.__dict__ for layer in lm.model.transformer.h[1:])
    assert attn.__dict__.get("forward") is theirs
    del attn.forward  # the module as loaded: gqa binds its own, and off removes it again
    assert set_packed_gqa(lm.model, True) and not set_packed_gqa(lm.model, False)
    assert all("forward" not in layer.self_attention.__dict__ for layer in lm.model.transformer.h)
