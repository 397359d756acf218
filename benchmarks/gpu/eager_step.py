"""What one eager decode step costs, by context length: the ``cache`` backend (DynamicCache, eager; SDPA without
cuDNN) against the same loop with cuDNN attention allowed, HF ``generate()`` and an eager StaticCache loop, batch 1.

Per decode step: wall ms, the main thread's CPU ms and all threads' (``cpu_ms`` near ``wall_ms``: the step
is bound by the Python thread launching it) and the caching allocator's cudaMalloc/cudaFree counts
(``torch.cuda.memory_stats``), over ``steps`` steps from the end of the prefill (synchronised there) to the
end; from torch.profiler (a run of ``2 + prof_steps`` new tokens less a run of 2: the prefill cancels) GPU
kernel ms and kernels (CUDA activity, the costliest in ``top_kernels``), aten ops, host-sync aten ops
(``.item()``, ``nonzero``, ...) and CUDA runtime calls (cudaMalloc, cudaFree, cudaStreamSynchronize,
cudaMemcpy*, all in ``runtime``); ``sdpa_choice``: the SDPA backend torch picks for the decode step's shapes
under the loop's SDPA settings, ``cudnn_sdp``: whether cuDNN attention was allowed in the loop's forwards.
One JSON row per (length, loop). On the CPU torch runs one thread (a second splits each ``torch.cat``).

Cold and warm shapes: cuDNN attention (torch's first SDPA choice on an H100/H200 with a recent cuDNN) builds
an execution graph for each new key length and caches it for the process, so an eager DynamicCache decode
meets a new shape every step. ``wall_ms`` is a run over key lengths this process has not seen (each loop
and run at its own prompt length, a little past the nominal ``tin``), ``wall_ms_repeat`` the same run again.
The eager backends now run SDPA without cuDNN (llm_energy/measure/inference/attention.py): ``cache``'s two
should agree, ``cache-cudnn``'s show what the backend cost before (H200 llama-2-7b: 40-87 ms a step, cold).

Loops: ``cache`` (the backend ``llm-energy profile --backend cache`` runs: flash, efficient or math),
``cache-cudnn`` (the same loop under torch's default SDPA order, cuDNN first where it runs: the backend as it
was), ``generate`` (HF greedy ``generate()``, the same DynamicCache, torch's default), ``static-eager`` (the
``static`` backend's StaticCache, uncompiled: one key length, no growing ``torch.cat``) and ``cache+samplers``
(``cache`` while the profiler's power samplers poll; its row's ``pollers``: each sampler's polls, CPU us a poll
and clocked reads). The meter loops (benchmarks/gpu/eager_meters.py: ``cache+none``, ``cache+null``,
``cache+estimate``, ``cache+nvml``, ``cache+nvml-100ms``, ``cache+nvml-proc``, ``cache+switch1ms``,
``cache+samplers-proc``: the profiler's samplers as ``--sampler-process`` polls them) time the
``cache`` loop while one poller runs, unprofiled, at ``--meter-lengths`` only (default the first length): why
the samplers slow the step. A meter missing here (no NVML) gives a row with ``skipped``, no timings.

    python3 -m benchmarks.gpu.eager_step --preset llama-2-7b --lengths 256,2048 --jsonl OUT
    python3 -m benchmarks.gpu.eager_step --device cpu --preset tiny-llama --lengths 16,256 --steps 4
    python3 -m benchmarks.gpu.eager_step --loops cache,cache+samplers,cache+none,cache+nvml,cache+nvml-proc
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from typing import Any, Callable

from benchmarks.gpu.eager_meters import METER_LOOPS, METERS, Meter, MeterUnavailable, poller
from llm_energy.measure.samplers.base import MeterReadError

LOOPS = ("cache", "cache-cudnn", "generate", "static-eager", "cache+samplers")
EAGER = ("cache", "cache+samplers", *METER_LOOPS)  # the loops under the eager backends' SDPA kernels (attention.eager_attention)
SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero", "aten::equal")
RUNTIME = ("cudaMalloc", "cudaFree", "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
ALLOC_STATS = ("num_device_alloc", "num_device_free", "num_alloc_retries", "num_sync_all_streams")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu.eager_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="llama-2-7b")
    p.add_argument("--lengths", default="256,2048", help="prompt lengths (tokens), comma-separated")
    p.add_argument("--loops", default=",".join(LOOPS + METER_LOOPS), help=f"of {', '.join(LOOPS + METER_LOOPS)}")
    p.add_argument("--meter-lengths", default=None,
                   help="the lengths the meter loops (cache+none, cache+nvml, ...) run at; default the first of --lengths")
    p.add_argument("--nvml", default="pynvml", help="NVML module, or MODULE:FACTORY (a fake) for the meter loops")
    p.add_argument("--steps", type=int, default=24, help="decode steps timed (unprofiled)")
    p.add_argument("--prof-steps", type=int, default=6, help="decode steps profiled")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="auto", help="auto: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--alloc-conf", default=None, help="PYTORCH_CUDA_ALLOC_CONF for this run (e.g. expandable_segments:True)")
    p.add_argument("--jsonl", default=None, help="append one row per (length, loop)")
    a = p.parse_args(argv)
    a.lengths = [int(x) for x in a.lengths.split(",") if x]
    a.loops = [x for x in a.loops.split(",") if x]
    a.meter_lengths = [int(x) for x in a.meter_lengths.split(",") if x] if a.meter_lengths is not None else a.lengths[:1]
    if bad := [x for x in a.loops if x not in LOOPS + METER_LOOPS]:
        p.error(f"--loops: unknown {bad}; choose of {', '.join(LOOPS + METER_LOOPS)}")
    if bad := [x for x in a.meter_lengths if x not in a.lengths]:
        p.error(f"--meter-lengths: {bad} not in --lengths")
    if a.steps < 1 or a.prof_steps < 1 or not a.lengths or min(a.lengths) < 1:
        p.error("--steps, --prof-steps and --lengths must be >= 1")
    return a


def span(args: argparse.Namespace) -> int:
    """Prompt lengths one loop uses at one nominal length: the timed run's, the two profiled runs' (each run
    over key lengths of its own, so none finds another's in cuDNN's graph cache)."""
    return args.steps + args.prof_steps + 12


# ---- the loops: each fn(ids, n) generates n new tokens (a prefill, then n - 1 decode steps) -------------
def make_loops(loaded: Any, names: list[str], bucket: int) -> dict[str, Callable[[Any, int], Any]]:
    import torch

    from llm_energy.measure.inference.backends import make_backend

    loops: dict[str, Callable[[Any, int], Any]] = {}
    for name in names:
        if name in ("cache", "cache+samplers", *METER_LOOPS):
            loops[name] = make_backend("cache", loaded).generate
        elif name == "cache-cudnn":
            b = make_backend("cache", loaded)
            b._run = b._loop  # the backend's loop, not under its SDPA kernels: torch's default order
            loops[name] = b.generate
        elif name == "static-eager":
            b = make_backend("static", loaded)
            b._decode, b._prefill = b._decode_step, b._prefill_step  # the same StaticCache steps, never compiled
            b.prepare(1, 8, bucket - 8)  # its cache sized for the longest run
            loops[name] = lambda ids, n, b=b: b._generate_in((1, bucket), ids, n)
        elif name == "generate":
            model = loaded.model

            def hf(ids, n, model=model):
                with torch.inference_mode():
                    return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                          max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
            loops[name] = hf
    return loops


def _sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def _alloc_stats(cuda: bool) -> dict[str, int]:
    if not cuda:
        return {}
    import torch

    s = torch.cuda.memory_stats()
    return {k: int(s.get(k, 0)) for k in ALLOC_STATS}


def _clock(cuda: bool) -> dict[str, float]:
    return {"wall": time.perf_counter(), "cpu": time.thread_time(), "cpu_all": time.process_time(), **_alloc_stats(cuda)}


def timed(model: Any, fn: Callable, ids: Any, n: int, cuda: bool) -> dict[str, Any]:
    """Per decode step of one run of ``n`` new tokens: wall and CPU seconds and the allocator's counters from
    the end of the prefill (the model's first forward, device-synchronised there by a hook) to the end;
    ``cudnn_sdp``: whether cuDNN attention was allowed in that forward (read by the hook)."""
    import torch

    start: dict[str, float] = {}
    cudnn: list[bool] = []

    def after_prefill(*_: Any) -> None:
        if not start:
            cudnn.append(torch.backends.cuda.cudnn_sdp_enabled())  # as the model's forward ran
            _sync(cuda)
            start.update(_clock(cuda))

    hook = model.register_forward_hook(after_prefill)
    try:
        r = fn(ids, n)
        _sync(cuda)
    finally:
        hook.remove()
    end = _clock(cuda)
    out: dict[str, Any] = {k: (end[k] - start[k]) / (n - 1) for k in end}
    out["cudnn_sdp"] = cudnn[0]
    if hasattr(r, "decode_s"):
        out["backend"] = r.decode_s / (n - 1)
    return out


def profiled(fn: Callable, ids: Any, n: int, cuda: bool) -> collections.Counter:
    """Event counts of one run of ``n`` new tokens; ``kernel_us``: the summed GPU time of its kernels
    (``k:NAME`` / ``kus:NAME``: each kernel's count and time)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as p:
        fn(ids, n)
        _sync(cuda)
    c: collections.Counter = collections.Counter()
    for e in p.events():
        if e.device_type == DeviceType.CUDA:
            us = e.time_range.elapsed_us()
            c["memcpy_dev" if e.name.startswith(("Memcpy", "Memset")) else "kernels"] += 1
            c["kernel_us"] += us
            c["k:" + e.name] += 1
            c["kus:" + e.name] += us
        elif e.name.startswith("aten::"):
            c["aten_ops"] += 1
            if e.name in SYNC_OPS:
                c[e.name] += 1
        elif e.name.startswith("cu"):
            c["rt:" + e.name] += 1
    return c


def prompt(loaded: Any, length: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(length)
    return torch.randint(3, loaded.vocab_size, (1, length), generator=g).to(loaded.device)


def timed_pair(loaded: Any, fn: Callable, base: int, args: argparse.Namespace, cuda: bool) -> tuple[dict, dict]:
    """``timed`` from a prompt of ``base`` tokens over key lengths not seen before, then again."""
    ids = prompt(loaded, base)
    return timed(loaded.model, fn, ids, 1 + args.steps, cuda), timed(loaded.model, fn, ids, 1 + args.steps, cuda)


def measure(loaded: Any, fn: Callable, base: int, args: argparse.Namespace, cuda: bool) -> dict[str, Any]:
    """Per-step figures of ``fn`` from prompts of ``base`` tokens and a little more: the timed run over key
    lengths not seen before, then again (``_repeat``); the profiled counts a run of 2 + ``prof_steps`` tokens
    less one of 2, each at a prompt length of its own."""
    cold, warm = timed_pair(loaded, fn, base, args, cuda)
    hi_at = base + args.steps + 4
    p_hi = profiled(fn, prompt(loaded, hi_at), 2 + args.prof_steps, cuda)
    p_lo = profiled(fn, prompt(loaded, hi_at + args.prof_steps + 4), 2, cuda)
    pp = {k: (p_hi[k] - p_lo[k]) / args.prof_steps for k in set(p_lo) | set(p_hi)}
    runtime = {k[3:]: round(v, 2) for k, v in sorted(pp.items()) if k.startswith("rt:") and v}
    top = sorted((k[4:] for k in pp if k.startswith("kus:")), key=lambda k: -pp["kus:" + k])[:6]
    row = {"tin_run": base, "cudnn_sdp": cold["cudnn_sdp"], "wall_ms": cold["wall"] * 1e3,
           "wall_ms_repeat": warm["wall"] * 1e3,
           "cpu_ms": cold["cpu"] * 1e3, "cpu_ms_repeat": warm["cpu"] * 1e3, "cpu_all_ms": cold["cpu_all"] * 1e3,
           "backend_ms": cold["backend"] * 1e3 if "backend" in cold else None,
           "kernel_ms": pp.get("kernel_us", 0.0) / 1e3, "kernels": pp.get("kernels", 0.0),
           "memcpy_dev": pp.get("memcpy_dev", 0.0), "aten_ops": pp.get("aten_ops", 0.0),
           "sync_ops": {k: v for k in SYNC_OPS if (v := pp.get(k, 0.0))},
           "top_kernels": [[k[:80], round(pp["k:" + k], 2), round(pp["kus:" + k] / 1e3, 4)] for k in top]}
    row.update({k: runtime.get(k, 0.0) for k in RUNTIME})
    row["cudaMemcpy"] = sum(v for k, v in runtime.items() if k.startswith("cudaMemcpy"))
    row["runtime"] = runtime
    row.update({k: cold[k] for k in ALLOC_STATS if k in cold})
    row.update({k + "_repeat": warm[k] for k in ALLOC_STATS[:1] if k in warm})
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def sdpa_choice(loaded: Any, length: int, eager: bool = False) -> str:
    """The SDPA backend torch picks for a decode step's attention at ``length`` keys (transformers' layout:
    the query a transposed view, the concatenated K and V contiguous, no mask); ``eager``: under the eager
    backends' SDPA kernels, else torch's default."""
    import contextlib

    import torch

    from llm_energy.measure.inference.attention import eager_attention

    cfg = loaded.config
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    dt = next(loaded.model.parameters()).dtype
    q = torch.zeros(1, 1, heads, d, dtype=dt, device=loaded.device).transpose(1, 2)
    k = torch.zeros(1, kv, length, d, dtype=dt, device=loaded.device)
    names = {int(getattr(torch._C._SDPBackend, x)): x for x in dir(torch._C._SDPBackend)
             if not x.startswith("_") and x not in ("name", "value")}
    with eager_attention() if eager else contextlib.nullcontext():
        return names.get(int(torch._fused_sdp_choice(q, k, k, None, 0.0, False, scale=None, enable_gqa=kv != heads)), "?")


def measure_timed(loaded: Any, fn: Callable, base: int, args: argparse.Namespace, cuda: bool) -> dict[str, Any]:
    """A meter loop's per-step figures: ``measure``'s timed runs (new key lengths, then again), no profile."""
    cold, warm = timed_pair(loaded, fn, base, args, cuda)
    row = {"tin_run": base, "cudnn_sdp": cold["cudnn_sdp"], "wall_ms": cold["wall"] * 1e3,
           "wall_ms_repeat": warm["wall"] * 1e3, "cpu_ms": cold["cpu"] * 1e3, "cpu_ms_repeat": warm["cpu"] * 1e3,
           "cpu_all_ms": cold["cpu_all"] * 1e3, "cpu_all_ms_repeat": warm["cpu_all"] * 1e3,
           "backend_ms": cold["backend"] * 1e3 if "backend" in cold else None}
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def run_loop(loaded: Any, name: str, fn: Callable, base: int, args: argparse.Namespace, cuda: bool) -> dict[str, Any]:
    """One loop's figures; ``cache+samplers`` and the meter loops with their poller running (closed in the end)
    and its summaries in ``pollers``."""
    meter = METERS.get(name, Meter("profiler") if name == "cache+samplers" else None)
    if meter is None:
        return measure(loaded, fn, base, args, cuda)
    try:
        p = poller(meter, "eager-step", loaded.gpu_indices or None, args.nvml)
    except MeterUnavailable as e:
        return {"tin_run": base, "skipped": str(e), "samplers": [], "pollers": []}
    switch = meter.switch_s or sys.getswitchinterval()
    try:
        p.start()
        row = (measure if name == "cache+samplers" else measure_timed)(loaded, fn, base, args, cuda)
    except (MeterUnavailable, MeterReadError) as e:  # a child's meter (cache+nvml-proc, cache+samplers-proc)
        row = {"tin_run": base, "skipped": str(e)}
    finally:
        pollers = p.stop()
    if "skipped" in row:
        return {**row, "samplers": [], "pollers": []}
    return {**row, "samplers": p.names, "pollers": pollers, "switch_interval_s": switch}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.alloc_conf is not None:
        if "torch" in sys.modules:
            raise SystemExit("--alloc-conf must be set before torch is imported")
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = args.alloc_conf
    import torch
    import transformers

    from llm_energy.measure.inference.loading import load_model
    from llm_energy.measure.inference.sizing import bucket_len

    transformers.logging.set_verbosity_error()
    if args.device == "cpu":
        torch.set_num_threads(1)
    dtype = args.dtype if args.dtype != "auto" else ("float32" if args.device == "cpu" else "bfloat16")
    cuda = args.device.startswith("cuda")
    t0 = time.perf_counter()
    longest = max(n + (i + 1) * span(args) for n in args.lengths for i, loop in enumerate(args.loops)
                  if loop not in METERS or n in args.meter_lengths) + 4
    loaded = load_model(args.preset, args.device, dtype, max_seq_len=longest)
    loops = make_loops(loaded, args.loops, bucket_len(longest))
    for fn in loops.values():  # kernels chosen, handles made: away from any measured length
        fn(prompt(loaded, 8), 4)
    print(f"# {args.preset} on {loaded.device} {dtype}: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"loaded and warmed in {time.perf_counter() - t0:.1f} s", flush=True)
    base = {"preset": args.preset, "device": loaded.device, "dtype": dtype, "torch": torch.__version__,
            "transformers": transformers.__version__, "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
            "cudnn": torch.backends.cudnn.version() if cuda else None, "steps": args.steps, "prof_steps": args.prof_steps}
    for length in args.lengths:
        choice = {eager: sdpa_choice(loaded, length, eager) for eager in (False, True)}
        for i, (name, fn) in enumerate(loops.items()):
            if name in METERS and length not in args.meter_lengths:
                continue
            row = {**base, "loop": name, "tin": length, "sdpa_choice": choice[name in EAGER],
                   **run_loop(loaded, name, fn, length + i * span(args), args, cuda)}
            row.setdefault("samplers", [])
            row["reserved_gb"] = round(torch.cuda.memory_reserved() / 1e9, 2) if cuda else None
            print(_line(row) if name not in METERS else _meter_line(row), flush=True)
            if row.get("pollers") and name not in METERS:
                print(f"# {name} pollers: {_polls(row)}", flush=True)
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(f"# done in {time.perf_counter() - t0:.1f} s")
    return 0


def _line(r: dict[str, Any]) -> str:
    return (f"{r['loop']:>15} tin {r['tin']:>5}: wall {r['wall_ms']:7.2f} ms/step (again {r['wall_ms_repeat']:7.2f}), "
            f"cpu {r['cpu_ms']:7.2f} (again {r['cpu_ms_repeat']:7.2f}), kernels {r['kernels']:6.1f} in {r['kernel_ms']:6.2f} ms, "
            f"aten {r['aten_ops']:6.1f}, sync {r['sync_ops'] or 0}, cudaMalloc {r['cudaMalloc']}, cudaFree {r['cudaFree']}, "
            f"streamSync {r['cudaStreamSynchronize']}, memcpy {r['cudaMemcpy']}, "
            f"allocator mallocs {r.get('num_device_alloc', '-')}, sdpa {r['sdpa_choice']}, cudnn allowed {r['cudnn_sdp']}")


def _polls(r: dict[str, Any]) -> str:
    return "; ".join(f"{p['sampler']} {p['where']} {p['polls']} polls at {p['poll_hz']} Hz, "
                      f"{p['poll_cpu_us_per_poll']} us CPU a poll" + "".join(
                          f", {k} {v.get('median_us')}/{v.get('p90_us')} us (idle {p['read_us_idle'].get(k, {}).get('median_us')})"
                          for k, v in p["read_us"].items() if v["n"]) for p in r["pollers"])


def _meter_line(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"{r['loop']:>16} tin {r['tin']:>5}: skipped: {r['skipped']}"
    return (f"{r['loop']:>16} tin {r['tin']:>5}: wall {r['wall_ms']:7.2f} ms/step (again {r['wall_ms_repeat']:7.2f}), "
            f"cpu {r['cpu_ms']:7.2f} (again {r['cpu_ms_repeat']:7.2f}), all threads {r['cpu_all_ms']:7.2f}, "
            f"switch {r['switch_interval_s'] * 1e3:.1f} ms; {_polls(r) or 'no poller'}")


if __name__ == "__main__":
    sys.exit(main())
