"""``static`` against ``static+dynbatch`` at a few batch sizes: prepare (compile + capture) seconds, the
compiles it counted, any compile inside the timed generations, decode ms a step (best of 3) and whether
the tokens equal ``static``'s (issue 13's batch sweeps: one compile per bucket for every batch >= 2).

    python3 -m benchmarks.gpu.dynbatch --preset llama-2-7b [--device cuda:0] [--jsonl OUT]

One JSON row a (backend, batch). On the CPU (``--device cpu --dtype float32``, a tiny preset) only to
test it; in bf16 on a GPU ``tokens_as_static`` may be false by rounding alone: ``sequences_as_static``
says in how many of the batch's sequences ("15/16"), and ``--dtype float32`` takes most rounding away.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def run(preset: str, device: str, dtype: str, *, tin: int = 8, tout: int = 64,
        static_batches: tuple[int, ...] = (16,), dyn_batches: tuple[int, ...] = (2, 16, 64)) -> list[dict]:
    import torch

    from llm_energy.measure.inference.backends import make_backend
    from llm_energy.measure.inference.compiles import compile_count
    from llm_energy.measure.inference.loading import load_model

    lm, toks, rows = load_model(preset, device, dtype), {}, []
    for name, batches in (("static", static_batches), ("static+dynbatch", dyn_batches)):
        torch._dynamo.reset()
        b = make_backend(name, lm)
        for n in batches:
            c0, t = compile_count(), time.perf_counter()
            b.prepare(n, tin, tout)
            prep, c, ids = time.perf_counter() - t, compile_count() - c0, b.make_prompt(n, tin, seed=1)
            w0 = compile_count()
            ms = min(b.generate(ids, tout).decode_s for _ in range(3)) / (tout - 1) * 1e3
            toks[name, n] = b.last_tokens.flatten().tolist()
            rows.append(dict(preset=preset, backend=name, batch=n, prepare_s=round(prep, 2), compiles=c.describe(),
                             window=(compile_count() - w0).describe(), ms_step=round(ms, 3),
                             tokens_as_static=toks[name, n] == toks["static", n] if ("static", n) in toks else None,
                             sequences_as_static=_agree(toks[name, n], toks["static", n]) if ("static", n) in toks else None))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _agree(a: list[int], b: list[int]) -> str:
    """How many of the batch's sequences end in the same token under both backends ("15/16"): a bug in the
    batch handling (a cache row read for another sequence) disagrees almost everywhere, rounding at a few."""
    return f"{sum(x == y for x, y in zip(a, b))}/{len(a)}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="llama-2-7b")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--static-batches", default="16")
    p.add_argument("--dyn-batches", default="2,16,64")
    p.add_argument("--tout", type=int, default=64)
    p.add_argument("--jsonl", default=None, help="append the rows here")
    a = p.parse_args(argv)
    ints = lambda s: tuple(int(x) for x in s.split(","))  # noqa: E731
    rows = run(a.preset, a.device, a.dtype, tout=a.tout, static_batches=ints(a.static_batches),
               dyn_batches=ints(a.dyn_batches))
    if a.jsonl:
        with open(a.jsonl, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
