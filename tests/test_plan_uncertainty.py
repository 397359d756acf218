"""--plan-on upper (issue 17): the energy budget row planned on the prediction interval's upper end, with
the risk reported. (Capacity rows at the upper end: tests/test_plan_windows.py.)"""

import json
from pathlib import Path

import pytest

from llm_energy.cli import main

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
FITS = REPO / "data" / "h200" / "fits.json"
DEPLOYMENTS = """deployments:
  - {name: llama-2-7b, fit: llama-2-7b@h200x1/static/b1, accuracy: 50.97}
  - {name: llama-2-13b, fit: llama-2-13b@h200x1/static/b1, accuracy: 55.69}
  - {name: mistral-7b, fit: mistral-7b@h200x1/static/b1, accuracy: 60.97}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    if not TRACE.exists() or not FITS.exists():
        pytest.skip("the trace or the measured fits are missing")
    d = tmp_path_factory.mktemp("budget")
    lines = TRACE.read_text().splitlines()
    (d / "w.csv").write_text("\n".join(lines[:1501]) + "\n")  # 1500 queries of the conversation trace
    (d / "deps.yaml").write_text(DEPLOYMENTS)
    return d


def plan(capsys, d, out, *extra):
    rc = main(["plan", "--fits", str(FITS), "--deployments", str(d / "deps.yaml"), "--workload", str(d / "w.csv"),
               "--columns", "azure", "--out", str(d / out), "--json", *map(str, extra)])
    o, e = capsys.readouterr()
    assert rc == 0, e
    return json.loads(o)


def test_the_budget_row_at_the_upper_end_keeps_the_plan_within_it_there(files, capsys):
    # the least energy a plan can have at the upper end, and the energy of the most accurate plan
    least = plan(capsys, files, "least", "--zeta", 1, "--energy-budget", 1e12, "--plan-on", "upper")
    top = plan(capsys, files, "top", "--zeta", 0)
    floor_upper = least["uncertainty"]["energy_upper_j"]
    assert top["energy_j"] > floor_upper
    budget = floor_upper + 0.5 * (top["energy_j"] - floor_upper)  # binding at the point and at the upper end

    point = plan(capsys, files, "point", "--max-energy", budget, "--mip-gap", 0)
    upper = plan(capsys, files, "upper", "--max-energy", budget, "--mip-gap", 0, "--plan-on", "upper")
    pu, uu = point["uncertainty"], upper["uncertainty"]
    # planned on point energies the plan meets the budget there and is over it at the upper end
    assert point["energy_j"] <= budget * (1 + 1e-9) and pu["budget_over_at_upper"]
    assert pu["budget_rows_on"] == "point" and pu["budget_margin_upper_j"] < 0
    # planned on the upper end it is within the budget at the upper end too: the risk it buys off
    assert uu["budget_rows_on"] == "upper" and not uu["budget_over_at_upper"]
    assert uu["energy_upper_j"] <= budget * (1 + 1e-9) and uu["budget_margin_upper_j"] >= -1e-6 * budget
    assert uu["energy_point_j"] == pytest.approx(upper["energy_j"])  # the point energy is still what is reported
    assert upper["energy_j"] < point["energy_j"]  # and the margin is paid for in accuracy
    assert upper["accuracy"] < point["accuracy"]
