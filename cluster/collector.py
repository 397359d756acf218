"""The driver side of a cluster sweep: start pinned actors, stream their events into one store,
requeue the unfinished trials of an actor or node that dies.

Each actor's stream is drained by a thread into one bounded queue (memory stays flat: a full queue
stops the threads, and Ray's generator backpressure then pauses the actors); the main thread writes
events to the :class:`~llm_energy.store.TrialStore` in order, exactly as the single-node profiler
does, so ``fit``, ``plan`` and ``report`` work unchanged on the result.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Callable

import ray

from cluster.actors import ActorDone, start_actor, stream
from cluster.config import NodeTypeConfig, PipelineConfig
from cluster.discovery import NodeInfo, discover_nodes, nodes_by_type
from llm_energy.profiler import Profiler, ProfileSpec, ProgressTick, record_events
from llm_energy.store import TrialStore

QUEUE_BATCHES = 64


@dataclass
class Assignment:
    """One actor's share of one (node type, model) sweep."""

    node: NodeInfo
    spec: ProfileSpec
    trial_keys: list[str]
    label: str
    actor: object = None
    attempts: int = 0


@dataclass
class SweepReport:
    trials_written: int = 0
    samples_written: int = 0
    samples_produced: int = 0  # as counted by the actors that finished their stream
    trials_produced: int = 0
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    actors: dict[str, str] = field(default_factory=dict)  # label -> node id


def specs_for(cfg: PipelineConfig) -> list[tuple[NodeTypeConfig, ProfileSpec]]:
    out = []
    for nt in cfg.node_types.values():
        for model in nt.models:
            out.append((nt, ProfileSpec(
                model=model, design=cfg.sweep.design(), backend=nt.backend, device=nt.device, node_type=nt.name,
                idle_s=cfg.sweep.idle_s, min_window_s=cfg.sweep.min_window_s, sample_period_s=cfg.sweep.sample_period_s,
                seed=cfg.sweep.seed, threads=nt.threads,
            )))
    return out


def plan_assignments(cfg: PipelineConfig, store: TrialStore, nodes: list[NodeInfo]) -> list[Assignment]:
    """Spread each (node type, model) sweep's unfinished trials over that type's nodes (round robin)."""
    typed = nodes_by_type(cfg, nodes)
    done = store.done_trial_ids()
    out = []
    for nt, spec in specs_for(cfg):
        prof = Profiler(spec)  # only for ids: the model is not loaded
        todo = [t.key for t in spec.design.trials() if prof.trial_id(t) not in done]
        group = typed[nt.name]
        for i, node in enumerate(group):
            keys = todo[i::len(group)]
            if keys:
                out.append(Assignment(node, spec, keys, f"{node.label}/{spec.model}"))
    return out


def run_cluster_sweep(cfg: PipelineConfig, store: TrialStore, on_tick: Callable[[ProgressTick], None] | None = None,
                      max_attempts: int = 3) -> SweepReport:
    report = SweepReport()
    pending = plan_assignments(cfg, store, discover_nodes())
    q: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)

    def drain(a: Assignment, gen) -> None:
        try:
            for ref in gen:
                q.put((a, ray.get(ref), None))
            q.put((a, None, None))
        except Exception as e:  # noqa: BLE001 - actor/node death surfaces here
            q.put((a, None, e))

    while pending:
        running = 0
        for a in pending:
            a.attempts += 1
            # a GPU deployment reserves its GPU, so Ray makes it visible (CUDA_VISIBLE_DEVICES) to the actor
            a.actor = start_actor(a.node.node_id, a.label, num_gpus=1 if a.spec.device.startswith("cuda") else 0)
            report.actors[a.label] = a.node.node_id
            gen = stream(a.actor, a.spec, a.trial_keys, sorted(store.done_trial_ids()))
            threading.Thread(target=drain, args=(a, gen), daemon=True).start()
            running += 1
        failed: list[Assignment] = []
        while running:
            a, batch, err = q.get()
            if batch is None:
                running -= 1
                if err is not None:
                    failed.append(a)
                    if on_tick:
                        on_tick(ProgressTick(node=a.label, node_type=a.spec.node_type, state="failed", done=0, total=0,
                                             message=type(err).__name__))
                continue
            done = [ev for ev in batch if isinstance(ev, ActorDone)]
            rec = record_events((ev for ev in batch if not isinstance(ev, ActorDone)), store,
                                on_event=lambda ev: on_tick(ev) if on_tick and isinstance(ev, ProgressTick) else None)
            report.samples_written += rec.samples_written
            report.trials_written += rec.trials_written
            for ev in done:
                report.samples_produced += ev.samples
                report.trials_produced += ev.trials
        pending = _requeue(cfg, store, failed, report, max_attempts)
    return report


def _requeue(cfg: PipelineConfig, store: TrialStore, failed: list[Assignment], report: SweepReport,
             max_attempts: int) -> list[Assignment]:
    """Unfinished trials of failed actors go to alive nodes of the same type (the store says what is done)."""
    if not failed:
        return []
    alive = discover_nodes()
    done = store.done_trial_ids()
    out = []
    for a in failed:
        prof = Profiler(a.spec)
        by_key = {t.key: t for t in a.spec.design.trials()}
        left = [k for k in a.trial_keys if prof.trial_id(by_key[k]) not in done]
        if not left:
            continue
        same = [n for n in alive if n.node_type == a.spec.node_type]
        if not same or a.attempts >= max_attempts:
            report.failed.append(f"{a.label}: {len(left)} trials unfinished (no alive node of type {a.spec.node_type})")
            continue
        target = next((n for n in same if n.node_id == a.node.node_id), same[0])
        report.requeued.append(f"{a.label}: {len(left)} trials -> {target.label}")
        out.append(Assignment(target, a.spec, left, f"{target.label}/{a.spec.model}", attempts=a.attempts))
    return out
