"""`fit --candidates` says which forms auto could not choose (issue 13's eighth session: llama-2-70b's
pooled batch fit chose batched-kv at 4.6% while the table showed batched-step, "sane", at 3.8%, under a
title saying auto picks the sane form with the lowest median; batched-step is not made for energy)."""
from pathlib import Path

from llm_energy.cli import main

STORE = Path(__file__).resolve().parents[1] / "data" / "h200" / "v2" / "batch-llama-2-70b-cache"


def _rows(out: str, target: str) -> dict[str, str]:
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│┃").split("│")]
        if len(cells) == 8 and cells[1] == target:
            rows[cells[2]] = cells
    return rows


def test_ineligible_forms_are_marked_with_why(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "240")
    capsys.readouterr()
    assert main(["fit", str(STORE), "--pool-batch", "--candidates", "--out", str(tmp_path / "f.json")]) == 0
    out = capsys.readouterr().out
    energy, runtime = _rows(out, "energy_j"), _rows(out, "runtime_s")
    assert energy["batched-step"][6] == "no (not for energy_j)"
    assert runtime["batched-kv"][6] == "no (not for runtime_s)"
    assert runtime["batched"][6] == "no (not for runtime_s)"
    for rows in (energy, runtime):
        chosen = [r for r in rows.values() if r[7] == "*"]
        assert len(chosen) == 1 and chosen[0][6] == "yes"
        # the chosen form has the lowest held-out median among the eligible, sane ones
        pool = [r for r in rows.values() if r[6] == "yes" and r[5] == "yes"]
        assert float(chosen[0][3].rstrip("%")) == min(float(r[3].rstrip("%")) for r in pool)
