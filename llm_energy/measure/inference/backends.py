"""Inference backends on HF transformers behind one interface.

A backend runs one generation of ``batch`` sequences: a prompt of exactly ``tin`` tokens each (seeded
token ids, no special tokens) and exactly ``tout`` new tokens each (greedy; EOS cannot stop it,
because the loop is ours, not ``generate()``). Times are device-synchronised.

* ``cache``: KV cache (DynamicCache), eager decode. The default.
* ``no-cache``: ``use_cache=False``: every decode step reprocesses the whole sequence (the paper's set-up).
* ``static``: a StaticCache sized to a length bucket (powers of two, at least 256) and a
  ``torch.compile``d single-token decode step (``reduce-overhead``: CUDA graphs on GPUs). The cache
  tracks its position in a device tensor, so decode steps never recompile; a new bucket or batch
  size compiles once, in ``prepare()``, outside any measurement window.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_energy.errors import UserError, bad_value

BACKENDS = ("cache", "no-cache", "static")
DTYPES = ("auto", "bfloat16", "float16", "float32")
MIN_BUCKET = 256


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """Timing and token counts of one generation (times in seconds, device-synchronised)."""

    batch: int
    tin_actual: int  # prompt tokens per sequence actually fed
    tout_actual: int  # new tokens per sequence actually generated
    prefill_s: float  # time to first token
    decode_s: float  # remaining tout-1 steps
    runtime_s: float  # prefill_s + decode_s


@dataclass(slots=True)
class LoadedModel:
    """A model built on its device(s), with what the profiler records about it."""

    name: str  # preset name or checkpoint dir
    model: Any  # transformers PreTrainedModel
    config: Any
    device: str  # "cpu" or "cuda:N" (the input device when sharded)
    dtype: str  # "bfloat16" | "float32" | "float16"
    n_params: int
    vocab_size: int
    special_ids: tuple[int, ...] = ()
    gpu_indices: tuple[int, ...] = ()  # GPUs holding the weights (empty on CPU)


# ---- loading ------------------------------------------------------------------------------------
def _torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def resolve_dtype(dtype: str, device: str) -> str:
    if dtype not in DTYPES:
        raise bad_value("--dtype", dtype, f"choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    return dtype


def free_memory_bytes(device: str) -> int:
    """Free memory of a device: CUDA's free bytes, or the host's available memory for the CPU."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(name: str, n_params: int, hf_config: dict[str, Any], dtype: str, devices: list[str], *,
               batch: int = 1, max_seq_len: int = 4096, kv_cache: bool = True) -> None:
    """Refuse up front a model that does not fit the free memory of its device(s) with a KV cache of
    ``batch`` sequences of ``max_seq_len`` tokens (pass the sweep's largest batch and tin + tout)."""
    from llm_energy.measure.inference.presets import memory_needed_bytes

    need, weights, kv = memory_needed_bytes(n_params, hf_config, dtype, batch, max_seq_len, kv_cache=kv_cache)
    free = sum(free_memory_bytes(d) for d in devices)
    if need > free:
        gib = 2**30
        kv_text = f"KV cache {kv / gib:.1f} GiB at batch {batch} x {max_seq_len} tokens" if kv_cache else \
            f"no KV cache (batch {batch} x {max_seq_len} tokens)"
        raise UserError(
            f"--model={name!r}: needs {need / gib:.1f} GiB in {dtype} (weights {weights / gib:.1f} GiB + {kv_text} "
            f"+ margin), but {'+'.join(devices)} {'has' if len(devices) == 1 else 'have'} {free / gib:.1f} GiB free"
        )


