"""The profiler actor: one per node (or per GPU group), pinned with hard node affinity.

``run`` is a streaming generator: it yields the core profiler's events in batches as they are
produced, so samples and trials flow to the driver while the sweep runs. Backpressure: Ray pauses
the generator when the driver has not consumed ``BACKPRESSURE_ITEMS`` items yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from llm_energy.measure.design import PlannedTrial
from llm_energy.measure.profiler import Profiler
from llm_energy.measure.spec import ProfileSpec
from llm_energy.measure.events import ProgressTick, SamplesChunk, TrialDone

BACKPRESSURE_ITEMS = 16
SAMPLE_BATCH_ROWS = 2000


@dataclass
class ActorDone:
    """The last item of an actor's stream: what it produced (the driver checks it all arrived)."""

    label: str
    samples: int
    trials: int


@ray.remote(num_cpus=0, max_restarts=0)
class ProfilerActor:
    def __init__(self, label: str) -> None:
        self.label = label  # the slot: its node's label (node type/id), "/g<k>" for a GPU group

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def gpu_ids(self) -> list[int]:
        """The node's GPUs Ray reserved for this actor (it sees them as cuda:0..k-1)."""
        return [int(g) for g in ray.get_gpu_ids()]

    def run(self, spec_dict: dict, trial_keys: list[str], skip: list[str]):
        """Profile the given trials (keys "cell/rN") of the spec's design; yields lists of events."""
        spec = ProfileSpec.from_dict(spec_dict)
        by_key = {t.key: t for t in spec.design.trials()}
        trials: list[PlannedTrial] = [by_key[k] for k in trial_keys]
        prof = Profiler(spec, node=self.label)
        batch: list = []
        rows = produced = n_trials = 0
        for ev in prof.events(trials=trials, skip=set(skip)):
            batch.append(ev)
            if isinstance(ev, SamplesChunk):
                rows += ev.frame.height
                produced += ev.frame.height
            elif isinstance(ev, TrialDone):
                n_trials += 1
            # flush at trial boundaries, progress ticks, or when samples pile up
            if isinstance(ev, (TrialDone, ProgressTick)) or rows >= SAMPLE_BATCH_ROWS:
                yield batch
                batch, rows = [], 0
        batch.append(ActorDone(self.label, produced, n_trials))
        yield batch


def start_actor(node_id: str, label: str, *, num_gpus: float = 0):
    strategy = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    return ProfilerActor.options(scheduling_strategy=strategy, num_gpus=num_gpus).remote(label)


def stream(actor, spec: ProfileSpec, trial_keys: list[str], skip: list[str]):
    return actor.run.options(num_returns="streaming", _generator_backpressure_num_objects=BACKPRESSURE_ITEMS).remote(
        spec.to_dict(), trial_keys, skip)
