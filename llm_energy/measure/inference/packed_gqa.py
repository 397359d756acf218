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

It is registered under :data:`NAME` with transformers' ``AttentionInterface`` (and ``sdpa_mask`` for
its masks under the same name) and switched on per model by :func:`set_packed_gqa`. Models whose
attention is not dispatched through that interface (falcon's own attention) are left as they are.
"""

from __future__ import annotations

from typing import Any

NAME = "llm_energy_packed_gqa"
_TYPES = ("llama", "mistral", "mixtral")  # attention dispatched through AttentionInterface, sdpa by default


def packed_gqa_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                         scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any):
    """transformers' attention-function signature: ``query`` (b, heads, q, d), ``key``/``value`` (b, kv, L,
    d); returns ((b, q, heads, d), None)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = int(getattr(module, "num_key_value_groups", 1) or 1)
    packable = (query.shape[2] == 1 and groups > 1 and kwargs.get("position_bias") is None
                and kwargs.get("softcap") is None and not kwargs.get("output_attentions", False)
                and (attention_mask is None or attention_mask.shape[1] == 1))
    if not packable:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    b, heads, _, d = query.shape
    q = query.reshape(b, heads // groups, groups, d)  # head h = kv * groups + g, as repeat_kv pairs them
    out = torch.nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling, is_causal=False)
    return out.reshape(b, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


def register() -> None:
    """Register :data:`NAME` with transformers (idempotent): the attention function, and ``sdpa_mask``
    for the masks models build for it (the masks ``sdpa`` gets)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, packed_gqa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def applies(model: Any) -> bool:
    """Whether ``gqa`` changes anything for this model: a llama-style attention with fewer KV heads than
    query heads, running transformers' sdpa (or this module's function already)."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return False
    heads, kv = getattr(cfg, "num_attention_heads", None), getattr(cfg, "num_key_value_heads", None)
    return (getattr(cfg, "model_type", None) in _TYPES and bool(heads and kv and kv < heads)
            and cfg._attn_implementation in ("sdpa", NAME))


def set_packed_gqa(model: Any, on: bool) -> bool:
    """Switch the model's attention to :data:`NAME` (``on``) or back to ``sdpa``; return whether it now
    runs :data:`NAME`. A model where it does not apply (:func:`applies`) is left as it is."""
    if not applies(model):
        return False
    want = NAME if on else "sdpa"
    if model.config._attn_implementation != want:
        if on:
            register()
        model.config._attn_implementation = want  # the forward reads it at each call; no other state
    return on
