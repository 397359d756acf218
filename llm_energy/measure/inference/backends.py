"""Inference backends on HF transformers behind one interface.

A backend runs one generation of ``batch`` sequences: a prompt of exactly ``tin`` tokens each (seeded
token ids, no special tokens) and exactly ``tout`` new tokens each (greedy; EOS cannot stop it,
because the loop is ours, not ``generate()``). Times are device-synchronised.

* ``cache``: KV cache (DynamicCache), eager decode. The default.
* ``no-cache``: ``use_cache=False``: every decode step reprocesses the whole sequence (the paper's set-up).
  Both eager backends run SDPA without its cuDNN kernels (attention.py: cuDNN builds a graph per new key
  length, which made a trial's cost depend on what the process ran before).
* ``static``: a StaticCache sized to a length bucket (powers of two, at least 256) and a
  ``torch.compile``d single-token decode step (``reduce-overhead``: CUDA graphs on GPUs). The cache
  tracks its position in a device tensor, so decode steps never recompile; a new bucket or batch
  size compiles once, in ``prepare()``, outside any measurement window.
* ``static+OPTION[+OPTION...]``: the same with the options of ``fusion.STATIC_OPTIONS`` (fused q/k/v and
  gate/up projections, inductor tuning, ...); the label names what ran, options in a fixed order.
  ``cprefill`` compiles the prefill too, with dynamic shapes (gpt-fast's ``compile_prefill``:
  ``torch.compile(prefill, fullgraph=True, dynamic=True)``, inductor's defaults, no CUDA graphs), so one
  graph serves every prompt length; its compiles (a shape's first, a 1-token prompt's, a batch > 1's) run
  in ``prepare()`` like the decode step's, which ``prepare`` already runs at each trial's exact shape.
  A new cache's first prefill runs eager: transformers initialises a StaticCache's layers lazily there,
  a state the compiled prefill would otherwise compile a graph of its own for.
  One cache per (batch, bucket) is kept while the device holds them; before a new one, the least recently
  used others are given back until it fits (``StaticBackend._make_room``), and an evicted key prepares
  again (compile or graph capture in ``prepare()``). A cache that does not fit alone is a ``DeviceMemoryError``.

The KV cache is passed under the keyword the installed transformers takes (``cache`` from 5.24,
``past_key_values`` before, e.g. 5.17, which silently ignores ``cache``: each step would attend to
itself only, from a new empty cache).
"""

from __future__ import annotations

import gc
import time
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from llm_energy.errors import bad_value
from llm_energy.measure.inference.attention import EAGER_SDPA, eager_attention
from llm_energy.measure.inference.compiles import modules_pickle_can_search
from llm_energy.measure.inference.loading import LoadedModel
from llm_energy.measure.inference.sizing import (DeviceMemoryError, bucket_len, fmt_bytes, out_of_memory_text,
                                               static_cache_bytes)

BACKENDS = ("cache", "no-cache", "static", "static+fused", "static+fused+cdt")  # any static+OPTIONS also runs


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """Timing and token counts of one generation (times in seconds, device-synchronised)."""

    batch: int
    tin_actual: int  # prompt tokens per sequence actually fed
    tout_actual: int  # new tokens per sequence actually generated
    prefill_s: float  # time to first token
    decode_s: float  # remaining tout-1 steps
    runtime_s: float  # prefill_s + decode_s


