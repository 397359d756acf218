"""Variants of the ``static`` backend that cut the fixed cost per decoder layer (issue 13).

A batch-1 decode step on the H200 spends 40-50 us per decoder layer over the HBM limit, the same for
the 7B and the 70B (docs/h200.md, "Where the gap is"): a cost per kernel, not per byte. Each option
below removes kernels or makes them read at full bandwidth; a backend label names the options that
ran, ``static`` then ``+option`` in the order of ``STATIC_OPTIONS`` (``static+fused+cdt``), so a
store's backend column says what was measured and the plain ``static`` stores keep their meaning.

* ``fused``: the projections that read the same input are one matrix product: q/k/v (one
  ``[q + 2 kv, hidden]`` weight) and the MLP's gate/up (one ``[2 ffn, hidden]``), as gpt-fast does
  for q/k/v. Llama-style attention and MLP modules (llama, mistral, mixtral's attention); falcon's
  ``query_key_value`` is already one matrix and its MLP has no gate/up, so nothing changes there.
* ``gqa``: a single query token attends on the KV heads (``packed_gqa.py``): transformers' SDPA copies
  a grouped-query model's cached K and V to every query head before each masked step, groups x the
  cache's bytes written and read again (mistral-7b, mixtral-8x7b, llama-2-70b); nothing changes for
  models with as many KV heads as query heads. Falcon's own attention gets its KV heads the same way
  (its forward replaced per module): falcon-7b's one KV head without the math kernel's broadcast, and
  falcon-40b's cache holds its 8 KV groups instead of their copies to all 128 query heads (16x fewer
  bytes; a masked prefill attends on K and V copied to the query heads for that call only, which lets
  the fused kernels take falcon-7b's, where its own ran the math kernel). Alibi falcons are left as they are.
  That is transformers <= 5.24 (5.17 on the GPU machine); from 5.25 falcon caches its KV heads itself and
  ``gqa`` switches its attention implementation, as llama's.
* ``cdt``: inductor's coordinate-descent tuning (gpt-fast's setting). With it inductor rewrites a
  batch-1 matrix-vector product as a reduction it generates and tunes itself, fused with the
  elementwise work around it, instead of a cuBLAS call ("Our matrix vector multiplies only achieve
  peak bandwidth with coordinate descent tuning", torch/_inductor/decomposition.py).
* ``math``: the decode step's attention through the math SDPA kernel, which inductor decomposes and
  fuses (gpt-fast: "better for Inductor to codegen attention here") instead of a library kernel. Torch's
  math kernel (2.11, 2.13) computes in fp32: for a bf16 model it converts every layer's cached K (scaled) and V
  to fp32 copies each step (for a grouped-query model after transformers' copy to every query head) and
  multiplies those, so ``static+math`` moves several times the KV bytes. With ``gqa`` the packed attention
  is written as bf16 matrix products instead, the fp32 softmax on the scores alone (packed_gqa.py,
  ``packed_matmul_attention``): the cache is read once, as it lies.
* ``ma``: ``max-autotune`` instead of ``reduce-overhead`` (both capture CUDA graphs; max-autotune also
  benchmarks generated matrix-product kernels at compile time, a longer compile, and turns on
  coordinate-descent tuning itself, so ``ma`` includes ``cdt``).
* ``combo``: inductor's combo kernels, which launch independent small kernels as one (transformers'
  static cache keeps one position counter a layer and advances each with its own tiny kernel).
* ``cprefill``: the prefill compiled too, with dynamic shapes (gpt-fast's ``compile_prefill``:
  ``torch.compile(prefill, fullgraph=True, dynamic=True)``, no CUDA graphs, inductor's defaults): the
  eager prefill is CPU-bound by transformers' Python (H200, llama-2-7b, 8-token prompt: 40-56 ms against
  a 5 ms decode step). Compiles in ``prepare()`` only (backends.py, StaticBackend).
* ``dynbatch``: one decode compile per bucket for every batch of 2 or more (issue 13: llama-2-7b's
  batch sweep recompiled 35-40 s per batch size on the H200, llama-2-70b's ~95 s): the decode inputs and
  the StaticCache's keys and values are marked dynamic in their batch dim (``mark_batch_dynamic``), so a
  later batch size reuses the graph, and under ``reduce-overhead`` only records a CUDA graph of its own.
  Batch 1 compiles as ``static`` does (dynamo specialises size-1 dims anyway).

The other options touch only the compiled decode step and the model's weights layout; without
``cprefill`` the prefill runs the same (eager) code, on the fused weights under ``fused``.

Every ``torch.compile`` of a static backend runs inductor, torch's default, unless the environment variable
``LLM_ENERGY_COMPILE_BACKEND`` names another torch.compile backend (``aot_eager``: the tests' logic on the
CPU without inductor's code generation, ~2 s a tiny model's compile instead of ~30 s): ``compile_backend`` reads
it, ``backend_kwargs`` turns a compile's inductor keyword arguments into that backend's (``mode`` and
``options`` are inductor's and are dropped). A trial run that way names the backend in its versions
(``torch_compile_backend``); unset (or ``inductor``), torch.compile is called exactly as without the variable.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from llm_energy.errors import bad_value

STATIC_OPTIONS = {
    "fused": "q/k/v and gate/up projections as one matrix product each",
    "gqa": "decode attention on the KV heads, without copying the cache to every query head (packed_gqa.py; "
           "falcon: its attention on its KV heads, falcon-40b's cache of its 8 KV groups)",
    "cdt": "inductor coordinate-descent tuning (batch-1 matrix products as fused generated kernels)",
    "math": "decode attention through the math SDPA kernel (inductor fuses it; torch's computes in fp32, "
            "upcasting the cache's K and V each step); with gqa the packed attention as bf16 matrix products",
    "ma": "torch.compile mode max-autotune instead of reduce-overhead",
    "combo": "inductor combo kernels: independent small kernels (each layer's cache position update) as one",
    "cprefill": "prefill compiled with dynamic shapes, as gpt-fast's compile_prefill",
    "dynbatch": "decode step compiled once per bucket for all batches >= 2 (batch dim dynamic; a CUDA graph per batch)",
}

_ATTN = ("q_proj", "k_proj", "v_proj")
_MLP = ("gate_proj", "up_proj")
_FUSABLE_TYPES = ("llama", "mistral", "mixtral")  # attention/MLP forwards that read their input only through these


def parse_static(name: str) -> tuple[str, ...] | None:
    """The options of a static backend label (``static`` -> ``()``, ``static+cdt+fused`` -> ``("fused",
    "cdt")``); None for another backend. An unknown or repeated option is a UserError."""
    base, *opts = name.split("+")
    if base != "static":
        return None
    bad = [o for o in opts if o not in STATIC_OPTIONS]
    if bad or len(set(opts)) != len(opts):
        raise bad_value("--backend", name, f"static options are {', '.join('+' + o for o in STATIC_OPTIONS)}, "
                        "each at most once")
    return tuple(o for o in STATIC_OPTIONS if o in opts)


def static_label(options: tuple[str, ...] | list[str]) -> str:
    """The canonical backend label of a static variant (options in ``STATIC_OPTIONS`` order)."""
    return "+".join(["static", *(o for o in STATIC_OPTIONS if o in options)])


def compile_kwargs(options: tuple[str, ...], is_cuda: bool) -> dict[str, Any]:
    """torch.compile keyword arguments (``mode`` or ``options``: torch takes one of the two) for a static
    variant. On CUDA: reduce-overhead (CUDA graphs) or max-autotune; on the CPU: no mode (no graphs)."""
    extra: dict[str, Any] = {}
    if "cdt" in options:
        extra = {"coordinate_descent_tuning": True, "triton.unique_kernel_names": True}
    if "combo" in options:
        extra["combo_kernels"] = True
    mode = ("max-autotune" if "ma" in options else "reduce-overhead") if is_cuda else None
    if not extra:
        return {"mode": mode}
    if mode is None:
        return {"options": extra}
    from torch._inductor import list_mode_options

    return {"options": {**list_mode_options(mode), **extra}}


COMPILE_BACKEND_ENV = "LLM_ENERGY_COMPILE_BACKEND"


def compile_backend() -> str:
    """The torch.compile backend the static backends compile with: ``LLM_ENERGY_COMPILE_BACKEND``, or
    ``inductor`` (torch's default) where it is unset or empty. A name torch does not know is a UserError."""
    name = os.environ.get(COMPILE_BACKEND_ENV, "").strip()
    if not name or name == "inductor":
        return "inductor"
    known = torch._dynamo.list_backends(exclude_tags=())
    if name not in known:
        raise bad_value(COMPILE_BACKEND_ENV, name, "not a torch.compile backend (inductor, the default; "
                        "aot_eager or eager for tests without inductor's code generation)")
    return name


def backend_kwargs(inductor_kwargs: dict[str, Any], backend: str | None = None) -> dict[str, Any]:
    """A torch.compile's keyword arguments under ``backend`` (default: ``compile_backend()``; a caller that
    compiles more than once passes the name it read once): ``inductor_kwargs`` as they are for inductor (no
    ``backend`` keyword: torch's default, the call unchanged), else only ``backend=`` that backend (``mode``
    and ``options`` configure inductor; torch hands them to another backend, which warns that it ignores them)."""
    name = compile_backend() if backend is None else backend
    return dict(inductor_kwargs) if name == "inductor" else {"backend": name}


def decode_attention(options: tuple[str, ...]):
    """A context-manager factory for the decode step's attention: the math SDPA kernel under ``math`` (which
    upcasts a bf16 cache to fp32; packed_gqa's attention writes its own bf16 products inside it)."""
    if "math" not in options:
        import contextlib

        return contextlib.nullcontext
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return lambda: sdpa_kernel([SDPBackend.MATH])


def mark_batch_dynamic(tok: Any, cache: Any) -> None:
    """``dynbatch``: the decode step's token ids and the (initialised) StaticCache's per-layer keys and values
    marked dynamic in dim 0, so that dynamo compiles the decode step for any batch >= 2 once (honoured under
    ``dynamic=False``, torch 2.13). ``maybe_mark_dynamic``, not ``mark_dynamic``: under ``cprefill`` the compiled
    prefill specialises the cache's batch, which a hard mark turns into a ConstraintViolationError. Keys and
    values as transformers 5.x keeps them (``cache.layers[i]``), or the ``key_cache``/``value_cache`` lists of
    older StaticCaches. A no-op at batch 1."""
    batch = int(tok.shape[0])
    if batch < 2:
        return
    tensors = [tok]
    for layer in getattr(cache, "layers", None) or ():
        tensors += [getattr(layer, "keys", None), getattr(layer, "values", None)]
    tensors += [*(getattr(cache, "key_cache", None) or ()), *(getattr(cache, "value_cache", None) or ())]
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.dim() and int(t.shape[0]) == batch:
            torch._dynamo.maybe_mark_dynamic(t, 0)


# ---- fused projections --------------------------------------------------------------------------
class _Columns(nn.Module):
    """Columns ``[start, stop)`` of a fused projection's output: what one original projection returned."""

    def __init__(self, start: int, stop: int) -> None:
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x):
        return x[..., self.start:self.stop]

    def extra_repr(self) -> str:
        return f"columns {self.start}:{self.stop}"


