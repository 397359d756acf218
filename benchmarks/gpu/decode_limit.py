"""Batch-1 decode ms/step of each preset against the HBM limit of the machine it runs on.

    python3 -m benchmarks.gpu.decode_limit --bw-only                      # HBM copy bandwidth only
    python3 -m benchmarks.gpu.decode_limit --presets llama-2-7b,llama-2-70b [--backend static] \
        [--bw 4.23] [--jsonl results.jsonl]                              # live: load, compile, time
    python3 -m benchmarks.gpu.decode_limit --presets llama-2-7b --variants base,fused,cdt,fused+cdt \
        --bw 4.20 --jsonl results.jsonl                                  # variants of static, side by side
    python3 -m benchmarks.gpu.decode_limit --table results.jsonl          # print saved live results
    python3 -m benchmarks.gpu.decode_limit --stores data/h200/* --bw 4.23 # from measured stores (no GPU)

Bandwidth: a device-to-device copy of 4 GiB, bytes read + written, median of 20 (METHOD.md: measure
the ceiling, don't quote it). Limit: every weight read once per generated token, so a bandwidth-bound
batch-1 step takes at least (weight bytes) / (bandwidth). Two byte counts are printed: all weights (the
limit the issue and docs/h100.md quote) and the bytes one step must read (less the input embedding,
of which one row is read, unless tied to the LM head; for a mixture of experts only the top-k of the
experts' weights). Live mode builds the preset (random bf16 weights), runs the project's backend
(``static``: StaticCache + torch.compile reduce-overhead; ``prepare`` compiles and captures, timed
apart as compile_s), then times whole generations of --tout tokens from a --tin prompt for at least
--min-s seconds; ms/step is decode time / (tout - 1), prefill ms (``prefill_ms``) the median time to
the first token at --tin (``cprefill`` compiles the prefill), and J/token comes from the NVML energy
counter over the timed generations (gross, batch 1).

Variants (``--variants``, issue 13): each is a backend label of ``llm_energy.measure.inference.fusion``
run on the same loaded model, one after the other, each compiled afresh (``torch._dynamo.reset()``
between them): ``base`` is ``--backend``; ``fused``, ``cdt``, ``fused+cdt+math``, ... are ``static+``
those options; a full label (``static+fused``) is taken as is. Each variant's row is written to
``--jsonl`` as soon as it is measured (a budget that stops the run keeps the finished ones), and a
second table puts the variants of each preset side by side, with their speed-up over the first.
``--kernels`` (CUDA) adds, per variant, the GPU kernels one decode step launches and their summed
time (torch.profiler over two short generations, 8 and 24 steps, differenced so that the prefill
cancels): kernels a step and a layer, kernel ms a step against the step's ms ("busy": the rest is
gaps between kernels), and the kernels that take the most time. Written as its own JSONL row
(``"kind": "kernels"``) after the variant's timing row, so a profiler failure loses no timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from importlib import import_module
from pathlib import Path


def _imp(*names: str):
    """The first importable module of ``names`` (the package layout before and after its split)."""
    err = None
    for n in names:
        try:
            return import_module(n)
        except ImportError as e:  # noqa: PERF203
            err = e
    raise err  # type: ignore[misc]


def _attr(name: str, *modules: str):
    """``name`` from the first of ``modules`` that is importable and defines it."""
    for n in modules:
        try:
            m = import_module(n)
        except ImportError:
            continue
        if hasattr(m, name):
            return getattr(m, name)
    raise ImportError(f"{name} not found in {', '.join(modules)}")


_INFERENCE = ("llm_energy.measure.inference.loading", "llm_energy.measure.inference.sizing",
              "llm_energy.measure.inference.backends", "llm_energy.backends")


def presets_mod():
    return _imp("llm_energy.measure.inference.presets", "llm_energy.presets")


PAPER_PRESETS = ("llama-2-7b", "llama-2-13b", "llama-2-70b", "mistral-7b", "mixtral-8x7b", "falcon-7b", "falcon-40b")


def measure_bandwidth(gib: float = 4.0, reps: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write), median of ``reps`` copies."""
    import torch

    n = int(gib * 2**30) // 2
    src = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n * 2 / statistics.median(times)


