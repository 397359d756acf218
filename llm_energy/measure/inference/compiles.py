"""Compilations torch does at run time, counted so that a measurement window can tell it timed one.

A measurement window must time the model, not ``torch.compile``: a decode step that compiles or
recompiles (dynamo: a new frame, a guard failure) or records a CUDA graph (cudagraph trees under
``reduce-overhead``) inside the window spends seconds on the CPU with the GPU near idle (H200,
llama-2-7b 16 x 256: 31.9 ms per decode step instead of 5.1). Counted from two sources:

* dynamo's compile callbacks (``torch._dynamo.callback_handler``): one start callback per dynamo
  compile (trigger ``DYNAMO``) and per CUDA-graph recording (``CUDAGRAPH_RECORDING``); other triggers
  (a lazy backward, autotuning) count as ``other``;
* dynamo's own counter of graphs it produced (``torch._dynamo.utils.counters["stats"]["unique_graphs"]``),
  which every torch 2.x keeps, callbacks or not.

Nothing is imported here until torch is: a process that never imported torch compiled nothing.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, fields
from types import ModuleType

_lock = threading.Lock()
_seen = {"frames": 0, "cudagraphs": 0, "other": 0}


@dataclass(frozen=True, slots=True)
class CompileCount:
    """Compilations since counting began (totals), or between two totals (a difference)."""

    frames: int = 0  # dynamo compiles of a frame (a first compile or a recompile)
    graphs: int = 0  # graphs dynamo produced
    cudagraphs: int = 0  # CUDA graphs recorded (cudagraph trees)
    other: int = 0  # other compile callbacks (lazy backward, autotuning)

    def __sub__(self, before: CompileCount) -> CompileCount:
        return CompileCount(*(max(0, getattr(self, f.name) - getattr(before, f.name)) for f in fields(self)))

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def describe(self) -> str:
        """``2 dynamo compiles, 2 new graphs`` (the non-zero counts, in words)."""
        words = (("frames", "dynamo compile"), ("graphs", "new graph"), ("cudagraphs", "CUDA graph recording"),
                 ("other", "other compile"))
        parts = [f"{n} {w}{'s' if n != 1 else ''}" for k, w in words if (n := getattr(self, k))]
        return ", ".join(parts) or "no compiles"


def _on_start(*args) -> None:
    trigger = getattr(getattr(args[0], "callback_trigger", None), "name", "DYNAMO") if args else "DYNAMO"
    key = {"DYNAMO": "frames", "CUDAGRAPH_RECORDING": "cudagraphs"}.get(trigger, "other")
    with _lock:
        _seen[key] += 1


def _install() -> None:
    """Register the callback, again after ``torch._dynamo.reset()`` (``torch._dynamo.explain`` calls it),
    which clears every callback."""
    try:
        from torch._dynamo.callback import callback_handler
    except ImportError:  # a torch without compile callbacks: dynamo's graph counter only
        return
    with _lock:
        if _on_start not in callback_handler.start_callbacks:
            callback_handler.register_start_callback(_on_start)


def compile_count() -> CompileCount:
    """The totals so far. A call (with torch imported) makes sure the callbacks are counted from then on;
    dynamo's graph counter counts from the process's start. Call it before the compilations that matter
    (a window's start): a difference of two calls is what torch compiled between them."""
    if "torch" not in sys.modules:
        return CompileCount()
    _install()
    try:
        from torch._dynamo.utils import counters

        graphs = int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001 - a torch without dynamo's counters
        graphs = 0
    with _lock:
        return CompileCount(frames=_seen["frames"], graphs=graphs, cudagraphs=_seen["cudagraphs"], other=_seen["other"])


_hidden_keys: tuple[int, list[str]] = (-1, [])  # (len(sys.modules) when scanned, the non-module entries then)


@contextmanager
def modules_pickle_can_search():
    """Hide from ``sys.modules``, while torch may compile, the entries that are not modules.

    Inductor hashes each graph for its caches by pickling it, and pickle finds an object's module by
    asking every entry of ``sys.modules`` for the name (``pickle.whichmodule``), expecting an
    AttributeError where it is absent. Pyomo (imported by the planner) puts deferred imports there that
    try to import their module when asked anything, and raise ImportError for one that is not installed
    (``pyomo.common.dependencies.pyutilib``): every compile in a process that had planned failed
    ("DeferredImportError: The pyutilib module ... failed to import"). Entries come back afterwards; with
    no such entries (no pyomo) this does nothing."""
    if "pyomo.common.dependencies" not in sys.modules:  # the only source of such entries seen
        yield
        return
    global _hidden_keys
    if _hidden_keys[0] != len(sys.modules):  # scanned again only when modules came or went (~1 ms for 4,000)
        _hidden_keys = (len(sys.modules), [k for k, v in list(sys.modules.items())
                                           if v is not None and not isinstance(v, ModuleType)])
    hidden = {k: v for k in _hidden_keys[1] if (v := sys.modules.get(k)) is not None and not isinstance(v, ModuleType)}
    for k in hidden:
        sys.modules.pop(k, None)
    try:
        yield
    finally:
        for k, v in hidden.items():
            sys.modules.setdefault(k, v)
