"""Decode attention on the KV heads: the static backend's ``gqa`` option (issue 13).

A model with grouped-query attention (mistral-7b, mixtral-8x7b, llama-2-70b: 8 KV heads for 32 or 64
query heads) keeps one K and V per KV head in its cache. transformers' SDPA attention copies them to
every query head (``repeat_kv``) before the kernel whenever there is an attention mask, and a static
cache always has one (the bucket's unused tail is masked). transformers >= 5.24 avoids the copy for a
single query token (``pack_gqa``) but not while dynamo traces, i.e. never in the compiled decode step;
5.17 does not have it. So each compiled decode step writes and reads again (groups x) the whole
bucket's K and V: on the H200, at the 4096 bucket, mistral-7b's step is 1.2 ms slower than at 256
and llama-2-70b's about 6 ms, for 0.1 and 0.3 ms of KV bytes (docs/h200.md, "Fourth session").

Here a single query token attends on the KV heads themselves: the query heads of one KV head (the
``groups`` consecutive heads that ``repeat_kv`` gives that head's K and V) become that head's block of
``groups`` query rows, ``(b, kv, groups, d)``, against the cache's ``(b, kv, L, d)``; the mask, the same
for every head and row at one position, broadcasts. The product is the same arithmetic as
``repeat_kv`` + SDPA in another layout; everything else (prefill, more than one query token, a mask
per head, a position bias) goes to transformers' own ``sdpa_attention_forward`` unchanged.

Under the backend's ``math`` option as well (``static+gqa+math``) the packed attention is two matrix
products and a softmax written out (:func:`packed_matmul_attention`), which inductor generates around:
bf16 products on the cache as it lies, the fp32 softmax on the small score tensor only. It used to be
SDPA's math kernel on the packed layout, which upcasts (torch 2.11 and 2.13: ``_to_copy`` of Q, K and V to
fp32, Q and K each scaled by sqrt(scale), fp32 products): every step it read each layer's K and V, wrote
fp32 copies (twice their bytes) and read those again with fp32 matrix-vector kernels, five times the KV
bytes; on the H200 (mistral-7b, 4096 bucket) 8.74 ms a step against plain ``static``'s 6.60.

It is registered under :data:`NAME` with transformers' ``AttentionInterface`` (and ``sdpa_mask`` for
its masks under the same name) and switched on per model by :func:`set_packed_gqa`.

Falcon runs its own attention (``FalconAttention.forward`` calls SDPA itself, not through that
interface), and pays for it in two ways: falcon-7b (``multi_query``: 1 KV head, 71 query heads) hands
SDPA different head counts without ``enable_gqa``, which the fused kernels refuse, so the step runs the
math kernel, which broadcasts the one K and V to every query head; falcon-40b (new decoder architecture:
8 KV groups of 16 query heads) broadcasts each group's K and V to its query heads in ``_split_heads``,
*before* the cache, so its cache holds 128 heads, 16x its groups' bytes. Under ``gqa`` each falcon
attention module's forward is :func:`falcon_attention_forward` instead (bound on the instance; deleting
it restores the class's): the cache gets the KV heads themselves (8 for falcon-40b, 1 for falcon-7b), a
single query token attends in the packed layout above, and more tokens (the prefill) through SDPA with
``enable_gqa=True`` where there is no mask, else on K and V copied to the query heads for that call only
(:func:`falcon_attend`: on CUDA torch runs a masked GQA only on its math kernel). The cache keeps the KV
heads either way. The arithmetic is the original's; written against transformers 5.17 and
5.24, whose ``FalconAttention.forward`` are the same. Alibi falcons (none of the presets) and
``output_attentions`` take the original forward. Because falcon-40b's cache then holds 8 heads, its
size depends on the option: ``sizing.kv_groups_cached`` / ``presets.kv_bytes_per_token(grouped=True)``.

From transformers 5.25 falcon does both itself (``presets.falcon_caches_kv_groups``): its attention
projects to the KV heads, caches them and calls its attention through ``AttentionInterface`` like
llama's. There ``gqa`` switches a falcon exactly as it switches llama, mistral and mixtral (the
attention implementation), and no forward is bound.
"""

from __future__ import annotations

import types
from typing import Any

import torch

NAME = "llm_energy_packed_gqa"
_TYPES = ("llama", "mistral", "mixtral")  # attention dispatched through AttentionInterface, sdpa by default


