"""Power samplers: one interface (``PowerSampler``), one class per meter kind."""

from llm_energy.measure.samplers.base import MeteredDevice, PowerSampler

__all__ = ["MeteredDevice", "PowerSampler"]