@dataclass(slots=True)
class ModelSource:
    """A preset or a checkpoint dir, read (config and parameter count) but not built."""

    name: str
    config: Any  # transformers config
    hf_config: dict[str, Any]
    n_params: int
    checkpoint: bool
    has_weights: bool

    @property
    def max_positions(self) -> int | None:
        v = self.hf_config.get("max_position_embeddings")
        return int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def read_model(name_or_dir: str) -> ModelSource:
    """The config and exact parameter count of a preset or a local checkpoint dir (built on the meta
    device: no memory). A missing, unreadable or unknown config is a one-line UserError naming it."""
    path = Path(name_or_dir)
    if not path.is_dir():
        from llm_energy.measure.inference.presets import get_preset

        preset = get_preset(name_or_dir)
        return ModelSource(name_or_dir, preset.config(), preset.hf_config, preset.n_params, False, False)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise UserError(f"{path}: a checkpoint directory needs a config.json")
    # the config is the user's file parsed and validated by transformers, which raises many kinds of
    # errors for a bad one (OSError for bad JSON, ValueError for an unknown model_type, huggingface_hub's
    # validation errors for inconsistent sizes): each is reported as one line naming the file
    try:
        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{cfg_path}: not a usable model config ({_first_line(e)})") from None
    try:
        with torch.device("meta"):
            n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{cfg_path}: model_type={getattr(cfg, 'model_type', None)!r}: cannot build a causal LM "
                        f"from it ({_first_line(e)})") from None
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    return ModelSource(name_or_dir, cfg, cfg.to_dict(), n_params, True, has_weights)


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message (of its cause's where the message only introduces it)."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    if line.endswith(":") and e.__cause__ is not None:
        return _first_line(e.__cause__)
    return line


def kv_cache_len(backend: str, max_seq_len: int) -> int:
    """Tokens a backend's KV cache holds per sequence for sequences of up to ``max_seq_len``: a static
    cache holds its whole length bucket (what ``no-cache`` holds is not a KV cache: see
    :func:`sweep_memory_bytes`)."""
    return bucket_len(max_seq_len) if backend == "static" else max_seq_len


def check_positions(src: ModelSource, max_seq_len: int) -> None:
    """Refuse a sweep whose longest sequence (tin + tout) exceeds the model's ``max_position_embeddings``."""
    limit = src.max_positions
    if limit is not None and max_seq_len > limit:
        raise UserError(f"--model={src.name!r}: the sweep's longest sequence tin + tout = {max_seq_len} tokens "
                        f"exceeds the model's max_position_embeddings={limit}")


def sweep_memory_bytes(src: ModelSource, dtype: str, *, batch: int, max_seq_len: int,
                       backend: str = "cache") -> tuple[int, int, int]:
    """(total, weights, kv) bytes a sweep of ``batch`` x ``max_seq_len`` tokens needs on ``backend``."""
    from llm_energy.measure.inference.presets import memory_needed_bytes

    return memory_needed_bytes(src.n_params, src.hf_config, dtype, batch, kv_cache_len(backend, max_seq_len),
                               kv_cache=backend != "no-cache")


def check_sweep(src: ModelSource, dtype: str, devices: list[str], *, batch: int, max_seq_len: int,
                backend: str = "cache") -> None:
    """Refuse before anything is measured or stored: a sweep whose longest sequence (tin + tout)
    exceeds the model's ``max_position_embeddings``, or whose largest batch x longest sequence does
    not fit the devices' free memory (a static cache holds its whole length bucket)."""
    if any(d.startswith("cuda") for d in devices):
        import torch

        if not torch.cuda.is_available():
            raise bad_value("--device", devices[0], "CUDA is not available on this node")
    check_positions(src, max_seq_len)
    check_fits(src.name, src.n_params, src.hf_config, dtype, devices, batch=batch,
               max_seq_len=kv_cache_len(backend, max_seq_len), kv_cache=backend != "no-cache")


def load_model(name_or_dir: str, device: str = "auto", dtype: str = "auto", *,
               gpu_indices: tuple[int, ...] | None = None, seed: int = 0, batch: int = 1, max_seq_len: int = 4096,
               kv_cache: bool = True) -> LoadedModel:
    """Build a preset (random weights, directly on the device) or load a local checkpoint dir.

    With several ``gpu_indices`` the decoder layers are spread over those GPUs (embedding on the
    first, final norm and LM head on the last), each built directly on its GPU. The memory check
    assumes ``batch`` sequences of ``max_seq_len`` tokens (the profiler passes its sweep's largest).
    """
    import torch
    from transformers import AutoModelForCausalLM

    if device == "auto":
        device = f"cuda:{gpu_indices[0] if gpu_indices else 0}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise bad_value("--device", device, "CUDA is not available on this node")
    dt = resolve_dtype(dtype, device)
    path = Path(name_or_dir)
    src = read_model(name_or_dir)
    cfg, hf_cfg, n_params, checkpoint, has_weights = src.config, src.hf_config, src.n_params, src.checkpoint, src.has_weights
    gpus = tuple(gpu_indices) if gpu_indices else ((int(device.split(":")[1]),) if device.startswith("cuda:") else ())
    devices = [f"cuda:{i}" for i in gpus] if gpus else ["cpu"]
    check_fits(name_or_dir, n_params, hf_cfg, dt, devices, batch=batch, max_seq_len=max_seq_len, kv_cache=kv_cache)
    torch.manual_seed(seed)
    tdt = _torch_dtype(dt)
    if checkpoint and has_weights:
        kw: dict[str, Any] = {"local_files_only": True, "dtype": tdt, "attn_implementation": "sdpa"}
        if len(gpus) > 1:
            kw["device_map"] = layer_device_map(cfg.num_hidden_layers, devices)
        else:
            kw["device_map"] = devices[0]
        model = AutoModelForCausalLM.from_pretrained(path, **kw)
    elif len(gpus) > 1:
        model = _build_sharded(cfg, tdt, devices)
    else:
        with torch.device(devices[0]):
            model = AutoModelForCausalLM.from_config(cfg, dtype=tdt, attn_implementation="sdpa")
    model.eval()
    special = tuple(sorted({int(i) for i in _ids(cfg, "bos_token_id", "eos_token_id", "pad_token_id")}))
    return LoadedModel(
        name=name_or_dir, model=model, config=cfg, device=devices[0], dtype=dt, n_params=n_params,
        vocab_size=int(cfg.vocab_size), special_ids=special, gpu_indices=gpus,
    )


def _ids(cfg: Any, *names: str) -> list[int]:
    out: list[int] = []
    for n in names:
        v = getattr(cfg, n, None)
        if isinstance(v, int):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(int(x) for x in v)
    return out


def layer_device_map(n_layers: int, devices: list[str]) -> dict[str, str]:
    """Balanced placement of decoder layers over devices (HF ``device_map`` keys, llama-style names).

    Layers are split into contiguous, near-equal runs; the embedding goes with the first run and the
    final norm and LM head with the last (which holds one layer fewer when the split is uneven, since
    the LM head is large).
    """
    k = len(devices)
    if k < 1 or n_layers < k:
        raise ValueError(f"cannot place {n_layers} layers on {k} devices")
    base, extra = divmod(n_layers, k)
    sizes = [base + (1 if i < extra else 0) for i in range(k)]
    out: dict[str, str] = {"model.embed_tokens": devices[0], "model.rotary_emb": devices[0]}
    layer = 0
    for dev, n in zip(devices, sizes):
        for _ in range(n):
            out[f"model.layers.{layer}"] = dev
            layer += 1
    out["model.norm"] = devices[-1]
    out["lm_head"] = devices[-1]
    return out


def _build_sharded(cfg: Any, tdt: Any, devices: list[str]):
    """Build a decoder model with its layers spread over several GPUs, each part directly on its GPU."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=tdt, attn_implementation="sdpa")
    placement = layer_device_map(cfg.num_hidden_layers, devices)
    for prefix, dev in placement.items():
        mod = model.get_submodule(prefix)
        mod.to_empty(device=dev, recurse=True)
        with torch.no_grad():
            for p in mod.parameters(recurse=True):
                if p.dim() >= 2:
                    nn.init.normal_(p, std=getattr(cfg, "initializer_range", 0.02))
                else:
                    nn.init.ones_(p)
    rot = model.get_submodule("model.rotary_emb")
    with torch.device(placement["model.rotary_emb"]):  # its inv_freq buffer is computed, not a parameter
        model.model.rotary_emb = type(rot)(config=cfg)
    model.hf_device_map = placement
    _add_device_hooks(model, placement)
    return model


def _add_device_hooks(model: Any, placement: dict[str, str]) -> None:
    """Move each layer's tensor inputs to its device (what accelerate's hooks do, minimal)."""
    import torch

    def to_dev(x, dev):
        if isinstance(x, torch.Tensor):
            return x.to(dev, non_blocking=True)
        if isinstance(x, tuple):
            return tuple(to_dev(y, dev) for y in x)
        return x

    for prefix, dev in placement.items():
        if not prefix.startswith("model.layers.") and prefix not in ("model.norm", "lm_head"):
            continue
        mod = model.get_submodule(prefix)

        def pre_hook(_m, args, kwargs, dev=dev):
            return tuple(to_dev(a, dev) for a in args), {k: to_dev(v, dev) for k, v in kwargs.items()}

        mod.register_forward_pre_hook(pre_hook, with_kwargs=True)


# ---- backends -----------------------------------------------------------------------------------
class InferenceBackend(ABC):
    name: str = "?"

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.is_cuda = loaded.device.startswith("cuda")
        self._warm_shapes: set[tuple[int, int]] = set()

    def prepare(self, batch: int, tin: int, tout: int) -> None:
        """Work done before a measurement window: the first time a (batch, tin) prompt shape is seen,
        one unmeasured short generation at that shape (kernel selection, allocator growth)."""
        if (batch, tin) not in self._warm_shapes:
            self._warm_shapes.add((batch, tin))
            self.generate(self.make_prompt(batch, tin, seed=-1 & 0xFFFF), 2)

    def make_prompt(self, batch: int, tin: int, seed: int) -> Any:
        """Token ids [batch, tin] drawn with a seeded generator from the vocabulary minus special ids."""
        import torch

        if batch < 1 or tin < 1:
            raise bad_value("batch/tin", (batch, tin), "must be positive")
        g = torch.Generator().manual_seed(int(seed))
        vocab = self.loaded.vocab_size
        special = torch.tensor(self.loaded.special_ids or (-1,))
        ids = torch.randint(0, vocab, (batch, tin), generator=g)
        bad = torch.isin(ids, special)
        while bad.any():  # redraw the few special ids
            ids[bad] = torch.randint(0, vocab, (int(bad.sum()),), generator=g)
            bad = torch.isin(ids, special)
        return ids.to(self.loaded.device)

    def _sync(self) -> None:
        if self.is_cuda:
            import torch

            for i in self.loaded.gpu_indices or (0,):
                torch.cuda.synchronize(i)

    @abstractmethod
    def _run(self, input_ids: Any, tout: int) -> tuple[int, float, float]:
        """Generate; return (new tokens per sequence, prefill end time, end time) (perf_counter)."""

    def generate(self, input_ids: Any, tout: int) -> GenerationResult:
        """Greedy-generate exactly ``tout`` new tokens per sequence."""
        import torch

        if tout < 1:
            raise bad_value("tout", tout, "must be >= 1")
        with torch.inference_mode():
            self._sync()
            t0 = time.perf_counter()
            produced, t_first, t_end = self._run(input_ids, tout)
        batch, tin = int(input_ids.shape[0]), int(input_ids.shape[1])
        return GenerationResult(batch=batch, tin_actual=tin, tout_actual=produced, prefill_s=t_first - t0,
                                decode_s=t_end - t_first, runtime_s=t_end - t0)


class CacheBackend(InferenceBackend):
    """KV cache (DynamicCache), eager decode."""

    name = "cache"

    def _run(self, ids, tout):
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
        produced = nxt.shape[1]
        self._sync()
        t_first = time.perf_counter()
        for _ in range(tout - 1):
            out = self.model(input_ids=nxt, cache=cache, use_cache=True, logits_to_keep=1)
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
            produced += nxt.shape[1]
        self._sync()
        self.last_tokens = nxt
        return produced, t_first, time.perf_counter()


class NoCacheBackend(InferenceBackend):
    """No KV cache: every step reprocesses the whole sequence (the paper's set-up)."""

    name = "no-cache"

    def _run(self, ids, tout):
        import torch

        seq = ids
        produced = 0
        t_first = 0.0
        for step in range(tout):
            logits = self.model(input_ids=seq, use_cache=False, logits_to_keep=1).logits
            nxt = logits[:, -1, :].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
            produced += 1
            if step == 0:
                self._sync()
                t_first = time.perf_counter()
        self._sync()
        self.last_tokens = seq[:, ids.shape[1]:]
        return seq.shape[1] - ids.shape[1], t_first, time.perf_counter()


def bucket_len(n: int) -> int:
    """The static cache length for ``n`` tokens: the next power of two, at least MIN_BUCKET."""
    b = MIN_BUCKET
    while b < n:
        b *= 2
    return b


class StaticBackend(InferenceBackend):
    """StaticCache + compiled single-token decode (CUDA graphs on GPUs), one compile per bucket x batch."""

    name = "static"

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__(loaded)
        import torch

        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
        if hasattr(torch._dynamo.config, "accumulated_cache_size_limit"):
            torch._dynamo.config.accumulated_cache_size_limit = max(512, torch._dynamo.config.accumulated_cache_size_limit)
        mode = "reduce-overhead" if self.is_cuda else None
        self._decode = torch.compile(self._decode_step, mode=mode, fullgraph=False, dynamic=False)
        self._caches: dict[tuple[int, int], Any] = {}
        self._cache = None
        self.compiles = 0  # buckets x batches prepared (each compiles the decode step once)

    def _decode_step(self, tok, pos, cache):
        out = self.model(input_ids=tok, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].argmax(-1, keepdim=True)

    def prepare(self, batch: int, tin: int, tout: int) -> None:
        key = (batch, bucket_len(tin + tout))
        self._prepare_bucket(key)
        super().prepare(batch, tin, tout)

    def _prepare_bucket(self, key: tuple[int, int]) -> None:
        batch = key[0]
        if key not in self._caches:
            from transformers import StaticCache

            self._caches[key] = StaticCache(config=self.loaded.config, max_cache_len=key[1])
            self.compiles += 1
            self._cache = self._caches[key]
            # compile (and capture graphs) now, outside any measurement window
            warm = self.make_prompt(batch, 8, seed=0)
            for _ in range(2):
                self.generate(warm, 4)
        self._cache = self._caches[key]

    def _run(self, ids, tout):
        import torch

        batch, tin = int(ids.shape[0]), int(ids.shape[1])
        key = (batch, bucket_len(tin + tout))
        if self._cache is None or key not in self._caches or self._caches[key] is not self._cache:
            self._prepare_bucket(key)
        cache = self._cache
        cache.reset()
        out = self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
        produced = 1
        self._sync()
        t_first = time.perf_counter()
        pos = torch.full((1, 1), tin, dtype=torch.long, device=ids.device)
        for _ in range(tout - 1):
            nxt = self._decode(nxt, pos, cache).clone()
            pos += 1
            produced += 1
        self._sync()
        self.last_tokens = nxt
        return produced, t_first, time.perf_counter()


_BACKEND_CLASSES = {"cache": CacheBackend, "no-cache": NoCacheBackend, "static": StaticBackend}


def make_backend(name: str, loaded: LoadedModel) -> InferenceBackend:
    try:
        cls = _BACKEND_CLASSES[name]
    except KeyError:
        raise bad_value("--backend", name, f"unknown backend; choose one of {', '.join(BACKENDS)}") from None
    return cls(loaded)
