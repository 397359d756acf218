"""A batch-1 decode step's attention alone, for grouped-query shapes: transformers' copy (repeat_kv +
SDPA, what ``static`` runs), the packed layout (``static+gqa``), the packed layout as bf16 matrix
products (``static+gqa+math``: packed_gqa's own ``packed_matmul_attention``, which the backend runs under
its math option), and the copy through SDPA's math kernel (``static+math``, which computes in fp32: the
copied K and V upcast each step), each over every layer's own cache (marked a static address, as
transformers' StaticCache marks its tensors), eager and under torch.compile(mode="reduce-overhead"),
against the KV bytes' floor. The variants call the backend's own functions under its own SDPA setting
(session 5's ``gqa+math`` and ``copy+math`` rows were hand-written bf16 products, which the model did not
run: its math option then upcast to fp32).

    python3 -m benchmarks.gpu.gqa_attention [--bw 4.24] [--jsonl results.jsonl]   # on the GPU machine
    python3 -m benchmarks.gpu.gqa_attention --device cpu --quick                  # the script itself, here

No model is loaded (random K/V of the preset's shapes), so it answers in minutes (the H200, session 5:
about 100 s for the 70B's two buckets, three variants) whether the packed layout is faster than the copy before the models' own variants are compiled (docs/h200.md,
"Fourth session"). Per shape it prints ms a step for each variant (eager, compiled), the floor (K and V
of every layer read once at --bw), SDPA's backend choice, and the largest difference from the copy's
result; with CUDA, the top kernels of each compiled variant at the longest bucket.
"""

from __future__ import annotations

import argparse
import json
import sys

# (name, query heads, KV heads, layers) of the paper's grouped-query presets; head_dim 128 for all
SHAPES = {"llama-2-70b": (64, 8, 80), "mistral-7b": (32, 8, 32), "mixtral-8x7b": (32, 8, 32)}


def copy_attention(q, ks, vs, mask, groups):
    """transformers' path with a mask: every KV head's K and V copied to its query heads, then SDPA."""
    import torch.nn.functional as F

    out = q
    for k, v in zip(ks, vs):
        b, kv, length, d = k.shape
        k2 = k[:, :, None].expand(b, kv, groups, length, d).reshape(b, kv * groups, length, d)
        v2 = v[:, :, None].expand(b, kv, groups, length, d).reshape(b, kv * groups, length, d)
        out = F.scaled_dot_product_attention(out, k2, v2, attn_mask=mask)
    return out


class _Attention:
    """What transformers passes an attention function as ``module``: the part it reads."""

    def __init__(self, groups: int) -> None:
        self.num_key_value_groups = groups


def packed_attention(q, ks, vs, mask, groups):
    """``static+gqa``: the backend's own function (packed_gqa.py), each KV head's query heads as its block
    of query rows; its (b, 1, heads, d) output turned back into the next layer's (b, heads, 1, d) query."""
    from llm_energy.measure.inference.packed_gqa import packed_gqa_attention

    module, out = _Attention(groups), q
    for k, v in zip(ks, vs):
        out = packed_gqa_attention(module, out, k, v, mask)[0].transpose(1, 2)
    return out


def _under_math_option(fn, q, ks, vs, mask, groups):
    """``fn`` inside the static backend's ``math`` option (fusion.decode_attention: the math SDPA kernel only),
    entered inside the call as the backend's decode step enters it."""
    from llm_energy.measure.inference.fusion import decode_attention

    with decode_attention(("math",))():
        return fn(q, ks, vs, mask, groups)


def packed_matmul_attention(q, ks, vs, mask, groups):
    """``static+gqa+math``: the backend's packed attention under its math option, i.e. packed_gqa's
    ``packed_matmul_attention`` (bf16 products on K and V as they lie, the fp32 softmax on the scores):
    the model's own code, so the two cannot differ."""
    return _under_math_option(packed_attention, q, ks, vs, mask, groups)


def copy_matmul_attention(q, ks, vs, mask, groups):
    """``static+math``: transformers' copy (repeat_kv), then SDPA's math kernel, as the model runs it. Torch's
    math kernel computes in fp32: it converts the copied K (scaled) and V to fp32 and multiplies those."""
    return _under_math_option(copy_attention, q, ks, vs, mask, groups)


VARIANTS = {"copy": copy_attention, "gqa": packed_attention, "gqa+math": packed_matmul_attention,
            "copy+math": copy_matmul_attention}


def _time(fn, args, device, n):
    import time

    import torch

    for _ in range(3):
        fn(*args)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(n):
            fn(*args)
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b) / n
    t0 = time.perf_counter()
    for _ in range(n):
        fn(*args)
    return 1e3 * (time.perf_counter() - t0) / n


def _top_kernels(fn, args, k=6):
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as p:
        fn(*args)
        torch.cuda.synchronize()
    agg: dict[str, list] = {}
    for ev in p.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            c = agg.setdefault(ev.name[:80], [0, 0.0])
            c[0] += 1
            c[1] += ev.device_time_total / 1e3
    return sorted(([n, c, round(t, 3)] for n, (c, t) in agg.items()), key=lambda x: -x[2])[:k]


