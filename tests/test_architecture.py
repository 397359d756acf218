"""The house rules of docs/architecture.md, checked on the source: imports only go down the floors,
no import cycle between modules, `import llm_energy` imports no Ray (and stays light), cluster/ is
never imported by the library, and no module is much over 500 lines."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "llm_energy"

# bottom up; a module may import its own stage and any stage on a lower floor
FLOORS = {"errors": 0, "io": 0, "trials": 1, "measure": 2, "fit": 3, "plan": 4, "route": 5, "report": 6, "cli": 7}
MAX_LINES = 550


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = p
    return out


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            found |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            found.add(n.module)
            found |= {f"{n.module}.{a.name}" for a in n.names}
    return found


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "llm_energy" else None


def test_imports_only_go_down_the_floors():
    bad = []
    for name, path in modules().items():
        src = stage(name)
        if src is None or src not in FLOORS:  # llm_energy/__init__ and __main__: the facade and the entry point
            continue
        for imp in imports(path):
            if imp.startswith("cluster") or imp == "ray" or imp.startswith("ray."):
                bad.append(f"{name} imports {imp} (the library never imports Ray or cluster/)")
            dst = stage(imp)
            if dst in FLOORS and FLOORS[dst] > FLOORS[src]:
                bad.append(f"{name} imports {imp}: {dst} is above {src}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    mods = modules()
    graph = {m: {i for i in imports(p, top_level_only=True) if i in mods and i != m} for m, p in mods.items()}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for d in graph[m]:
            visit(d)
        stack.pop()

    for m in graph:
        visit(m)
    # a package's __init__ importing its own submodule is not a cycle of concepts
    cycles = [c for c in cycles if not all(x == c[0] or x.startswith(c[0] + ".") for x in c)]
    assert not cycles, cycles


def test_cluster_uses_the_library_never_the_reverse():
    for p in (REPO / "cluster").rglob("*.py"):
        for imp in imports(p):
            assert not imp.startswith("jobs"), f"{p} imports {imp}"


def test_import_llm_energy_imports_no_ray_and_stays_light():
    code = ("import sys, llm_energy; heavy = [m for m in ('ray', 'torch', 'pyomo', 'transformers', 'matplotlib') "
            "if m in sys.modules]; print(','.join(heavy))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"import llm_energy pulled in {r.stdout.strip()}"


def test_no_module_far_over_500_lines():
    sizes = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    big = {n: s for n, s in sizes.items() if s > MAX_LINES}
    assert not big, big