def step_bytes(model, cfg, dtype_bytes: int = 2) -> tuple[int, int]:
    """(all weight bytes, bytes one batch-1 decode step reads): input embedding excluded unless tied to
    the LM head; expert weights scaled by top-k / experts for a mixture of experts."""
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is emb
    read = total - (0 if tied else emb.numel())
    n_exp = getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", None)
    k = getattr(cfg, "num_experts_per_tok", None)
    if n_exp and k:
        expert = sum(p.numel() for n, p in params.items() if ".experts" in n)
        read -= int(expert * (1 - k / n_exp))
    return total * dtype_bytes, read * dtype_bytes


def meta_bytes(preset: str) -> tuple[int, int]:
    """step_bytes of a preset built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = presets_mod().get_preset(preset).config()
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(cfg)
    return step_bytes(m, cfg)


def variant_labels(variants: str, backend: str) -> list[str]:
    """Backend labels of comma-separated variants: ``base`` -> ``backend``; ``fused+cdt`` -> the canonical
    ``static+fused+cdt``; a full label as is (static ones canonicalised)."""
    fusion = import_module("llm_energy.measure.inference.fusion")
    out = []
    for v in (x.strip() for x in variants.split(",")):
        if not v:
            continue
        label = backend if v == "base" else v if v.split("+")[0] in ("static", "cache", "no-cache") else f"static+{v}"
        opts = fusion.parse_static(label)
        out.append(label if opts is None else fusion.static_label(opts))
    return out


def live(preset: str, backend_name: str, bw: float, tin: int, tout: int, min_s: float, device: str = "cuda:0") -> dict:
    return next(live_variants(preset, [backend_name], bw, tin, tout, min_s, device))


def live_variants(preset: str, backends: list[str], bw: float, tin: int, tout: int, min_s: float,
                  device: str = "cuda:0", kernels: bool = False):
    """Load ``preset`` once, then per backend label: build, prepare (compile_s), time; yield its row
    (and, with ``kernels`` on CUDA, a kernels row after it)."""
    import gc

    import torch

    load_model, kv_cache_len, make_backend = (_attr(n, *_INFERENCE) for n in ("load_model", "kv_cache_len", "make_backend"))
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    loaded = load_model(preset, device, "auto", max_seq_len=max(kv_cache_len(b, tin + tout) for b in backends),
                        kv_cache=any(b != "no-cache" for b in backends))
    sync()
    load_s = time.perf_counter() - t0
    all_b, read_b = step_bytes(loaded.model, loaded.config)
    print(f"[{preset}] loaded in {load_s:.1f} s ({all_b / 1e9:.2f} GB)", flush=True)
    for i, name in enumerate(backends):
        if i:
            torch._dynamo.reset()  # each variant compiles and captures afresh
            if cuda:
                torch.cuda.empty_cache()
        t0 = time.perf_counter()
        be = None
        try:
            be = make_backend(name, loaded)  # fused variants re-lay the weights here (counted in compile_s)
            print(f"[{preset}] preparing {be.name} ...", flush=True)
            be.prepare(1, tin, tout)
            sync()
            compile_s = time.perf_counter() - t0
            print(f"[{preset}] {be.name}: prepare (compile + capture + warm-up) {compile_s:.1f} s", flush=True)
            timed = _time_generations(be, preset, tin, tout, min_s, cuda)
        except Exception as e:  # noqa: BLE001 - one variant failing (compile error, OOM) leaves the others to run
            print(f"[{preset}] {name} FAILED after {time.perf_counter() - t0:.1f} s: {type(e).__name__}: "
                  f"{str(e).splitlines()[0] if str(e) else ''}", flush=True)
            del be
            gc.collect()
            continue
        res = {"preset": preset, "backend": be.name, **timed,
               "weights_b": all_b, "read_b": read_b, "bw_bps": bw,
               "limit_ms": 1e3 * all_b / bw, "limit_read_ms": 1e3 * read_b / bw,
               "load_s": load_s, "compile_s": compile_s, "fused_modules": getattr(be, "fused_modules", 0),
               "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__}
        res["ratio"] = res["ms_per_step"] / res["limit_ms"]
        res["ratio_read"] = res["ms_per_step"] / res["limit_read_ms"]
        yield res
        if kernels and cuda:
            try:
                k = kernel_profile(be, tin)
                yield {"kind": "kernels", "preset": preset, "backend": be.name, "ms_per_step": res["ms_per_step"],
                       "n_layers": int(loaded.config.num_hidden_layers), **k}
            except Exception as e:  # noqa: BLE001 - the timing row is out already
                print(f"[{preset}] {be.name}: kernel profile failed: {type(e).__name__}: {e}", flush=True)
        del be
        gc.collect()


def kernel_profile(be, tin: int, short: int = 8, long: int = 24, cuda: bool = True) -> dict:
    """GPU kernels of one decode step: two profiled generations of ``short`` and ``long`` decode steps,
    differenced (the prefill and the per-generation work cancel). ``cuda=False``: the CPU ops instead
    (only to test this code without a GPU)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    init = getattr(torch.profiler._utils, "_init_for_cuda_graphs", None)
    if cuda and init is not None:
        init()  # CUPTI set up so that kernels replayed from CUDA graphs are recorded (gpt-fast does this)
    activity, kind = (ProfilerActivity.CUDA, torch.autograd.DeviceType.CUDA) if cuda else \
        (ProfilerActivity.CPU, torch.autograd.DeviceType.CPU)
    prompt = be.make_prompt(1, tin, seed=1)
    runs = []
    for steps in (short, long):
        with profile(activities=[activity]) as prof:
            be.generate(prompt, steps + 1)
        runs.append([(e.name, e.time_range.elapsed_us()) for e in prof.events() if e.device_type == kind])
    return kernel_summary(runs[0], runs[1], long - short)