def measure(preset: str, length: int, bw: float, device: str, dtype: str, layers: int | None, n: int) -> dict:
    """One shape: ms a step per variant (eager and compiled), floor, SDPA choice, max |difference|."""
    import torch

    from llm_energy.measure.inference.fusion import backend_kwargs, compile_backend

    heads, kv, n_layers = SHAPES[preset]
    n_layers, d, groups = layers or n_layers, 128, heads // kv
    dt = getattr(torch, dtype)
    g = torch.Generator(device=device).manual_seed(0)
    ks = [torch.randn(1, kv, length, d, device=device, dtype=dt, generator=g) for _ in range(n_layers)]
    vs = [torch.randn(1, kv, length, d, device=device, dtype=dt, generator=g) for _ in range(n_layers)]
    q = torch.randn(1, heads, 1, d, device=device, dtype=dt, generator=g)
    mask = torch.zeros(1, 1, 1, length, dtype=torch.bool, device=device)
    mask[..., : length // 2 + 3] = True  # a static cache half full
    if device.startswith("cuda"):  # as transformers' StaticCache marks its K and V: CUDA graphs then read them
        for t in (*ks, *vs, mask):  # in place (unmarked, every replay copies each input into the graph's own)
            torch._dynamo.mark_static_address(t)
    args = (q, ks, vs, mask, groups)
    kv_bytes = 2 * n_layers * kv * length * d * dt.itemsize
    row = {"preset": preset, "bucket": length, "layers": n_layers, "kv_gb": kv_bytes / 1e9,
           "floor_ms": 1e3 * kv_bytes / bw, "device": device, "dtype": dtype}
    backend = compile_backend()  # inductor unless LLM_ENERGY_COMPILE_BACKEND
    if backend != "inductor":  # the compiled times are not inductor's
        row["compile_backend"] = backend
    names = {int(getattr(torch._C._SDPBackend, x)): x for x in dir(torch._C._SDPBackend)
             if not x.startswith("_") and x not in ("name", "value")}
    expand = ks[0][:, :, None].expand(1, kv, groups, length, d).reshape(1, heads, length, d)
    row["sdpa_choice"] = {"copy": names.get(int(torch._fused_sdp_choice(q, expand, expand, mask)), "?"),
                          "gqa": names.get(int(torch._fused_sdp_choice(q.reshape(1, kv, groups, d), ks[0], vs[0], mask)), "?")}
    ref = copy_attention(*args).float()
    for name, fn in VARIANTS.items():
        row[f"{name}_maxdiff"] = float((fn(*args).float() - ref).abs().max())
        row[f"{name}_eager_ms"] = _time(fn, args, device, n)
        torch._dynamo.reset()
        compiled = torch.compile(fn, dynamic=False, **backend_kwargs(
            {"mode": "reduce-overhead" if device.startswith("cuda") else None}, backend))
        row[f"{name}_compiled_ms"] = _time(compiled, args, device, n)
        if device.startswith("cuda"):
            row[f"{name}_kernels"] = _top_kernels(compiled, args)
    return row


def print_table(rows: list[dict]) -> None:
    print("\ndecode attention alone, batch 1 (ms a step over every layer; floor: K and V read once)")
    print("| preset | bucket | KV GB | floor ms | " + " | ".join(f"{v} (eager / compiled)" for v in VARIANTS)
          + " | SDPA choice copy / gqa |")
    print("|---|---|---|---|" + "---|" * len(VARIANTS) + "---|")
    for r in rows:
        cells = [f"{r[f'{v}_eager_ms']:.2f} / **{r[f'{v}_compiled_ms']:.2f}**" for v in VARIANTS]
        print(f"| {r['preset']} | {r['bucket']} | {r['kv_gb']:.2f} | {r['floor_ms']:.2f} | " + " | ".join(cells)
              + f" | {r['sdpa_choice']['copy']} / {r['sdpa_choice']['gqa']} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="llama-2-70b,mistral-7b", help=f"of {', '.join(SHAPES)}")
    ap.add_argument("--buckets", default="4096,256", help="cache lengths, the longest first (default 4096,256)")
    ap.add_argument("--bw", type=float, default=4.24, help="TB/s for the floor (default 4.24, the H200's copy bandwidth)")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="2 layers, 10 iterations, float32 (a check of the script)")
    ap.add_argument("--jsonl", default=None, help="append each row here")
    args = ap.parse_args(argv)
    if args.quick:
        args.iters, args.dtype = 10, "float32"
    rows = []
    from llm_energy.measure.inference.compiles import modules_pickle_can_search

    for p in [x for x in args.presets.split(",") if x]:
        if p not in SHAPES:
            ap.error(f"--presets: {p!r} is not one of {', '.join(SHAPES)}")
        for length in (int(x) for x in args.buckets.split(",") if x):
            with modules_pickle_can_search():  # torch compiles here (a process that planned: compiles.py)
                r = measure(p, length, args.bw * 1e12, args.device, args.dtype, 2 if args.quick else None, args.iters)
            print(json.dumps(r), flush=True)
            rows.append(r)
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps(r) + "\n")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
