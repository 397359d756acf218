"""Where the authors' reference data is found (it has no licence, so it is never in the repository).

Looked for in ``reference/`` (what ``make reference`` fetches, at pinned commits with checksums) and
in ``../shared/reference/`` (a workplace copy). Tests that need it skip with this hint otherwise."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CANDIDATES = (REPO / "reference", REPO.parent / "shared" / "reference")
HINT = "run `make reference` to fetch the authors' public data (pinned commits, checksummed)"


def reference_dir() -> Path:
    """The first candidate holding the Wilkins et al. data, else the first candidate (for messages)."""
    for c in CANDIDATES:
        if (c / "wilkins2024").is_dir():
            return c
    return CANDIDATES[0]


def require(relative: str) -> Path:
    """``reference_dir() / relative``, or skip the test saying where it was looked for and how to get it."""
    for c in CANDIDATES:
        if (c / relative).exists():
            return c / relative
    pytest.skip(f"reference data {relative} not found in {' or '.join(map(str, CANDIDATES))}: {HINT}")


COEFFICIENTS = reference_dir() / "wilkins2024" / "coefficients.json"