def kernel_summary(short: list[tuple[str, float]], long: list[tuple[str, float]], steps: int, top: int = 6) -> dict:
    """Per decode step: kernels, their summed ms, and the ``top`` kernels by time (name, ms, count), from
    the (name, microseconds) device events of two generations ``steps`` decode steps apart."""
    def agg(ev):
        out: dict[str, list[float]] = {}
        for name, us in ev:
            a = out.setdefault(name, [0, 0.0])
            a[0] += 1
            a[1] += us
        return out

    a, b = agg(short), agg(long)
    diff = {n: ((b[n][0] - a.get(n, [0, 0.0])[0]) / steps, (b[n][1] - a.get(n, [0, 0.0])[1]) / steps / 1e3) for n in b}
    best = sorted(diff.items(), key=lambda kv: -kv[1][1])[:top]
    return {"kernels_per_step": (len(long) - len(short)) / steps,
            "kernel_ms_per_step": (sum(us for _, us in long) - sum(us for _, us in short)) / steps / 1e3,
            "top_kernels": [{"name": n[:80], "ms": ms, "count": c} for n, (c, ms) in best]}


def _time_generations(be, preset: str, tin: int, tout: int, min_s: float, cuda: bool) -> dict:
    """Median ms/step over whole generations of ``tout`` tokens lasting at least ``min_s`` (at least 3),
    their median prefill ms (time to the first token, range) and J/token from the NVML counter over them."""
    prompt = be.make_prompt(1, tin, seed=1)
    be.generate(prompt, tout)  # one more untimed generation after the compile
    energy = _energy_counter() if cuda else (lambda: None)
    e0 = energy()
    t_start = time.perf_counter()
    steps, prefills = [], []
    while len(steps) < 3 or time.perf_counter() - t_start < min_s:
        r = be.generate(prompt, tout)
        if r.tout_actual != tout or r.tin_actual != tin:
            raise SystemExit(f"{preset}: asked tin={tin} tout={tout}, got {r.tin_actual}/{r.tout_actual}")
        steps.append(r.decode_s / (tout - 1))
        prefills.append(r.prefill_s)
    wall = time.perf_counter() - t_start
    time.sleep(0.15)  # one counter update period past the end
    e1 = energy()
    n = len(steps)
    metered = e0 is not None and e1 is not None
    return {"tin": tin, "tout": tout, "n_generations": n, "ms_per_step": 1e3 * statistics.median(steps),
            "ms_min": 1e3 * min(steps), "ms_max": 1e3 * max(steps), "timed_s": wall,
            "j_per_token": (e1 - e0) / (n * tout) if metered else None,
            "mean_w": (e1 - e0) / (wall + 0.15) if metered else None,
            "prefill_ms": 1e3 * statistics.median(prefills), "prefill_ms_min": 1e3 * min(prefills),
            "prefill_ms_max": 1e3 * max(prefills)}


