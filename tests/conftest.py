from pathlib import Path

import pytest

from tests.reference import reference_dir, require

REFERENCE = reference_dir()


@pytest.fixture(scope="session")
def reference() -> Path:
    """The reference data folder (``make reference`` fetches it; tests skip with that hint without it)."""
    return require("wilkins2024/grid/all-stats-raw.csv").parents[2]


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