class FusedInput(nn.Module):
    """An attention or MLP module whose projections of its input run first, as one matrix product
    (``proj``); the module's own forward then sees that product as its input, and each former
    projection is a ``_Columns`` slice of it. Valid for modules whose forward reads its input only
    through those projections and its shape's leading dims (llama-style attention and MLP)."""

    def __init__(self, inner: Any, names: tuple[str, ...]) -> None:
        super().__init__()
        lins = [getattr(inner, n) for n in names]
        bias = lins[0].bias is not None
        proj = nn.Linear(lins[0].in_features, sum(lin.out_features for lin in lins), bias=bias,
                         device="meta", dtype=lins[0].weight.dtype)
        with torch.no_grad():
            proj.weight = nn.Parameter(torch.cat([lin.weight for lin in lins]), requires_grad=False)
            if bias:
                proj.bias = nn.Parameter(torch.cat([lin.bias for lin in lins]), requires_grad=False)
        start = 0
        for n, lin in zip(names, lins):
            setattr(inner, n, _Columns(start, start + lin.out_features))
            start += lin.out_features
        self.proj, self.inner, self.names = proj, inner, names

    def forward(self, *args, **kwargs):
        if args:
            args = (self.proj(args[0]), *args[1:])
        else:
            key = "hidden_states" if "hidden_states" in kwargs else "x"
            kwargs[key] = self.proj(kwargs[key])
        return self.inner(*args, **kwargs)