def _energy_counter():
    """A reader of GPU 0's NVML total-energy counter in joules (None where NVML is missing)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3
    except Exception:  # noqa: BLE001
        return lambda: None


def from_stores(dirs: list[str], bw: float) -> list[dict]:
    """Batch-1 decode ms/step per store and backend from its measured trials (tout >= 64), the trials
    ``fit`` leaves out (suspect meter readings, errata such as compiled-in-window) left out here too
    (a line on stderr says how many). One row per (preset, backend) over every bucket, then one row per
    static-cache bucket (``"kind": "bucket"``) whose limit adds the KV bytes a step reads: a static
    cache is attended over its whole bucket, so a step reads weights + bucket x KV bytes a token. Trials
    of erratum ``kv-cache-ignored`` (no decode step read the cache) get no bucket rows (a line on stderr).
    ``compile_s``: the median of the batch-1 compiles the store recorded (``prepare_s`` of its trials with
    ``prepare_compiled``, warm-ups included: a bucket's first trial compiles), per row's preset and backend
    and per bucket; None for stores measured before those columns."""
    import polars as pl

    store_mod = _imp("llm_energy.trials.store", "llm_energy.store")
    schema = _imp("llm_energy.trials.schema")
    sizing = _imp("llm_energy.measure.inference.sizing")
    out = []
    for d in dirs:
        if not (Path(d) / "manifest.json").exists():
            continue
        every = store_mod.open_store(d).trials()
        compiles = _compile_seconds(every)
        df, why = schema.drop_suspect(every, what=f"decode_limit {d}")
        if why:
            print(why, file=sys.stderr)
        df = df.filter(~pl.col("warmup") & (pl.col("batch") == 1) & (pl.col("tout") >= 64))
        for (model, backend), g in df.group_by("model", "backend", maintain_order=True):
            all_b, read_b = meta_bytes(model)
            rows = [_store_row(model, backend, d, g, all_b, read_b, bw)]
            if sizing.is_static_backend(backend):
                rows += _bucket_rows(model, backend, d, g, all_b, read_b, bw)
            for r in rows:  # the preset's row: every bucket's compiles; a bucket's row: its own
                got = [s for bucket, s in compiles.get((model, backend), []) if r.get("bucket") in (None, bucket)]
                r["compile_s"] = float(statistics.median(got)) if got else None
            out += rows
    return out


def _compile_seconds(trials) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(model, backend) -> (bucket, seconds) of each batch-1 compile the trials recorded (``prepare_s`` where
    ``prepare_compiled``); empty for a store from before those columns."""
    import polars as pl

    if "prepare_compiled" not in trials.columns:
        return {}
    sizing = _imp("llm_energy.measure.inference.sizing")
    out: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in trials.filter(pl.col("prepare_compiled").fill_null(False) & (pl.col("batch") == 1)).iter_rows(named=True):
        out.setdefault((r["model"], r["backend"]), []).append((sizing.bucket_len(r["tin"] + r["tout"]), r["prepare_s"]))
    return out


def _bucket_rows(model: str, backend: str, store: str, g, all_b: int, read_b: int, bw: float) -> list[dict]:
    """One row per static-cache bucket of trials ``g``, its limit with the bucket's KV bytes; none for the
    trials of erratum ``kv-cache-ignored`` (a line on stderr)."""
    import polars as pl

    sizing = _imp("llm_energy.measure.inference.sizing")
    errata = _imp("llm_energy.trials.errata")
    read = g.filter(~errata.kv_cache_ignored_expr()) if "versions" in g.columns else g
    if read.height < g.height:
        print(f"decode_limit {store}: no bucket rows for {g.height - read.height} {model} {backend} trial(s) of "
              f"erratum {errata.KV_CACHE_IGNORED} (their decode steps read no KV cache)", file=sys.stderr)
    # what the backend's cache held a token under the transformers that ran (falcon-40b: 8 KV groups under gqa
    # or from transformers 5.25, else 128 heads)
    presets = presets_mod()
    cfg, grouped = presets.get_preset(model).hf_config, sizing.kv_groups_cached(backend)
    # unrecorded: the older layout (every trial recorded its versions long before transformers 5.25)
    ran = ([v or "" for v in read["versions"].fill_null("{}").str.json_path_match("$.transformers").to_list()]
           if "versions" in read.columns else [""] * read.height)
    read = read.with_columns(
        pl.Series("bucket", [sizing.bucket_len(a + b) for a, b in zip(read["tin"], read["tout"])], dtype=pl.Int64),
        pl.Series("kv_b", [presets.kv_bytes_per_token(cfg, 2, grouped=grouped, transformers_version=v) for v in ran],
                  dtype=pl.Int64))
    rows = []
    for (bucket,), gb in read.sort("bucket").group_by("bucket", maintain_order=True):
        if gb["kv_b"].n_unique() > 1:
            print(f"decode_limit {store}: no {bucket}-token bucket row for {model} {backend}: its trials ran "
                  "transformers versions that cache different KV bytes a token", file=sys.stderr)
            continue
        kv_b = int(gb["kv_b"][0])
        row = _store_row(model, backend, store, gb, all_b, read_b, bw)
        kv = bucket * kv_b
        row.update(kind="bucket", bucket=int(bucket), kv_b=kv, limit_kv_ms=1e3 * (read_b + kv) / bw,
                   ratio_kv=row["ms_per_step"] / (1e3 * (read_b + kv) / bw))
        rows.append(row)
    return rows


def _store_row(model: str, backend: str, store: str, g, all_b: int, read_b: int, bw: float) -> dict:
    """decode_limit's row for trials ``g`` of one preset and backend: median ms/step (range), limits."""
    step = 1e3 * g["decode_s"] / (g["tout"] - 1)
    ms = float(step.median())
    return {"preset": model, "backend": backend, "store": store, "n_trials": g.height,
            "ms_per_step": ms, "ms_min": float(step.min()), "ms_max": float(step.max()),
            "weights_b": all_b, "read_b": read_b, "bw_bps": bw, "limit_ms": 1e3 * all_b / bw,
            "limit_read_ms": 1e3 * read_b / bw, "ratio": ms / (1e3 * all_b / bw),
            "ratio_read": ms / (1e3 * read_b / bw),
            "j_per_token": float((g["energy_j"] / (g["tout"] * g["batch"])).median())}


def _kind_table(rows: list[dict], kind: str, title: str, header: str) -> list[dict]:
    """The rows of ``kind``; when there are any, the table's title and markdown header printed first."""
    rows = [r for r in rows if r.get("kind") == kind]
    if rows:
        print(f"\n{title}")
        print(f"| {header} |")
        print("|" + "---|" * len(header.split(" | ")))
    return rows


def print_buckets(rows: list[dict]) -> None:
    """The stores' per-bucket rows: ms/step against weights + the bucket's KV bytes at the bandwidth."""
    for r in _kind_table(rows, "bucket", "batch-1 decode by static-cache bucket (limit: bytes a step reads + bucket x KV "
                         "bytes a token)", "preset | backend | bucket | trials | KV GB/step | limit ms | ms/step | x limit | J/token"):
        print(f"| {r['preset']} | {r['backend']} | {r['bucket']} | {r['n_trials']} | {r['kv_b'] / 1e9:.2f} | "
              f"{r['limit_kv_ms']:.2f} | {r['ms_per_step']:.2f} ({r['ms_min']:.2f}-{r['ms_max']:.2f}) | "
              f"{r['ratio_kv']:.2f} | {r['j_per_token']:.2f} |")


def print_kernels(rows: list[dict]) -> None:
    """The ``--kernels`` rows: kernels a decode step and a layer, their ms against the step's, the top ones."""
    for r in _kind_table(rows, "kernels", "GPU kernels of one batch-1 decode step (torch.profiler; busy = kernel time / "
                         "step time)", "preset | backend | kernels/step | per layer | kernel ms/step | ms/step | busy | "
                         "top kernels (ms/step x count)"):
        top = "; ".join(f"{k['name'][:40]} {k['ms']:.3f}x{k['count']:.0f}" for k in r["top_kernels"][:4])
        print(f"| {r['preset']} | {r['backend']} | {r['kernels_per_step']:.0f} | {r['kernels_per_step'] / r['n_layers']:.1f} | "
              f"{r['kernel_ms_per_step']:.2f} | {r['ms_per_step']:.2f} | {r['kernel_ms_per_step'] / r['ms_per_step']:.2f} | {top} |")


def print_table(rows: list[dict]) -> None:
    rows = [r for r in rows if r.get("kind") not in ("kernels", "bucket")]
    if not rows:
        print("no results")
        return
    bw = rows[0]["bw_bps"]
    print(f"\nbatch-1 decode against the HBM limit (copy bandwidth {bw / 1e12:.2f} TB/s)")
    hdr = ("preset", "backend", "weights GB", "read/step GB", "limit ms", "ms/step", "x limit", "x read-limit",
           "J/token", "compile s", "prefill ms")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        jt = f"{r['j_per_token']:.2f}" if r.get("j_per_token") is not None else "-"
        cs = f"{r['compile_s']:.0f}" if r.get("compile_s") is not None else "-"
        rng = f" ({r['ms_min']:.2f}-{r['ms_max']:.2f})" if r.get("ms_min") is not None else ""
        print(f"| {r['preset']} | {r['backend']} | {r['weights_b'] / 1e9:.2f} | {r['read_b'] / 1e9:.2f} | "
              f"{r['limit_ms']:.2f} | {r['ms_per_step']:.2f}{rng} | {r['ratio']:.2f} | {r['ratio_read']:.2f} | {jt} | {cs} | "
              f"{_prefill(r)} |")


def _prefill(r: dict) -> str:
    """A live row's prefill ms at its tin (``12.3 @ 8``); ``-`` for a row without one (a store's, older rows)."""
    return f"{r['prefill_ms']:.1f} @ {r['tin']}" if r.get("prefill_ms") is not None else "-"


def print_variants(rows: list[dict]) -> None:
    """Per preset and prompt length, each backend's ms/step (x limit, compile s, prefill ms) side by side,
    and its speed-up over the first backend measured for that preset and tin; printed only where one has more
    than one."""
    by: dict[tuple[str, object], list[dict]] = {}
    for r in rows:
        if r.get("kind") != "kernels":
            by.setdefault((r["preset"], r.get("tin")), []).append(r)
    by = {p: rs for p, rs in by.items() if len({r["backend"] for r in rs}) > 1}
    if not by:
        return
    print("\nvariants side by side: ms/step (x limit; compile s; prefill ms @ tin), speed-up over the first")
    print("| preset | limit ms | backend | ms/step | x limit | compile s | vs first | prefill ms |")
    print("|---|---|---|---|---|---|---|---|")
    for (p, _), rs in by.items():
        base = rs[0]["ms_per_step"]
        for r in rs:
            cs = f"{r['compile_s']:.0f}" if r.get("compile_s") is not None else "-"
            print(f"| {p} | {r['limit_ms']:.2f} | {r['backend']} | {r['ms_per_step']:.2f} | {r['ratio']:.2f} | {cs} | "
                  f"{base / r['ms_per_step']:.3f}x | {_prefill(r)} |")
        best = min(rs, key=lambda r: r["ms_per_step"])
        print(f"| {p} | | **best: {best['backend']}** | **{best['ms_per_step']:.2f}** | **{best['ratio']:.2f}** | | | |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default=",".join(PAPER_PRESETS))
    ap.add_argument("--backend", default="static")
    ap.add_argument("--variants", default=None,
                    help="comma-separated variants run on one load per preset: base (= --backend), fused, cdt, "
                         "math, ma, combined with + (fused+cdt), or full labels (static+fused)")
    ap.add_argument("--kernels", action="store_true", help="CUDA: also profile the kernels of one decode step per variant")
    ap.add_argument("--bw", type=float, default=None, help="bandwidth in TB/s (default: measure it)")
    ap.add_argument("--bw-only", action="store_true")
    ap.add_argument("--device", default="cuda:0", help="cuda:N (default cuda:0); cpu only to test this script")
    ap.add_argument("--tin", type=int, default=8)
    ap.add_argument("--tout", type=int, default=129, help="new tokens per timed generation (default 129: 128 steps)")
    ap.add_argument("--min-s", type=float, default=2.0, help="time generations for at least this long")
    ap.add_argument("--jsonl", default=None, help="append each preset's result here")
    ap.add_argument("--table", nargs="*", default=None, help="print the table of these JSONL files and exit")
    ap.add_argument("--stores", nargs="*", default=None, help="ms/step from these stores' trials (needs --bw)")
    args = ap.parse_args(argv)
    if args.table is not None:
        rows = [json.loads(line) for f in args.table for line in Path(f).read_text().splitlines() if line.strip()]
        print_table(rows)
        print_variants(rows)
        print_kernels(rows)
        return 0
    if args.stores is not None:
        if args.bw is None:
            ap.error("--stores needs --bw (TB/s, as measured on the machine the stores came from)")
        rows = from_stores(args.stores, args.bw * 1e12)
        print_table(rows)
        print_buckets(rows)
        return 0
    bw = args.bw * 1e12 if args.bw else measure_bandwidth()
    print(f"hbm copy bandwidth: {bw / 1e12:.3f} TB/s (median of 20 copies of 4 GiB, read + write)", flush=True)
    if args.bw_only:
        return 0
    rows = []
    backends = variant_labels(args.variants, args.backend) if args.variants else [args.backend]
    try:
        for p in [x for x in args.presets.split(",") if x]:
            for r in live_variants(p, backends, bw, args.tin, args.tout, args.min_s, args.device, args.kernels):
                print(json.dumps(r), flush=True)
                rows.append(r)
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(r) + "\n")
    except KeyboardInterrupt:  # the session's budget ran out: print what was measured
        print("interrupted: the table has the variants measured so far", flush=True)
    print_table(rows)
    print_variants(rows)
    print_kernels(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