# ---- backends -----------------------------------------------------------------------------------
class InferenceBackend(ABC):
    name: str = "?"
    compiles_torch = False  # whether generate may run torch.compile (compiles.modules_pickle_can_search)
    eager_sdpa: str | None = None  # the SDPA kernels an eager backend restricts its forwards to (attention.py)
    compile_backend: str | None = None  # a static backend's torch.compile backend where not inductor (fusion.py)

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.is_cuda = loaded.device.startswith("cuda")
        self._warm_shapes: set[tuple[int, ...]] = set()  # (batch, tin); static: (batch, tin, bucket)
        self._kv = cache_keyword(self.model)
        self.fused = False  # the weights layout this backend runs (fusion.py); set again before each generation
        self.packed_gqa = False  # the decode attention on the KV heads (packed_gqa.py); likewise

    @property
    def kv_keyword(self) -> str | None:
        """The keyword this backend passes its KV cache to the model under (None: it keeps no cache); the
        profiler stores it with every trial (erratum ``kv-cache-ignored``, trials/errata.py)."""
        return None if self.name == "no-cache" else self._kv

    def version_marks(self) -> dict[str, str]:
        """What the profiler stores about this backend in every trial's versions (no part of the sweep's
        identity): the keyword of its KV cache (``kv_cache_keyword``, erratum ``kv-cache-ignored``), an eager
        backend's SDPA kernels (``eager_sdpa``, attention.py), a static backend's torch.compile backend where
        it is not inductor (``torch_compile_backend``: LLM_ENERGY_COMPILE_BACKEND, fusion.py)."""
        marks = {"kv_cache_keyword": self.kv_keyword, "eager_sdpa": self.eager_sdpa,
                 "torch_compile_backend": self.compile_backend}
        return {k: v for k, v in marks.items() if v}

    def prepare(self, batch: int, tin: int, tout: int) -> None:
        """Work done before a measurement window: the first time a (batch, tin) prompt shape is seen,
        one unmeasured short generation at that shape (kernel selection, allocator growth)."""
        self._warm_shape((batch, tin), batch, tin, self.generate)

    def _warm_shape(self, shape: tuple[int, ...], batch: int, tin: int, generate: Any) -> None:
        """The first time ``shape`` is seen: one unmeasured 2-token generation of a (batch, tin) prompt
        through ``generate(ids, tout)``."""
        if shape not in self._warm_shapes:
            self._warm_shapes.add(shape)
            generate(self.make_prompt(batch, tin, seed=-1 & 0xFFFF), 2)

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

    def _restore_layout(self) -> None:
        """The weights layout and attention function this backend runs (another backend may share the
        model and have changed them): fused projections and packed GQA attention (fusion.py, packed_gqa.py)."""
        from llm_energy.measure.inference.fusion import set_fused
        from llm_energy.measure.inference.packed_gqa import set_packed_gqa

        set_fused(self.model, self.fused)  # each a no-op where the model already runs what is asked
        set_packed_gqa(self.model, self.packed_gqa)

    def generate(self, input_ids: Any, tout: int) -> GenerationResult:
        """Greedy-generate exactly ``tout`` new tokens per sequence."""
        import torch

        if tout < 1:
            raise bad_value("tout", tout, "must be >= 1")
        self._restore_layout()
        with torch.inference_mode(), modules_pickle_can_search() if self.compiles_torch else nullcontext():
            self._sync()
            t0 = time.perf_counter()
            produced, t_first, t_end = self._run(input_ids, tout)
        batch, tin = int(input_ids.shape[0]), int(input_ids.shape[1])
        return GenerationResult(batch=batch, tin_actual=tin, tout_actual=produced, prefill_s=t_first - t0,
                                decode_s=t_end - t_first, runtime_s=t_end - t0)


class EagerBackend(InferenceBackend):
    """An eager backend: its forwards run under ``attention.eager_attention`` (SDPA without cuDNN), so a
    step's cost is a function of its shapes, not of the key lengths earlier generations built graphs for."""

    eager_sdpa = EAGER_SDPA

    def _run(self, ids, tout):
        with eager_attention():
            return self._loop(ids, tout)

    @abstractmethod
    def _loop(self, ids: Any, tout: int) -> tuple[int, float, float]:
        """``_run``'s generation, under the eager backends' attention kernels."""


class CacheBackend(EagerBackend):
    """KV cache (DynamicCache), eager decode."""

    name = "cache"

    def _loop(self, ids, tout):
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
        produced = nxt.shape[1]
        self._sync()
        t_first = time.perf_counter()
        for _ in range(tout - 1):
            out = self.model(input_ids=nxt, use_cache=True, logits_to_keep=1, **{self._kv: cache})
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
            produced += nxt.shape[1]
        self._sync()
        self.last_tokens = nxt
        return produced, t_first, time.perf_counter()


class NoCacheBackend(EagerBackend):
    """No KV cache: every step reprocesses the whole sequence (the paper's set-up)."""

    name = "no-cache"

    def _loop(self, ids, tout):
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


