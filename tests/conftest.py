from pathlib import Path

import pytest

from tests.reference import reference_dir, require

REFERENCE = reference_dir()
COMPILE_BACKEND_ENV = "LLM_ENERGY_COMPILE_BACKEND"  # fusion.COMPILE_BACKEND_ENV (not imported: no torch import here)


@pytest.fixture(scope="session", autouse=True)
def _aot_eager_compiles():
    """Static backends compile with ``aot_eager`` (LLM_ENERGY_COMPILE_BACKEND, llm_energy/measure/inference/fusion.py;
    in the environment, so a profile subprocess inherits it): the tests' logic (caches, buckets, compile counts,
    tokens, dynamo's graphs) without inductor's code generation, ~2 s a tiny model's compile on the CPU instead
    of ~30 s. Set for the session, so that module-scoped fixtures that profile see it too."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(COMPILE_BACKEND_ENV, "aot_eager")
        yield


@pytest.fixture(autouse=True)
def _inductor_compiles(request, monkeypatch):
    """Tests marked ``inductor`` (their point is inductor itself) and ``gpu`` (run on the GPU machine) compile with
    inductor, torch's default: the variable unset for the test (its function-scoped fixtures and subprocesses)."""
    if request.node.get_closest_marker("inductor") or request.node.get_closest_marker("gpu"):
        monkeypatch.delenv(COMPILE_BACKEND_ENV, raising=False)


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
