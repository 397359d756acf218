"""Shipped model presets: real architectures as HF configs, built with random weights.

Energy and runtime depend on the architecture and token counts, not on the weight values, so a
preset profiles like the real checkpoint without downloading it. ``preset_configs/<name>.json`` holds the
published config numbers (layers, widths, heads, KV heads, vocabulary, experts).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from llm_energy.errors import UserError

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: activation/workspace margin on top of weights and KV cache
MARGIN_FRACTION = 0.05
MARGIN_BYTES = 256 * 2**20


@dataclass(frozen=True)
class ModelPreset:
    name: str
    family: str  # llama | mistral | mixtral | falcon
    description: str
    hf_config: dict[str, Any] = field(hash=False)

    def config(self):
        """A fresh ``transformers`` config object for this preset."""
        from transformers import AutoConfig

        cfg = dict(self.hf_config)
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)

    @property
    def n_params(self) -> int:
        """Exact parameter count (from the architecture built on the meta device)."""
        return count_params(self.name)

    @property
    def n_layers(self) -> int:
        return int(self.hf_config["num_hidden_layers"])

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes per token per sequence at 2 bytes a value (bf16)."""
        return kv_bytes_per_token(self.hf_config, 2)


def kv_bytes_per_token(cfg: dict[str, Any], dtype_bytes: int, *, grouped: bool = False,
                       transformers_version: str | None = None) -> int:
    """KV-cache bytes per token per sequence as transformers' models store it (what a decode step reads
    and what memory must hold). Falcon's new decoder architecture (falcon-40b) broadcasts each KV group's
    K and V to all its query heads before the cache in transformers <= 5.24 (``FalconAttention._split_heads``),
    so its cache holds every query head, 16x its 8 KV groups (``tests/test_kv_bytes.py``), except under the
    static backend's ``gqa`` option (``grouped``: packed_gqa.py caches the groups themselves; alibi falcons
    keep transformers' forward). From 5.25 transformers caches the groups itself
    (:func:`falcon_caches_kv_groups`; ``transformers_version``: the version that ran, e.g. a trial's
    ``versions``; default: the installed one)."""
    heads = int(cfg["num_attention_heads"])
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
    if cfg.get("model_type") == "falcon":
        if cfg.get("new_decoder_architecture"):
            groups = (grouped and not cfg.get("alibi")) or falcon_caches_kv_groups(transformers_version)
            kv = int(cfg.get("num_kv_heads") or heads) if groups else heads
        elif cfg.get("multi_query"):
            kv = 1
        else:
            kv = heads
    else:
        kv = int(cfg.get("num_key_value_heads") or heads)
    return 2 * int(cfg["num_hidden_layers"]) * kv * head_dim * dtype_bytes


#: the first transformers whose ``FalconAttention`` projects to the KV heads, caches them and calls its
#: attention through ``AttentionInterface`` (<= 5.24: its own SDPA call on ``_split_heads``' copies)
FALCON_KV_GROUPS_SINCE = (5, 25)


def falcon_caches_kv_groups(transformers_version: str | None = None) -> bool:
    """Whether transformers ``transformers_version`` runs falcon's attention on its KV heads itself: caches
    a new-decoder falcon's KV groups rather than their copies to every query head, and dispatches through
    ``AttentionInterface`` (:data:`FALCON_KV_GROUPS_SINCE`; a recorded version, e.g. a trial's ``versions``;
    an unreadable one counts as the older layout). ``None``: the installed transformers' falcon as it
    loads (:func:`installed_falcon_caches_kv_groups`)."""
    if transformers_version is None:
        return installed_falcon_caches_kv_groups()
    m = re.match(r"(\d+)\.(\d+)", transformers_version)
    return bool(m) and (int(m[1]), int(m[2])) >= FALCON_KV_GROUPS_SINCE


@lru_cache(maxsize=1)
def installed_falcon_caches_kv_groups() -> bool:
    """The installed transformers' falcon, read from the module itself (what runs, whatever its package
    metadata says): 5.25's rewrite has no ``FalconAttention._split_heads``. False without transformers."""
    try:
        from transformers.models.falcon import modeling_falcon
    except ImportError:
        return False
    return not hasattr(modeling_falcon.FalconAttention, "_split_heads")


@lru_cache(maxsize=None)
def _load_all() -> dict[str, ModelPreset]:
    out: dict[str, ModelPreset] = {}
    for f in sorted(resources.files("llm_energy.measure.inference.preset_configs").iterdir(), key=lambda p: p.name):
        if f.name.endswith(".json"):
            d = json.loads(f.read_text())
            out[d["name"]] = ModelPreset(d["name"], d["family"], d["description"], d["hf_config"])
    return out


def list_presets() -> list[ModelPreset]:
    return list(_load_all().values())


def get_preset(name: str) -> ModelPreset:
    presets = _load_all()
    if name not in presets:
        raise UserError(f"--model={name!r}: not a preset or a directory; presets: {', '.join(presets)}")
    return presets[name]


@lru_cache(maxsize=None)
def count_params(name: str) -> int:
    """Parameters of a preset, counted on the meta device (no memory, exact)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(get_preset(name).config())
    return sum(p.numel() for p in m.parameters())


def memory_needed_bytes(n_params: int, hf_config: dict[str, Any], dtype: str, batch: int, max_seq_len: int,
                        kv_cache: bool = True, *, grouped: bool = False) -> tuple[int, int, int]:
    """(total, weights, kv) bytes to run a model: weights + KV cache + a margin for activations
    (``grouped``: see :func:`kv_bytes_per_token`)."""
    b = DTYPE_BYTES[dtype]
    weights = n_params * b
    kv = kv_bytes_per_token(hf_config, b, grouped=grouped) * batch * max_seq_len if kv_cache else 0
    total = weights + kv + int(MARGIN_FRACTION * weights) + MARGIN_BYTES
    return total, weights, kv
