"""The driver side of a cluster sweep: start pinned actors, stream their events into one store,
requeue the unfinished trials of an actor or node that dies.

Each actor's stream is drained by a thread into one bounded queue (memory stays flat: a full queue
stops the threads, and Ray's generator backpressure then pauses the actors); the main thread writes
events to the :class:`~llm_energy.trials.store.TrialStore` (samples buffered into large chunks, always
committed before the trial they belong to), the same store the single-node profiler writes, so
``fit``, ``plan`` and ``report`` work unchanged on the result.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import ray

from cluster.actors import ActorDone, start_actor, stream
from cluster.config import NodeTypeConfig, PipelineConfig
from cluster.discovery import NodeInfo, discover_nodes, nodes_by_type
from llm_energy.errors import UserError
from llm_energy.measure.events import ProgressTick
from llm_energy.measure.record import StoreWriter
from llm_energy.measure.spec import ProfileSpec, sweep_id, trial_id
from llm_energy.trials.store import TrialStore

QUEUE_BATCHES = 64
SAMPLE_FLUSH_ROWS = 250_000  # the driver's sample buffer: one Parquet file per this many rows (~17 MB)


@dataclass(frozen=True)
class Slot:
    """Where one actor runs: a node, or a group of ``num_gpus`` GPUs on a GPU node. A slot runs one
    assignment at a time, so models never share a GPU or a node-wide CPU meter while measured."""

    node: NodeInfo
    label: str  # node label, or "<node label>/g<k>" for the k-th GPU group of a node
    num_gpus: int = 0


@dataclass
class Assignment:
    """One actor's share of one (node type, model) sweep."""

    slot: Slot
    spec: ProfileSpec
    trial_keys: list[str]
    attempts: int = 0
    actor: object = None

    @property
    def label(self) -> str:
        return f"{self.slot.label}/{self.spec.model}"

    @property
    def node(self) -> NodeInfo:
        return self.slot.node

    @property
    def num_gpus(self) -> int:
        return self.slot.num_gpus


@dataclass
class SweepReport:
    trials_written: int = 0
    samples_written: int = 0
    samples_produced: int = 0  # as counted by the actors that finished their stream
    trials_produced: int = 0
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    actors: dict[str, str] = field(default_factory=dict)  # assignment label -> node id
    actor_gpus: dict[str, list[int]] = field(default_factory=dict)  # assignment label -> GPU ids Ray gave it


def specs_for(cfg: PipelineConfig) -> list[tuple[NodeTypeConfig, ProfileSpec]]:
    out = []
    for nt in cfg.node_types.values():
        for model in nt.models:
            out.append((nt, ProfileSpec(
                model=model, design=cfg.sweep.design(), backend=nt.backend, device=nt.device, node_type=nt.name,
                idle_s=cfg.sweep.idle_s, min_window_s=cfg.sweep.min_window_s, sample_period_s=cfg.sweep.sample_period_s,
                seed=cfg.sweep.seed, threads=nt.threads,
                # CUDA ordinals inside the actor: Ray makes its reserved GPUs visible as cuda:0..k-1
                gpu_indices=tuple(range(nt.gpus_per_actor)) if nt.gpus_per_actor > 1 else None,
            )))
    return out


def uses_gpus(nt: NodeTypeConfig, node: NodeInfo) -> bool:
    return nt.device == "cuda" or (nt.device == "auto" and node.gpus > 0)


