"""Fakes for what cannot exist on this machine (NVML, RAPL), replaying realistic values."""