def _fusable(mod: Any, names: tuple[str, ...]) -> bool:
    lins = [getattr(mod, n, None) for n in names]
    if not all(isinstance(lin, nn.Linear) for lin in lins):
        return False
    w0 = lins[0].weight
    return all(lin.in_features == lins[0].in_features and lin.weight.device == w0.device
               and lin.weight.dtype == w0.dtype and (lin.bias is None) == (lins[0].bias is None) for lin in lins)


def fuse_projections(model: Any) -> int:
    """Fuse q/k/v and gate/up of every decoder layer of a llama-style model, in place; return the
    number of modules fused (0 where there is nothing to fuse: falcon, or a model already fused).
    The originals' weights are freed layer by layer, so the peak extra memory is one layer's."""
    model._llm_energy_fused = True  # falcon too: its projections that share an input are one matrix already
    if getattr(model.config, "model_type", None) not in _FUSABLE_TYPES:
        return 0
    n = 0
    for layer in model.model.layers:
        for attr, names in (("self_attn", _ATTN), ("mlp", _MLP)):
            mod = getattr(layer, attr, None)
            if mod is not None and not isinstance(mod, FusedInput) and _fusable(mod, names):
                setattr(layer, attr, FusedInput(mod, names))
                n += 1
    return n


def unfuse_projections(model: Any) -> int:
    """Undo ``fuse_projections`` in place (each projection a view of its rows of the fused weight:
    no copy); return the number of modules restored."""
    n = 0
    for layer in getattr(getattr(model, "model", None), "layers", ()):
        for attr in ("self_attn", "mlp"):
            mod = getattr(layer, attr, None)
            if isinstance(mod, FusedInput):
                setattr(layer, attr, _unfused(mod))
                n += 1
    model._llm_energy_fused = False
    return n


def _unfused(f: FusedInput) -> Any:
    inner, w, b = f.inner, f.proj.weight, f.proj.bias
    for n in f.names:
        col = getattr(inner, n)
        lin = nn.Linear(w.shape[1], col.stop - col.start, bias=b is not None, device="meta", dtype=w.dtype)
        lin.weight = nn.Parameter(w[col.start:col.stop], requires_grad=False)
        if b is not None:
            lin.bias = nn.Parameter(b[col.start:col.stop], requires_grad=False)
        setattr(inner, n, lin)
    return inner


def is_fused(model: Any) -> bool:
    """Whether the model's projections are fused now (``fuse_projections`` ran, ``unfuse_projections`` not since)."""
    return bool(getattr(model, "_llm_energy_fused", False))


def set_fused(model: Any, fused: bool) -> int:
    """Fuse or unfuse the model's projections so that their layout is ``fused``; return the modules changed."""
    if is_fused(model) == fused:
        return 0
    return fuse_projections(model) if fused else unfuse_projections(model)