def packed_gqa_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                         scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any):
    """transformers' attention-function signature: ``query`` (b, heads, q, d), ``key``/``value`` (b, kv, L,
    d); returns ((b, q, heads, d), None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = int(getattr(module, "num_key_value_groups", 1) or 1)
    packable = (query.shape[2] == 1 and groups > 1 and kwargs.get("position_bias") is None
                and kwargs.get("softcap") is None and not kwargs.get("output_attentions", False)
                and (attention_mask is None or attention_mask.shape[1] == 1))
    if not packable:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    return packed_sdpa(query, key, value, attention_mask, dropout, scaling).transpose(1, 2).contiguous(), None


def packed_sdpa(query: Any, key: Any, value: Any, mask: Any, dropout: float = 0.0, scale: float | None = None) -> Any:
    """One query token ``query`` (b, heads, 1, d) on the KV heads' ``key``/``value`` (b, kv, L, d), the query
    heads of each KV head as its block of rows (head h = kv * groups + g, as repeat_kv pairs them); the mask,
    one row for every head, broadcasts. Returns (b, heads, 1, d). Where SDPA may use only its math kernel
    (the static backend's ``math`` option: ``static+gqa+math``), :func:`packed_matmul_attention` instead."""
    b, heads, _, d = query.shape
    kv = key.shape[1]
    packed = query.reshape(b, kv, heads // kv, d)
    if dropout == 0.0 and math_kernel_only():
        out = packed_matmul_attention(packed, key, value, mask, scale)
    else:
        out = torch.nn.functional.scaled_dot_product_attention(packed, key, value, attn_mask=mask, dropout_p=dropout,
                                                               scale=scale, is_causal=False)
    return out.reshape(b, heads, 1, value.shape[-1])


def packed_matmul_attention(query: Any, key: Any, value: Any, mask: Any, scale: float | None = None) -> Any:
    """The packed attention as two matrix products in the cache's dtype, for inductor to generate around:
    ``query`` (b, kv, rows, d) scaled, times ``key`` (b, kv, L, d) transposed (a bf16 product, fp32
    accumulation); the softmax in fp32 on those (b, kv, rows, L) scores alone; the probabilities in
    ``value``'s dtype times ``value``. K and V are read where they lie, once each: never converted,
    scaled or copied (torch's math SDPA kernel, which ``static+gqa+math`` ran before, computes in fp32:
    the module's docstring). ``mask``: boolean (True attends) or additive, broadcasting
    to the scores; None attends everywhere. Returns (b, kv, rows, d) in ``value``'s dtype."""
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(query * scale, key.transpose(-1, -2)).float()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return torch.matmul(scores.softmax(-1).to(value.dtype), value)


@torch._dynamo.assume_constant_result
def math_kernel_only() -> bool:
    """Whether SDPA may use only its math kernel here (inside ``sdpa_kernel([SDPBackend.MATH])``, which the
    static backend enters in its decode step under ``math``: ``fusion.decode_attention``). Dynamo calls it
    while it traces (``assume_constant_result``), inside that context as dynamo enters it, and bakes the
    answer in, as it bakes in SDPA's own kernel choice; no graph break, whether or not this torch's dynamo
    folds the flags' getters itself."""
    c = torch._C
    return bool(c._get_math_sdp_enabled() and not (c._get_flash_sdp_enabled() or c._get_mem_efficient_sdp_enabled()
                                                    or c._get_cudnn_sdp_enabled()))


def register() -> None:
    """Register :data:`NAME` with transformers (idempotent): the attention function, and ``sdpa_mask``
    for the masks models build for it (the masks ``sdpa`` gets)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, packed_gqa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def applies(model: Any) -> bool:
    """Whether ``gqa`` changes anything for this model: a llama-style attention with fewer KV heads than
    query heads, running transformers' sdpa (or this module's function already), or a falcon with fewer
    KV heads than query heads (:func:`falcon_applies`)."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return False
    if getattr(cfg, "model_type", None) == "falcon":
        return falcon_applies(cfg)
    heads, kv = getattr(cfg, "num_attention_heads", None), getattr(cfg, "num_key_value_heads", None)
    return (getattr(cfg, "model_type", None) in _TYPES and bool(heads and kv and kv < heads)
            and cfg._attn_implementation in ("sdpa", NAME))


def set_packed_gqa(model: Any, on: bool) -> bool:
    """Switch the model's attention to :data:`NAME` (``on``) or back to ``sdpa`` (falcon under transformers
    <= 5.24: each attention module's forward to :func:`falcon_attention_forward` or back to its class's;
    from 5.25 falcon's attention implementation, as llama's); return whether it now
    runs the packed attention. A model where it does not apply (:func:`applies`) is left as it is."""
    if not applies(model):
        return False
    if model.config.model_type == "falcon" and not _falcon_dispatches():  # transformers <= 5.24: only a forward
        # bound here is added or removed: another's stays, and over one, none is bound (not a mix of two caches)
        attns = _falcon_attentions(model)
        foreign = any("forward" in a.__dict__ and not _bound_here(a) for a in attns)
        for attn in attns:
            if on and not foreign and not _bound_here(attn):
                attn.forward = types.MethodType(falcon_attention_forward, attn)
            elif (not on or foreign) and _bound_here(attn):
                del attn.forward
        return on and not foreign
    want = NAME if on else "sdpa"
    if model.config._attn_implementation != want:
        if on:
            register()
        model.config._attn_implementation = want  # the forward reads it at each call; no other state
    return on


# ---- falcon ---------------------------------------------------------------------------------------
def falcon_applies(cfg: Any) -> bool:
    """A falcon config (object or dict) whose attention ``gqa`` changes: rotary (no alibi), sdpa, fewer KV
    heads than query heads (``multi_query``: 1; new decoder architecture: ``num_kv_heads``)."""
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    heads = int(get("num_attention_heads") or 0)
    kv = int(get("num_kv_heads") or heads) if get("new_decoder_architecture") else (1 if get("multi_query", True) else heads)
    impl = get("_attn_implementation", "sdpa") if not isinstance(cfg, dict) else "sdpa"
    impls = ("sdpa", NAME) if _falcon_dispatches() else ("sdpa",)  # 5.25: switched as llama's (the module's docstring)
    return get("model_type") == "falcon" and not get("alibi") and impl in impls and 0 < kv < heads


def _falcon_dispatches() -> bool:
    """Whether the loaded transformers' falcon caches its KV heads and calls its attention through
    ``AttentionInterface`` (>= 5.25; ``presets.installed_falcon_caches_kv_groups``)."""
    from llm_energy.measure.inference.presets import installed_falcon_caches_kv_groups

    return installed_falcon_caches_kv_groups()


def _bound_here(attn: Any) -> bool:
    """Whether the module's instance forward is :func:`falcon_attention_forward`, bound by :func:`set_packed_gqa`."""
    return getattr(attn.__dict__.get("forward"), "__func__", None) is falcon_attention_forward


def _falcon_attentions(model: Any) -> list[Any]:
    base = getattr(model, "transformer", model)
    return [layer.self_attention for layer in getattr(base, "h", ())]


def falcon_heads(attn: Any, fused_qkv: Any) -> tuple[Any, Any, Any]:
    """Query (b, heads, t, d) and key, value (b, kv, t, d) from falcon's fused q/k/v projection, as
    ``FalconAttention._split_heads`` lays them out but without its broadcast of each KV group to its query
    heads: query head ``h`` belongs to KV head ``h // (heads // kv)`` (what the broadcast pairs them as)."""
    b, t, _ = fused_qkv.shape
    heads, kv, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
    if attn.new_decoder_architecture:
        qkv = fused_qkv.view(b, t, kv, heads // kv + 2, d)
        query, key, value = qkv[:, :, :, :-2].reshape(b, t, heads, d), qkv[:, :, :, -2:-1], qkv[:, :, :, -1:]
        key, value = key.reshape(b, t, kv, d), value.reshape(b, t, kv, d)
    else:  # multi_query: one K and one V after the query heads
        qkv = fused_qkv.view(b, t, heads + 2, d)
        query, key, value = qkv[:, :, :-2], qkv[:, :, -2:-1], qkv[:, :, -1:]
    return query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)


def falcon_attend(query: Any, key: Any, value: Any, mask: Any, causal: bool) -> Any:
    """(b, t, heads * d) attention of ``query`` (b, heads, t, d) on ``key``/``value`` (b, kv, L, d). One
    query token: the packed layout (:func:`packed_gqa_attention`'s). More (the prefill): SDPA's
    ``enable_gqa`` without a mask; with one (a static cache's prefill always has one), K and V copied to
    the query heads for this call only (the cache keeps the KV heads), because torch runs a masked GQA
    only on its math kernel on CUDA (transformers' ``use_gqa_in_sdpa`` says the same), whose scores grow
    with the keys, where the copy lets the fused kernels take it (falcon-7b's own prefill ran the math kernel)."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    b, heads, t, d = query.shape
    kv = key.shape[1]
    if t == 1 and (mask is None or mask.shape[1] == 1):
        return packed_sdpa(query, key, value, mask).reshape(b, 1, heads * d)
    if mask is None:
        out = sdpa(query, key, value, dropout_p=0.0, is_causal=causal and t > 1, enable_gqa=True)
    else:
        key, value = (x.repeat_interleave(heads // kv, dim=1) for x in (key, value))
        out = sdpa(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(b, t, heads * d)


def falcon_attention_forward(self: Any, hidden_states: Any, alibi: Any, attention_mask: Any, position_ids: Any = None,
                             layer_past: Any = None, use_cache: bool = False, output_attentions: bool = False,
                             position_embeddings: Any = None, **kwargs: Any):
    """``FalconAttention.forward`` (transformers 5.17 and 5.24) on the KV heads: the cache gets them
    unbroadcast, the attention reads them (:func:`falcon_attend`). Alibi, ``output_attentions`` and
    other implementations than sdpa take the class's own forward."""
    if alibi is not None or output_attentions or self.config._attn_implementation != "sdpa":
        return type(self).forward(self, hidden_states, alibi, attention_mask, position_ids=position_ids,
                                  layer_past=layer_past, use_cache=use_cache, output_attentions=output_attentions,
                                  position_embeddings=position_embeddings, **kwargs)
    from transformers.models.falcon.modeling_falcon import apply_rotary_pos_emb

    query, key, value = falcon_heads(self, self.query_key_value(hidden_states))
    cos, sin = position_embeddings
    query, key = apply_rotary_pos_emb(query, key, cos, sin)
    if layer_past is not None:
        key, value = layer_past.update(key, value, self.layer_idx)
    return self.dense(falcon_attend(query, key, value, attention_mask, self.is_causal)), None
