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
from typing import Callable

import ray

from cluster.actors import ActorDone, start_actor, stream
from cluster.config import PipelineConfig
from cluster.discovery import NodeInfo, discover_nodes
from llm_energy.measure.events import ProgressTick
from llm_energy.measure.record import StoreWriter
from llm_energy.measure.spec import sweep_id, trial_id
from llm_energy.trials.store import TrialStore
from cluster.placement import Assignment, Slot, check_placement, plan_assignments, specs_for

QUEUE_BATCHES = 64
SAMPLE_FLUSH_ROWS = 250_000  # the driver's sample buffer: one Parquet file per this many rows (~17 MB)


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
    planned = plan_assignments(cfg, store, nodes)
    for a in planned:
        queues.setdefault(a.slot.label, deque()).append(a)
        slots[a.slot.label] = a.slot
    if on_tick:
        for t in _stored_sweep_ticks(cfg, store, planned):
            on_tick(t)
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


def _stored_sweep_ticks(cfg: PipelineConfig, store: TrialStore, planned: list[Assignment]) -> list[ProgressTick]:
    """A "done" row for each (node type, model) sweep a resumed run has nothing left of (its trials all
    in the store), so the live view and ``watch`` show it rather than an empty table."""
    busy = {(a.spec.node_type, a.spec.model, a.spec.backend) for a in planned}
    done, out = store.done_trial_ids(), []
    for nt, spec in specs_for(cfg):
        if (spec.node_type, spec.model, spec.backend) in busy:
            continue
        trials = spec.design.trials()
        sweep = sweep_id(spec)
        n = sum(trial_id(sweep, t) in done for t in trials)
        cells = len({t.cell.cell_id for t in trials})
        out.append(ProgressTick(node=nt.name, node_type=spec.node_type, state="done", done=n, total=len(trials),
                                cells_done=cells, cells_total=cells, model=spec.model, backend=spec.backend, eta_s=0.0,
                                message="already in the store"))
    return out


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
    # Ray marks a lost node dead only after its health checks time out, so a node whose actor just
    # failed may still be listed alive: the failure is the better evidence. Requeue to another node
    # of the type (the least loaded) whenever one exists; to the failed node only when it is the last.
    elsewhere = [sl for sl in same if sl.node.node_id != a.node.node_id]
    target = min(elsewhere or same, key=lambda sl: (sl.label in busy) + len(queues.get(sl.label, ())))
    report.requeued.append(f"{a.label}: {len(left)} trials -> {target.label}")
    queues.setdefault(target.label, deque()).append(Assignment(target, a.spec, left, attempts=a.attempts))
    return target.label
