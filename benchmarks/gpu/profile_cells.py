"""``llm-energy profile`` over an explicit cell set: the CLI's own command (same options, store, resume,
summary) with its design replaced by the cells named in ``--cells``.

    python3 -m benchmarks.gpu.profile_cells --cells third --model llama-2-13b --backend static \
        --repeats 1 --warmups 0 --node-type h200 --idle-s 5 --out data/h200/llama-2-13b-static --no-live

``--cells`` takes a named subset or a list ``TINxTOUT,...``; every listed cell runs at every --batch.
Every other option is the CLI's, ``--time-budget-s`` included (session.sh's third step passes its cap
minus a margin): a run it stops returns 130, as an interrupted one does, and the next resumes.

* ``third``: the 27 cells of the paper's 9x9 grid (tin, tout in 8, 16, ..., 2048) whose indices
  satisfy (i + j) mod 3 == 0. Each tin value appears with three tout values and each tout with three
  tin values, spread over the whole range (a Latin-square third of the grid), so every token count
  of the paper's grid is measured, both factors span 8..2048, tin x tout interactions are measured
  (not only one factor at a time), and a fit can be validated on held-out cells of the full grid.
  Per generated token it costs a third of the full grid.
* ``third-short``: the cells of ``third`` with tout <= 512 (21 cells).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from benchmarks.gpu.decode_limit import _imp

PAPER = (8, 16, 32, 64, 128, 256, 512, 1024, 2048)


def named_cells(name: str) -> list[tuple[int, int]]:
    if name in ("third", "third-short"):
        cells = [(PAPER[i], PAPER[j]) for i in range(9) for j in range(9) if (i + j) % 3 == 0]
        return [c for c in cells if name == "third" or c[1] <= 512]
    out = []
    for part in name.split(","):
        try:
            a, b = part.lower().split("x")
            out.append((int(a), int(b)))
        except ValueError:
            raise SystemExit(f"--cells: {part!r} is neither a named subset (third, third-short) nor TINxTOUT") from None
    return out


def main(argv: list[str] | None = None) -> int:
    cli = _imp("llm_energy.cli.profile", "llm_energy.cli_profile")
    design_mod = _imp("llm_energy.measure.design", "llm_energy.design")
    errors = _imp("llm_energy.errors")
    ap = argparse.ArgumentParser(prog="profile_cells")
    sub = ap.add_subparsers(dest="cmd")
    cli.register(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    cells_arg = None
    if "--cells" in argv:
        k = argv.index("--cells")
        cells_arg = argv[k + 1]
        del argv[k:k + 2]
    if not cells_arg:
        raise SystemExit("--cells is required (third, third-short or TINxTOUT,...)")
    args = ap.parse_args(["profile", *argv])
    pairs = named_cells(cells_arg)
    batches = design_mod.parse_int_list(args.batch, name="batch")
    orig = cli.spec_from_args

    def spec_with_cells(a):
        spec = orig(a)
        cells = tuple(design_mod.Cell(i, o, b) for b in batches for i, o in pairs)
        design = design_mod.SweepDesign("grid", cells, a.repeats, a.warmups, a.seed)
        return dataclasses.replace(spec, design=design)

    cli.spec_from_args = spec_with_cells
    print(f"profile_cells: {len(pairs)} cells x {len(batches)} batch sizes: "
          + " ".join(f"{i}x{o}" for i, o in pairs), flush=True)
    try:
        return args.func(args)
    except errors.UserError as e:
        print(f"profile_cells: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("profile_cells: interrupted (committed trials stay in the store)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
