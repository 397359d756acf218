"""Samples from pinned actors to the driver's store: throughput and the driver's peak memory.

    .venv/bin/python -m benchmarks.bench_stream [--samples 10000000] [--small 1000000]

A real local Ray cluster (a head and one worker raylet, no dashboard); one source actor pinned to
each raylet streams NVML-shaped sample frames (2,000 rows a batch, as ``ProfilerActor`` sends) through
the same path a cluster sweep uses: Ray streaming generators with backpressure, the driver's
``StreamPump`` (bounded queue) and ``StoreWriter`` (buffered Parquet chunks) into a ``TrialStore``.
Every sample is counted back from the store. Goals: at least 200,000 samples/s, and peak driver
memory flat in the sample count: the driver's resident memory after each buffer flush, median of the
last quarter of the 10M run against the first quarter, within 10%; the peak is printed beside it.
Baseline in the same run: the unbuffered writer (one Parquet file per streamed batch) on the small run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import numpy as np
import polars as pl
import psutil
import ray

from cluster.actors import BACKPRESSURE_ITEMS, SAMPLE_BATCH_ROWS
from cluster.collector import SAMPLE_FLUSH_ROWS, StreamPump
from cluster.local import LocalNode, start_local_cluster
from llm_energy.measure.record import StoreWriter
from llm_energy.measure.events import SamplesChunk
from llm_energy.trials.schema import SAMPLE_SCHEMA
from llm_energy.trials.store import TrialStore


@ray.remote(num_cpus=0)
class SampleSource:
    """Streams ``n`` samples shaped like a GPU node's: power every 20 ms and counter readings, 2 GPUs."""

    def run(self, n: int, rows: int, seed: int):
        rng = np.random.default_rng(seed)
        node = f"node-{seed}"
        sent = 0
        t0 = time.time()
        while sent < n:
            k = min(rows, n - sent)
            i = np.arange(sent, sent + k)
            power = i % 2 == 0
            watts = np.where(power, rng.uniform(140, 350, k), np.nan)
            frame = pl.DataFrame({
                "t_wall": t0 + i * 0.01, "t_mono": i * 0.01, "node": [node] * k, "session": ["bench"] * k,
                "device": np.where(i % 4 < 2, "gpu0", "gpu1"), "source": np.where(power, "nvml-power", "nvml-counter"),
                "watts": watts, "joules": np.where(power, np.nan, 1e5 + i * 2.5),
            }, schema=SAMPLE_SCHEMA).with_columns(pl.col("watts").fill_nan(None), pl.col("joules").fill_nan(None))
            sent += k
            yield [SamplesChunk(frame)]


class TracedWriter(StoreWriter):
    """The StoreWriter, recording the driver's resident memory (MB) after every flush."""

    def flush(self) -> None:
        super().flush()
        self.rss_mb = getattr(self, "rss_mb", [])
        self.rss_mb.append(psutil.Process().memory_info().rss / 2**20)


class PeakRss:
    """Samples this process's resident memory every 20 ms; ``peak`` in bytes."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> "PeakRss":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def stream_once(nodes: list[str], n: int, flush_rows: int) -> dict[str, float]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    with tempfile.TemporaryDirectory(prefix="bench-stream-") as d:
        store = TrialStore(os.path.join(d, "store"))
        actors = [SampleSource.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False)).remote()
                  for nid in nodes]
        ray.get([a.__ray_ready__.remote() for a in actors])
        base = psutil.Process().memory_info().rss
        pump, writer = StreamPump(), TracedWriter(store, flush_rows=flush_rows)
        with PeakRss() as mem:
            t0 = time.perf_counter()
            for i, a in enumerate(actors):
                share = n // len(actors) + (1 if i < n % len(actors) else 0)
                pump.start(i, a.run.options(num_returns="streaming",
                                            _generator_backpressure_num_objects=BACKPRESSURE_ITEMS).remote(
                    share, SAMPLE_BATCH_ROWS, i))
            while pump.running:
                _, batch, err = pump.get()
                if err is not None:
                    raise err
                if batch is not None:
                    writer.add(batch)
            writer.flush()
            wall = time.perf_counter() - t0
        stored = store.samples().select(pl.len()).collect().item()
        files = len(list((store.root / "samples").glob("part-*.parquet")))
        for a in actors:
            ray.kill(a)
    assert stored == writer.summary.samples_written == n, (stored, writer.summary.samples_written, n)
    q = max(1, len(writer.rss_mb) // 4)
    first, last = float(np.median(writer.rss_mb[:q])), float(np.median(writer.rss_mb[-q:]))
    return {"n": n, "wall_s": wall, "rate": n / wall, "peak_growth_mb": (mem.peak - base) / 2**20, "files": files,
            "rss_first_mb": first, "rss_last_mb": last}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=10_000_000)
    ap.add_argument("--small", type=int, default=1_000_000)
    args = ap.parse_args()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    cluster = start_local_cluster([LocalNode("bench", 1), LocalNode("bench", 1)], object_store_mb=256)
    try:
        ray.init(address=cluster.address, logging_level="ERROR")
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        stream_once(nodes, 200_000, SAMPLE_FLUSH_ROWS)  # warm-up: workers, imports
        runs = [("buffered (StoreWriter)", stream_once(nodes, args.small, SAMPLE_FLUSH_ROWS)),
                ("buffered (StoreWriter)", stream_once(nodes, args.samples, SAMPLE_FLUSH_ROWS)),
                ("baseline: a file per batch", stream_once(nodes, args.small, 1))]
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"{'writer':28s} {'samples':>11s} {'wall s':>8s} {'samples/s':>11s} {'peak RSS +MB':>13s} "
          f"{'RSS MB 1st/last quarter':>24s} {'files':>6s}")
    for name, r in runs:
        print(f"{name:28s} {r['n']:>11,d} {r['wall_s']:>8.2f} {r['rate']:>11,.0f} {r['peak_growth_mb']:>13.1f} "
              f"{r['rss_first_mb']:>11.0f} / {r['rss_last_mb']:<10.0f} {r['files']:>6d}")
    small, big, base = runs[0][1], runs[1][1], runs[2][1]
    drift = big["rss_last_mb"] / big["rss_first_mb"]
    print(f"\n{big['n']:,} samples: {big['rate']:,.0f} samples/s (goal >= 200,000): "
          f"{'MET' if big['rate'] >= 200_000 else 'NOT MET'}")
    print(f"driver memory over the {big['n']:,}-sample run: resident {big['rss_first_mb']:.0f} MB in its first quarter, "
          f"{big['rss_last_mb']:.0f} MB in its last ({drift:.3f}x; flat goal within 1.10x): "
          f"{'MET' if drift <= 1.10 else 'NOT MET'}; peak +{big['peak_growth_mb']:.0f} MB "
          f"(+{small['peak_growth_mb']:.0f} MB for {small['n']:,})")
    print(f"buffered vs a file per batch ({small['n']:,} samples): {small['rate'] / base['rate']:.1f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
