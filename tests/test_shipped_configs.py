"""Every shipped job config loads, and the README's by-hand recipe has a config of its own."""

import re
from pathlib import Path

import pytest

from cluster.config import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("deployments"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_loads(path):
    cfg = load_config(path)
    if cfg.workload.path:  # a shipped workload path resolves from the repository root (the job's working dir)
        assert (REPO / cfg.workload.path).exists(), cfg.workload.path


def test_readme_recipe_has_a_matching_config():
    readme = (REPO / "README.md").read_text()
    types = set(re.findall(r'"node_type:([\w-]+)": 1', readme))
    assert types, "the README names the node types of its by-hand recipe"
    matching = [p.name for p in CONFIGS if set(load_config(p).node_types) == types]
    assert matching, f"no shipped config has exactly the README recipe's node types {sorted(types)}"
    assert any(m in readme for m in matching), "the README names the config its recipe uses"