class StaticBackend(InferenceBackend):
    """StaticCache + compiled single-token decode (CUDA graphs on GPUs), one compile per bucket x batch (dynbatch:
    per bucket for batches >= 2); ``options``: the variant's ``fusion.STATIC_OPTIONS`` (``fused`` changes
    ``loaded.model`` in place; each backend restores its layout before each generation: they may share a model)."""

    name = "static"
    compiles_torch = True

    def __init__(self, loaded: LoadedModel, options: tuple[str, ...] = ()) -> None:
        super().__init__(loaded)
        import torch

        from llm_energy.measure.inference import fusion, packed_gqa

        self.options = tuple(options)
        self.name = fusion.static_label(self.options)
        self.fused = "fused" in self.options
        self.fused_modules = fusion.set_fused(self.model, self.fused) if self.fused else 0
        self.packed_gqa = "gqa" in self.options and packed_gqa.set_packed_gqa(self.model, True)
        self._mark_batch = fusion.mark_batch_dynamic if "dynbatch" in self.options else None
        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
        if hasattr(torch._dynamo.config, "accumulated_cache_size_limit"):
            torch._dynamo.config.accumulated_cache_size_limit = max(512, torch._dynamo.config.accumulated_cache_size_limit)
        self._attention = fusion.decode_attention(self.options)  # the SDPA kernel choice of the decode step
        self.compile_kwargs = fusion.compile_kwargs(self.options, self.is_cuda)
        backend = fusion.compile_backend()  # inductor unless LLM_ENERGY_COMPILE_BACKEND (tests: aot_eager)
        self.compile_backend = None if backend == "inductor" else backend
        self._decode = torch.compile(self._decode_step, fullgraph=False, dynamic=False,
                                     **fusion.backend_kwargs(self.compile_kwargs, backend))
        self._prefill = (torch.compile(self._prefill_step, fullgraph=True, dynamic=True,
                                       **fusion.backend_kwargs({}, backend))
                         if "cprefill" in self.options else self._prefill_step)
        self._caches: dict[tuple[int, int], Any] = {}
        self._filled: set[tuple[int, int]] = set()  # buckets whose cache has been prefilled (initialised) once
        self._cache = None
        self._pinned: tuple[int, int] | None = None  # the bucket a warm-up generates in (_generate_in)
        self.compiles = 0  # caches prepared (a bucket x batch's first, and again after its eviction) that compiled
        # dynbatch: caches prepared without a compile (a batch >= 2 in a bucket whose dynamic-batch decode step
        # this process compiled: a CUDA graph recorded, ~0.2 s against ~35 s for llama-2-7b, ~110 s for the 70B)
        self.captures = 0
        self._dyn_buckets: dict[int, int] = {}  # dynbatch: bucket -> the dynamo generation its batch >= 2 step compiled in
        self.evictions = 0  # caches given back to make room for another (_make_room)
        self._hf_config = loaded.config.to_dict()

    def _decode_step(self, tok, pos, cache):
        with self._attention():
            out = self.model(input_ids=tok, position_ids=pos, use_cache=True, logits_to_keep=1, **{self._kv: cache})
        return out.logits[:, -1, :].argmax(-1, keepdim=True)

    def _prefill_step(self, ids, cache):
        """The prompt into ``cache``; the first new token (eager, or compiled with dynamic shapes under ``cprefill``)."""
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._kv: cache})
        return out.logits[:, -1, :].argmax(-1, keepdim=True)

    def prepare(self, batch: int, tin: int, tout: int) -> None:
        """The trial's bucket compiled (its first time) and, the first time a (batch, tin) prompt is seen in
        that bucket, one unmeasured 2-token generation in it. Both run in the trial's own bucket: the
        warm-ups used to size their caches from their own lengths (8 + 4 and tin + 2 tokens), so a trial
        whose tin + 2 fell in a smaller bucket than tin + tout (llama-2-7b 16 x 256 in 512) compiled its
        decode step inside the measurement window (H200: +7 s, +38 s for mistral-7b 32 x 1024)."""
        import torch

        key = (batch, bucket_len(tin + tout))
        for _ in range(2):
            try:
                self._prepare_bucket(key)
                self._warm_shape((batch, tin, key[1]), batch, tin, lambda ids, n: self._generate_in(key, ids, n))
                return
            except torch.OutOfMemoryError as e:  # the estimate fell short: every cache given back, once more
                why = out_of_memory_text(e)
            for k in list(self._caches):  # out of the except: its traceback's frames no longer hold the tensors
                self._evict(k)
            self._release()
        kv = static_cache_bytes(self._hf_config, self.loaded.dtype, *key, grouped=self.packed_gqa)[0]
        raise DeviceMemoryError(f"batch {batch}, tin {tin} + tout {tout} ({key[1]}-token static cache, KV "
                                f"{fmt_bytes(kv)}): {why}, with every other cache given back")

    def _prepare_bucket(self, key: tuple[int, int]) -> None:
        if key not in self._caches:
            from transformers import StaticCache

            self._make_room(key)
            self._caches[key] = StaticCache(config=static_cache_config(self.loaded.config, key[1]), max_cache_len=key[1])
            self._cache = self._caches[key]
            # compile (and capture graphs) now, in this bucket, outside any measurement window
            warm = self.make_prompt(key[0], 8, seed=0)
            from llm_energy.measure.inference.compiles import compile_count

            before = compile_count()
            for _ in range(2):
                self._generate_in(key, warm, 4)
            dyn = self._mark_batch is not None and key[0] >= 2
            if dyn and not (compile_count() - before).frames and self._dyn_compiled(key[1]):
                self.captures += 1  # the bucket's dynamic-batch step served this batch: a graph recorded, no compile
            else:
                self.compiles += 1
                if dyn:
                    self._dyn_buckets[key[1]] = StaticBackend._dynamo_resets
        self._caches[key] = self._caches.pop(key)  # the most recently used last: evicted last
        self._cache = self._caches[key]

    def _dyn_compiled(self, bucket: int) -> bool:
        """dynbatch: whether this process holds the bucket's compiled dynamic-batch decode step (no dynamo
        reset since it compiled)."""
        return self._dyn_buckets.get(bucket) == StaticBackend._dynamo_resets

    def will_compile(self, batch: int, tin: int, tout: int) -> bool:
        """Whether ``prepare`` compiles: a bucket x batch not cached compiles (again, after its eviction), except
        under ``dynbatch`` a batch >= 2 in a bucket whose dynamic-batch step is compiled (a graph recording)."""
        key = (batch, bucket_len(tin + tout))
        if key in self._caches:
            return False
        return not (self._mark_batch is not None and batch >= 2 and self._dyn_compiled(key[1]))

    def device_free_bytes(self) -> int | None:
        """Bytes a new cache can take on the device: CUDA's free memory plus what torch's allocator holds
        unused, on the model's GPU with the least (None on the CPU: no eviction there). Tests replace it."""
        if not self.is_cuda:
            return None
        import torch

        return min(int(torch.cuda.mem_get_info(i)[0]) + torch.cuda.memory_reserved(i) - torch.cuda.memory_allocated(i)
                   for i in self.loaded.gpu_indices or (torch.device(self.loaded.device).index or 0,))

    def _make_room(self, key: tuple[int, int]) -> None:
        """Give back the least recently used other caches until the device has room for ``key``'s (its KV
        plus a prefill's activations, split over the model's GPUs); a cache whose KV alone does not fit
        with every other one given back is a DeviceMemoryError."""
        free = self.device_free_bytes()
        if free is None:
            return
        kv, room = static_cache_bytes(self._hf_config, self.loaded.dtype, *key, grouped=self.packed_gqa)
        share = max(1, len(self.loaded.gpu_indices))
        kv, room = -(-kv // share), -(-room // share)
        others = [k for k in self._caches if k != key]  # least recently used first
        while free < room and others:
            self._evict(others.pop(0))
            self._release()
            free = self.device_free_bytes()
        if free < kv:
            raise DeviceMemoryError(f"batch {key[0]} ({key[1]}-token static cache): needs {fmt_bytes(room)} "
                                    f"(KV {fmt_bytes(kv)} + prefill activations), {fmt_bytes(free)} free "
                                    "with every other cache given back")

    def _evict(self, key: tuple[int, int]) -> None:
        """Forget ``key``'s cache, so that nothing here holds its tensors; its next trial prepares it again
        (a new cache's eager first prefill, the compile or graph capture, the warm-up of each prompt shape)."""
        cache = self._caches.pop(key, None)
        self._filled.discard(key)
        self._warm_shapes = {s for s in self._warm_shapes if len(s) != 3 or (s[0], s[2]) != key}
        if cache is not None:
            self.evictions += 1
            if self._cache is cache:
                self._cache = None

    def _release(self) -> None:
        """Freed caches' memory back to the device: cycles collected, torch's allocator emptied."""
        gc.collect()
        if self.is_cuda:
            import torch

            torch.cuda.empty_cache()

    def _generate_in(self, key: tuple[int, int], ids: Any, tout: int) -> GenerationResult:
        """``generate`` in the cache of bucket ``key`` (batch, length), not in the bucket of its own length."""
        if int(ids.shape[0]) != key[0] or int(ids.shape[1]) + tout > key[1]:
            raise bad_value("bucket", key, f"cannot hold batch {int(ids.shape[0])} x {int(ids.shape[1]) + tout} tokens")
        self._pinned = key
        try:
            return self.generate(ids, tout)
        finally:
            self._pinned = None

    #: (math, dynbatch): which of the two options the last static generation of this process ran under
    _setting_in_process: tuple[bool, bool] | None = None
    #: dynamo resets _isolate_attention made in this process (a compiled step older than the last is gone)
    _dynamo_resets: int = 0

    def _isolate_attention(self) -> None:
        """A fresh dynamo cache when the static generations of one process switch between SDPA settings (the
        ``math`` option or not) or between ``dynbatch`` and not (its dynamic graph would serve static's
        batches). Dynamo guards a compiled frame on what it reads, not on SDPA's kernel setting: the decode
        step's own frame tells the variants apart (``self._attention``), but after a graph break inside the
        model the frames below it are shared by backends compiled with equal settings, and one traced under
        the other setting (SDPA's kernel, ``packed_gqa.math_kernel_only``) would run, silently. A process of
        one backend (the profiler) never resets; decode_limit and gqa_attention reset between variants."""
        setting = ("math" in self.options, "dynbatch" in self.options)
        if StaticBackend._setting_in_process not in (None, setting):
            import torch

            from llm_energy.measure.inference.compiles import compile_count

            torch._dynamo.reset()
            StaticBackend._dynamo_resets += 1
            compile_count()  # the compile callback registered again (a reset clears it)
        StaticBackend._setting_in_process = setting

    def _run(self, ids, tout):
        import torch

        self._isolate_attention()
        batch, tin = int(ids.shape[0]), int(ids.shape[1])
        key = self._pinned or (batch, bucket_len(tin + tout))
        if self._cache is None or key not in self._caches or self._caches[key] is not self._cache:
            self._prepare_bucket(key)
        cache = self._cache
        cache.reset()
        prefill = self._prefill if key in self._filled else self._prefill_step  # a new cache's first: eager
        self._filled.add(key)
        nxt = prefill(ids, cache)
        if self._mark_batch is not None:
            self._mark_batch(nxt, cache)  # dynbatch: batch >= 2 compiles once per bucket
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


def static_cache_config(config: Any, cache_len: int) -> Any:
    """The config a StaticCache of ``cache_len`` tokens is built from: the model's, except that a sliding
    window at least as long as the cache is dropped (mistral-7b: 4096). Such a window masks nothing in
    the cache, and transformers' sliding-window static layer keeps its position as a Python int, on which
    the compiled decode step guards: it recompiled at every token (5.17 and 5.24). The model keeps its
    window: its masks are built from the config, the same over a window that covers the cache."""
    window = getattr(config, "sliding_window", None)
    if window is None or cache_len > window:
        return config
    import copy

    cfg = copy.deepcopy(config)
    cfg.sliding_window = None
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = ["full_attention" if t == "sliding_attention" else t for t in cfg.layer_types]
    return cfg


def cache_keyword(model: Any) -> str:
    """The keyword the model's forward takes its KV cache under: ``cache`` (transformers >= 5.24) or
    ``past_key_values`` (earlier, e.g. 5.17 on the GPU machines, where ``cache=`` lands in **kwargs unused)."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "cache"
    return "cache" if "cache" in params or "past_key_values" not in params else "past_key_values"


def make_backend(name: str, loaded: LoadedModel) -> InferenceBackend:
    """A backend by label: ``cache``, ``no-cache``, ``static`` or ``static+OPTION[+OPTION...]``."""
    if name.startswith("static+"):
        from llm_energy.measure.inference.fusion import parse_static

        return StaticBackend(loaded, parse_static(name))
    try:
        cls = _BACKEND_CLASSES[name]
    except KeyError:
        raise bad_value("--backend", name, f"unknown backend; choose one of {', '.join(BACKENDS)}") from None
    return cls(loaded)