def actor_slots(cfg: PipelineConfig, nt: NodeTypeConfig, node: NodeInfo) -> int:
    """Actors on one node: one per ``gpus_per_actor`` GPUs on a GPU node, else one."""
    if not uses_gpus(nt, node):
        return 1
    if node.gpus == 0:
        raise UserError(f"{cfg.source}: node_types.{nt.name}.device={nt.device!r}: node {node.label} has no GPU")
    n = int(node.gpus // nt.gpus_per_actor)
    if n == 0:
        raise UserError(f"{cfg.source}: node_types.{nt.name}.gpus_per_actor={nt.gpus_per_actor}: node {node.label} "
                        f"has {node.gpus:g} GPU(s)")
    return n


def check_placement(cfg: PipelineConfig, nodes: list[NodeInfo]) -> None:
    """Before any work: every configured type has nodes, GPU groups fit them, every model's context
    holds the sweep's longest sequence, and every model fits the memory of every node of its type
    (GPU memory of its group on GPU nodes, RAM on CPU nodes), by the same rules the profiler applies
    on the node (:func:`llm_energy.measure.inference.backends.check_sweep`)."""
    from llm_energy.measure.inference.loading import read_model, resolve_dtype
    from llm_energy.measure.inference.sizing import check_positions, sweep_memory_bytes

    typed = nodes_by_type(cfg, nodes)
    seq = max(cfg.sweep.tin) + max(cfg.sweep.tout)
    batch = max(cfg.sweep.batch)
    gib = 2**30
    for nt in cfg.node_types.values():
        sources = {}
        for m in nt.models:
            if Path(m).is_dir():
                continue  # a checkpoint dir is checked on the node, where it loads
            sources[m] = src = read_model(m)
            try:
                check_positions(src, seq)
            except UserError as e:
                raise UserError(f"{cfg.source}: node_types.{nt.name}.models: {e}") from None
        need: dict[tuple[str, bool], tuple[int, str]] = {}  # (model, on GPU) -> (bytes, dtype)
        for node in typed[nt.name]:
            actor_slots(cfg, nt, node)
            hw = node.hardware
            if hw is None:
                continue
            gpu = uses_gpus(nt, node)
            if gpu and not hw.gpus:
                raise UserError(f"{cfg.source}: node_types.{nt.name}.device={nt.device!r}: node {node.label} "
                                f"({hw.hostname}) has no GPU that NVML sees")
            have = hw.min_gpu_memory_b * nt.gpus_per_actor if gpu else hw.memory_total_b
            where = f"{nt.gpus_per_actor}x {hw.min_gpu_memory_b / gib:.1f} GiB GPU memory" if gpu else \
                f"{hw.memory_total_b / gib:.1f} GiB of memory"
            for m, src in sources.items():
                if (m, gpu) not in need:
                    dtype = resolve_dtype("auto", "cuda" if gpu else "cpu")
                    need[(m, gpu)] = sweep_memory_bytes(src, dtype, batch=batch, max_seq_len=seq,
                                                        backend=nt.backend)[0], dtype
                b, dtype = need[(m, gpu)]
                if b > have:
                    raise UserError(f"{cfg.source}: node_types.{nt.name}.models: {m!r} needs {b / gib:.1f} GiB "
                                    f"({dtype}, batch {batch} x {seq} tokens) but node {node.label} has {where}")


def node_slots(cfg: PipelineConfig, nt: NodeTypeConfig, node: NodeInfo) -> list[Slot]:
    n = actor_slots(cfg, nt, node)
    gpus = nt.gpus_per_actor if uses_gpus(nt, node) else 0
    return [Slot(node, node.label if n == 1 else f"{node.label}/g{k}", gpus) for k in range(n)]


def plan_assignments(cfg: PipelineConfig, store: TrialStore, nodes: list[NodeInfo]) -> list[Assignment]:
    """Spread each (node type, model) sweep's unfinished trials over that type's slots (round robin):
    one slot per node, or one per GPU group on GPU nodes. A slot runs its assignments in turn."""
    typed = nodes_by_type(cfg, nodes)
    done = store.done_trial_ids()
    out = []
    for nt, spec in specs_for(cfg):
        sweep = sweep_id(spec)
        todo = [t.key for t in spec.design.trials() if trial_id(sweep, t) not in done]
        slots = [sl for node in typed[nt.name] for sl in node_slots(cfg, nt, node)]
        for i, sl in enumerate(slots):
            keys = todo[i::len(slots)]
            if keys:
                out.append(Assignment(sl, spec, keys))
    return out


class StreamPump:
    """Drains actors' streaming generators on threads into one bounded queue.

    Memory stays flat: a full queue blocks the draining threads, and Ray's generator backpressure
    then pauses the actors. ``get`` returns ``(key, batch, None)`` per batch, then
    ``(key, None, None)`` at the end of a stream, or ``(key, None, error)`` if it broke."""

    def __init__(self, maxsize: int = QUEUE_BATCHES) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.running = 0

    def start(self, key, gen) -> None:
        def drain() -> None:
            try:
                for ref in gen:
                    self.q.put((key, ray.get(ref), None))
                self.q.put((key, None, None))
            except Exception as e:  # noqa: BLE001 - actor/node death surfaces here
                self.q.put((key, None, e))

        self.running += 1
        threading.Thread(target=drain, daemon=True).start()

    def get(self):
        item = self.q.get()
        if item[1] is None:
            self.running -= 1
        return item


def run_cluster_sweep(cfg: PipelineConfig, store: TrialStore, on_tick: Callable[[ProgressTick], None] | None = None,
                      max_attempts: int = 3, nodes: list[NodeInfo] | None = None) -> SweepReport:
    """Profile every (node type, model) of ``cfg`` on the cluster into ``store``.

    Each slot (a node, or a GPU group) runs its assignments one after another in a fresh pinned
    actor, killed when its stream ends so its GPUs are free for the next. An actor or node that dies
    is detected when its stream breaks; its unfinished trials (the store says which) go at once to
    the same slot, if its node is alive, or to the least-loaded slot of the same type.
    ``nodes`` (from ``discover_nodes(probe=True)``) saves a second probe when the caller already
    discovered them; placement is checked either way before any actor starts."""
    report = SweepReport()
    if nodes is None:
        nodes = discover_nodes(probe=True)
    check_placement(cfg, nodes)
    queues: dict[str, deque[Assignment]] = {}
    slots: dict[str, Slot] = {}
    for a in plan_assignments(cfg, store, nodes):
        queues.setdefault(a.slot.label, deque()).append(a)
        slots[a.slot.label] = a.slot
    busy: dict[str, Assignment] = {}
    pump = StreamPump()
    writer = StoreWriter(store, flush_rows=SAMPLE_FLUSH_ROWS)
    ticks = (lambda ev: on_tick(ev) if isinstance(ev, ProgressTick) else None) if on_tick else None

    limit = cfg.sweep.max_concurrent or len(slots) or 1

    def start_next(slot_label: str) -> None:
        if slot_label in busy or not queues.get(slot_label) or len(busy) >= limit:
            return
        a = queues[slot_label].popleft()
        a.attempts += 1
        # a GPU deployment reserves its GPUs, so Ray makes them visible (CUDA_VISIBLE_DEVICES) to the actor
        a.actor = start_actor(a.node.node_id, a.slot.label, num_gpus=a.num_gpus)
        report.actors[a.label] = a.node.node_id
        busy[slot_label] = a
        pump.start(slot_label, stream(a.actor, a.spec, a.trial_keys, sorted(store.done_trial_ids())))

    for label in queues:
        start_next(label)
    while pump.running:
        label, batch, err = pump.get()
        a = busy[label]
        if batch is not None:
            for ev in batch:
                if isinstance(ev, ActorDone):
                    report.samples_produced += ev.samples
                    report.trials_produced += ev.trials
            writer.add(batch, ticks)
            continue
        writer.flush()  # the stream ended: everything it sent is in the store before it is judged
        del busy[label]
        if err is None and a.num_gpus:
            try:
                report.actor_gpus[a.label] = ray.get(a.actor.gpu_ids.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - gone already: the GPUs it had are unknown
                pass
        ray.kill(a.actor)  # free its resources (GPUs) for the slot's next assignment
        if err is not None:
            if on_tick:
                on_tick(ProgressTick(node=a.slot.label, node_type=a.spec.node_type, state="failed", done=0, total=0,
                                     model=a.spec.model, backend=a.spec.backend, message=type(err).__name__))
            again = _requeue(store, a, report, slots, queues, busy, max_attempts)
            if again is not None:
                start_next(again)
        start_next(label)
        for other in queues:  # under max_concurrent, a freed place goes to the next slot with work
            start_next(other)
    writer.flush()
    report.samples_written = writer.summary.samples_written
    report.trials_written = writer.summary.trials_written
    return report


def _requeue(store: TrialStore, a: Assignment, report: SweepReport, slots: dict[str, Slot],
             queues: dict[str, deque[Assignment]], busy: dict[str, Assignment], max_attempts: int) -> str | None:
    """Queue a failed assignment's unfinished trials on an alive slot of its type; returns that slot."""
    sweep = sweep_id(a.spec)
    by_key = {t.key: t for t in a.spec.design.trials()}
    done = store.done_trial_ids()
    left = [k for k in a.trial_keys if trial_id(sweep, by_key[k]) not in done]
    if not left:
        return None
    if a.attempts >= max_attempts:
        report.failed.append(f"{a.label}: {len(left)} trials unfinished after {a.attempts} attempts")
        return None
    alive = {n.node_id for n in discover_nodes()}
    same = [sl for sl in slots.values() if sl.node.node_type == a.spec.node_type and sl.node.node_id in alive
            and sl.num_gpus == a.num_gpus]
    if not same:
        report.failed.append(f"{a.label}: {len(left)} trials unfinished (no alive node of type {a.spec.node_type})")
        return None
    # the same slot if its node lives (a restarted actor), else the one with the least work queued
    target = next((sl for sl in same if sl.label == a.slot.label), None) or min(
        same, key=lambda sl: (sl.label in busy) + len(queues.get(sl.label, ())))
    report.requeued.append(f"{a.label}: {len(left)} trials -> {target.label}")
    queues.setdefault(target.label, deque()).append(Assignment(target, a.spec, left, attempts=a.attempts))
    return target.label
