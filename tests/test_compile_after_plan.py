"""The static backend compiles in a process that has planned (imported Pyomo): Pyomo's deferred imports
in ``sys.modules`` made every inductor compile fail ("DeferredImportError: The pyutilib module ...
failed to import"), pickle asking each of them for a name while hashing the graph. In a fresh
interpreter, so that the order of the test session cannot hide it."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.inductor  # inductor's pickling of the graph is what pyomo broke: aot_eager would not pickle it
def test_static_backend_compiles_after_pyomo_was_imported():
    code = textwrap.dedent("""
        import sys
        import pyomo.environ  # what llm_energy.plan.solve imports to plan
        from pyomo.common.dependencies import pyutilib_available  # noqa: F401
        assert "pyomo.common.dependencies.pyutilib" in sys.modules
        import torch
        torch.set_num_threads(1)
        from llm_energy.measure.inference.backends import make_backend
        from llm_energy.measure.inference.loading import load_model
        b = make_backend("static", load_model("tiny-llama", "cpu", "float32"))
        b.prepare(1, 9, 6)
        r = b.generate(b.make_prompt(1, 9, seed=1), 6)
        assert r.tout_actual == 6 and b.compiles == 1
        assert "pyomo.common.dependencies.pyutilib" in sys.modules  # put back
        print("ok")
    """)
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-2000:]
