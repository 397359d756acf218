"""The attention kernels of the eager backends (``cache``, ``no-cache``): SDPA without its cuDNN backend.

On sm90 with a recent cuDNN, torch's SDPA picks the cuDNN backend first, and cuDNN's per-process graph
cache is keyed by the shapes, the key length among them. An eager decode step with a DynamicCache meets a
key length one longer every step, and ``no-cache`` a forward of a sequence one longer: each builds a new
cuDNN graph on the host (tens of ms a step; H200 llama-2-7b: 40-87 ms a decode step against a 20 ms prefill
forward), unless an earlier generation of the process built it, so a trial's cost depended on what ran
before it, not on its (tin, tout, batch). torch's fix is opt-in (``TORCH_CUDNN_SDPA_AVOID_RECOMPILE=1``,
pytorch PR 155958). These backends instead let SDPA choose among flash, memory-efficient and math, in
torch's own order: what torch chose before it preferred cuDNN. On a CPU (flash or math) nothing changes.
The compiled ``static`` backends keep torch's default: their shapes are fixed per bucket and warmed in
``prepare``. Trials of the eager backends record the choice (``eager_sdpa`` in their versions).
"""

from __future__ import annotations

from typing import Any

#: ``eager_sdpa`` in the versions of every trial of an eager backend: the SDPA backends it may use
EAGER_SDPA = "flash,efficient,math"


def eager_attention() -> Any:
    """A context in which SDPA may use its flash, memory-efficient and math kernels (torch's order), not cuDNN."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
