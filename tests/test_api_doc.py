"""docs/api.md runs: every ```python block is executed, in order, in one namespace, in a temp dir
that sees the repository's data/ (as a user at the repository root would); ```python no-run blocks
are compiled only. A failure names the doc's line."""

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "api.md"
FENCE = re.compile(r"^```(\S*)[ \t]*(.*?)\s*$")


def blocks(text: str) -> list[tuple[int, str, str]]:
    """(first code line number, info after the language, code) of every python block."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        start, lang, info = i + 1, m.group(1), m.group(2)
        j = start
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        if j == len(lines):
            raise AssertionError(f"{DOC}:{i + 1}: unclosed code block")
        if lang == "python":
            out.append((start + 1, info, "\n".join(lines[start:j]) + "\n"))
        i = j + 1
    return out


def test_block_parser_reads_fences_and_flags():
    text = "intro\n```python\na = 1\n```\n```bash\nls\n```\n```python no-run\nb = 2\n```\n"
    assert blocks(text) == [(3, "", "a = 1\n"), (9, "no-run", "b = 2\n")]
    with pytest.raises(AssertionError, match="unclosed"):
        blocks("```python\nx = 1\n")


def test_api_doc_runs(tmp_path, monkeypatch):
    found = blocks(DOC.read_text())
    run = [b for b in found if b[1] == ""]
    assert len(run) >= 5 and any("EnergyMeter" in code for _, _, code in run)
    bad = [(line, info) for line, info, _ in found if info not in ("", "no-run")]
    assert not bad, f"{DOC}: unknown block flags (use ```python or ```python no-run): {bad}"
    (tmp_path / "data").symlink_to(REPO / "data")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__api_doc__"}
    for line, info, code in found:
        # padded so a traceback's line number is the doc's
        compiled = compile("\n" * (line - 1) + code, f"{DOC}", "exec")
        if info == "no-run":
            continue
        exec(compiled, namespace)  # noqa: S102 - the doc's own examples
    assert os.path.exists(tmp_path / "fits.json") and (tmp_path / "plan" / "summary.json").exists()
