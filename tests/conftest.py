from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture(scope="session")
def reference() -> Path:
    if not (REFERENCE / "wilkins2024" / "grid" / "all-stats-raw.csv").exists():
        pytest.skip(f"reference data not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session")
def grid_trials(reference):
    from llm_energy.trials.importers import import_wilkins2024

    return import_wilkins2024(reference / "wilkins2024" / "grid" / "all-stats-raw.csv")


AZURE_CONV = Path(__file__).resolve().parents[1] / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"


@pytest.fixture(scope="session")
def azure_conv() -> Path:
    """The Azure 2023 conversation trace (CC-BY 4.0, shipped in data/azure-llm-2023/ with its citation)."""
    assert AZURE_CONV.exists(), f"{AZURE_CONV} is part of the repository"
    return AZURE_CONV
