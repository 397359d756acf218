"""A fake /sys/class/powercap tree: 2 packages, each with a DRAM subzone, realistic counters."""

from __future__ import annotations

from pathlib import Path

MAX_RANGE_UJ = 262143328850  # as on Intel server parts


def make_powercap(root: Path, *, start_uj: int = 262_000_000_000, max_power_uw: int | None = None) -> dict[str, Path]:
    """Build the tree; returns {device id: energy_uj path}. Counters start near the wrap point. With
    ``max_power_uw`` each package has a readable ``constraint_0_max_power_uw``."""
    files = {}
    for n in range(2):
        pkg = root / f"intel-rapl:{n}"
        pkg.mkdir(parents=True)
        (pkg / "name").write_text(f"package-{n}\n")
        (pkg / "max_energy_range_uj").write_text(f"{MAX_RANGE_UJ}\n")
        (pkg / "energy_uj").write_text(f"{start_uj + n * 1000}\n")
        if max_power_uw is not None:
            (pkg / "constraint_0_max_power_uw").write_text(f"{max_power_uw}\n")
        files[f"package-{n}"] = pkg / "energy_uj"
        dram = pkg / f"intel-rapl:{n}:0"
        dram.mkdir()
        (dram / "name").write_text("dram\n")
        (dram / "max_energy_range_uj").write_text(f"{MAX_RANGE_UJ}\n")
        (dram / "energy_uj").write_text("5000000\n")
        files[f"dram-{n}"] = dram / "energy_uj"
    return files


def advance(path: Path, joules: float) -> None:
    """Add energy to a zone's counter, wrapping at MAX_RANGE_UJ like the hardware."""
    v = int(path.read_text()) + int(joules * 1e6)
    path.write_text(f"{v % MAX_RANGE_UJ}\n")


def write_atomic(path: Path, raw_uj: int) -> None:
    """Set a counter the way the kernel shows it: a reader never sees a half-written value."""
    tmp = path.with_name(".energy_uj.tmp")
    tmp.write_text(f"{raw_uj % MAX_RANGE_UJ}\n")
    tmp.replace(path)
