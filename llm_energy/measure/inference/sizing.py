"""Will a sweep fit: device memory for weights plus KV cache at the sweep's largest batch and sequence, the model's context length, and the static backend's length buckets. One set of rules, used by the node before it measures and by the cluster's placement check before any actor starts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llm_energy.errors import UserError, bad_value

if TYPE_CHECKING:  # loading imports this module
    from llm_energy.measure.inference.loading import ModelSource

MIN_BUCKET = 256


class DeviceMemoryError(UserError):
    """The device cannot hold what a trial needs (the static backend's cache of its batch and bucket),
    even after every other cache was given back: reported as one line, the trials before it kept."""


def free_memory_bytes(device: str) -> int:
    """Free memory of a device: CUDA's free bytes, or the host's available memory for the CPU."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def fmt_bytes(n: float) -> str:
    """Bytes in GiB (two decimals), or MiB under 1 GiB (tiny models' caches)."""
    return f"{n / 2**30:.2f} GiB" if abs(n) >= 2**30 else f"{n / 2**20:.2f} MiB"


def out_of_memory_text(e: BaseException) -> str:
    """torch's out-of-memory message up to its advice: what was asked for, what the device has free."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text.split(". Including")[0].split(". Of the allocated")[0]


def check_fits(name: str, n_params: int, hf_config: dict[str, Any], dtype: str, devices: list[str], *,
               batch: int = 1, max_seq_len: int = 4096, kv_cache: bool = True, grouped: bool = False) -> None:
    """Refuse up front a model that does not fit the free memory of its device(s) with a KV cache of
    ``batch`` sequences of ``max_seq_len`` tokens (pass the sweep's largest batch and tin + tout;
    ``grouped``: :func:`kv_groups_cached`)."""
    from llm_energy.measure.inference.presets import memory_needed_bytes

    need, weights, kv = memory_needed_bytes(n_params, hf_config, dtype, batch, max_seq_len, kv_cache=kv_cache,
                                            grouped=grouped)
    free = sum(free_memory_bytes(d) for d in devices)
    if need > free:
        gib = 2**30
        kv_text = f"KV cache {kv / gib:.1f} GiB at batch {batch} x {max_seq_len} tokens" if kv_cache else \
            f"no KV cache (batch {batch} x {max_seq_len} tokens)"
        raise UserError(
            f"--model={name!r}: needs {need / gib:.1f} GiB in {dtype} (weights {weights / gib:.1f} GiB + {kv_text} "
            f"+ margin), but {'+'.join(devices)} {'has' if len(devices) == 1 else 'have'} {free / gib:.1f} GiB free"
        )


def is_static_backend(backend: str) -> bool:
    """``static`` or one of its ``static+OPTIONS`` variants: a static cache of a length bucket."""
    return backend.split("+")[0] == "static"


def kv_groups_cached(backend: str) -> bool:
    """Whether the backend's cache holds a falcon new-decoder model's KV groups rather than their copies
    to every query head: the static backend's ``gqa`` option (packed_gqa.py; ``presets.kv_bytes_per_token``,
    which from transformers 5.25 counts the groups under every backend: transformers caches them itself)."""
    return is_static_backend(backend) and "gqa" in backend.split("+")[1:]


def kv_cache_len(backend: str, max_seq_len: int) -> int:
    """Tokens a backend's KV cache holds per sequence for sequences of up to ``max_seq_len``: a static
    cache holds its whole length bucket (what ``no-cache`` holds is not a KV cache: see
    :func:`sweep_memory_bytes`; ``static+OPTIONS`` variants hold a static cache too)."""
    return bucket_len(max_seq_len) if is_static_backend(backend) else max_seq_len


def check_positions(src: ModelSource, max_seq_len: int, *, beyond_context: bool = False) -> None:
    """Refuse a sweep whose longest sequence (tin + tout) exceeds the model's ``max_position_embeddings``,
    unless ``beyond_context`` (``--beyond-context``: the sweep measures the cost of such sequences on
    purpose, as the paper's authors did for Falcon's 2048-token context; rotary models compute them)."""
    limit = src.max_positions
    if limit is not None and max_seq_len > limit and not beyond_context:
        raise UserError(f"--model={src.name!r}: the sweep's longest sequence tin + tout = {max_seq_len} tokens "
                        f"exceeds the model's max_position_embeddings={limit} (--beyond-context measures it anyway)")


def check_static_window(src: ModelSource, backend: str, max_seq_len: int) -> None:
    """Refuse a static-cache sweep whose length bucket is longer than the model's sliding window
    (mistral-7b: 4096 tokens, so tin + tout > 4096). Inside the window the static backend caches without
    it (``backends.static_cache_config``: the window masks nothing there); beyond it, transformers'
    sliding-window static layer keeps its position as a Python int that the compiled decode step guards
    on, so the step recompiles at every token until dynamo gives up and runs it uncompiled: no trial of
    such a sweep measures a compiled decode. The ``cache`` backend measures those sequences."""
    cfg = src.hf_config or {}
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window", True) is not False else None  # Qwen2's switch
    if not is_static_backend(backend) or not window or bucket_len(max_seq_len) <= int(window):
        return
    raise UserError(f"--backend={backend!r}: --model={src.name!r} has a {int(window)}-token sliding window, shorter "
                    f"than the static cache of the sweep's longest sequence tin + tout = {max_seq_len} tokens "
                    f"({bucket_len(max_seq_len)}-token bucket): its compiled decode step would recompile at every "
                    "token; measure sequences past the window with --backend cache")


def static_cache_bytes(hf_config: dict[str, Any], dtype: str, batch: int, cache_len: int, *,
                       grouped: bool = False) -> tuple[int, int]:
    """(kv, room): the bytes a static cache of ``batch`` x ``cache_len`` tokens holds, and the free memory
    preparing it should find: its KV plus the activations of a prefill of up to ``cache_len`` tokens (MLP
    and hidden states, about 3 x (hidden + intermediate) values a token; logits are kept for 1 token only)."""
    from llm_energy.measure.inference.presets import DTYPE_BYTES, kv_bytes_per_token

    b = DTYPE_BYTES[dtype]
    kv = kv_bytes_per_token(hf_config, b, grouped=grouped) * batch * cache_len
    width = int(hf_config.get("hidden_size") or 0) + int(hf_config.get("intermediate_size") or 0)
    return kv, kv + 3 * width * b * batch * cache_len


def sweep_memory_bytes(src: ModelSource, dtype: str, *, batch: int, max_seq_len: int,
                       backend: str = "cache") -> tuple[int, int, int]:
    """(total, weights, kv) bytes a sweep of ``batch`` x ``max_seq_len`` tokens needs on ``backend``."""
    from llm_energy.measure.inference.presets import memory_needed_bytes

    return memory_needed_bytes(src.n_params, src.hf_config, dtype, batch, kv_cache_len(backend, max_seq_len),
                               kv_cache=backend != "no-cache", grouped=kv_groups_cached(backend))


def check_sweep(src: ModelSource, dtype: str, devices: list[str], *, batch: int, max_seq_len: int,
                backend: str = "cache", beyond_context: bool = False) -> None:
    """Refuse before anything is measured or stored: a sweep whose longest sequence (tin + tout)
    exceeds the model's ``max_position_embeddings``, or whose largest batch x longest sequence does
    not fit the devices' free memory (a static cache holds its whole length bucket)."""
    if any(d.startswith("cuda") for d in devices):
        import torch

        if not torch.cuda.is_available():
            raise bad_value("--device", devices[0], "CUDA is not available on this node")
    check_positions(src, max_seq_len, beyond_context=beyond_context)
    check_static_window(src, backend, max_seq_len)
    check_fits(src.name, src.n_params, src.hf_config, dtype, devices, batch=batch,
               max_seq_len=kv_cache_len(backend, max_seq_len), kv_cache=backend != "no-cache",
               grouped=kv_groups_cached(backend))


def bucket_len(n: int) -> int:
    """The static cache length for ``n`` tokens: the next power of two, at least MIN_BUCKET."""
    b = MIN_BUCKET
    while b < n:
        b *= 2
    return b
