"""Inference backends on HF transformers behind one interface (INTERFACE ONLY: being implemented).

A backend runs one generation of ``batch`` sequences: a prompt of exactly ``tin`` tokens each (built
from seeded token ids) and exactly ``tout`` new tokens each (EOS ignored).

* ``cache``: KV cache, eager decode (default).
* ``no-cache``: ``use_cache=False``: every decode step reprocesses the whole sequence (the paper's set-up).
* ``static``: static KV cache + ``torch.compile`` decode, with length buckets so a new prompt length
  does not recompile every time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

BACKENDS = ("cache", "no-cache", "static")


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
    device: str  # "cpu", "cuda:0", or "cuda" when sharded
    dtype: str  # "bfloat16" | "float32" | "float16"
    n_params: int
    vocab_size: int
    gpu_indices: tuple[int, ...] = ()  # GPUs holding the weights (empty on CPU)


class InferenceBackend(ABC):
    name: str = "?"

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    def prepare(self, batch: int, tin: int, tout: int) -> None:
        """Work done before a measurement window (allocating caches, compiling). Default: none."""

    @abstractmethod
    def make_prompt(self, batch: int, tin: int, seed: int) -> Any:
        """Token ids [batch, tin] (torch.long on the model's input device), seeded, no special tokens."""

    @abstractmethod
    def generate(self, input_ids: Any, tout: int) -> GenerationResult:
        """Greedy-generate exactly ``tout`` new tokens per sequence."""
