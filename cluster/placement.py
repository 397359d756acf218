"""Where a sweep's work goes, decided on the driver before any actor starts: the (node type, model) sweeps of a config, the slots of each node (the whole node, or one group of gpus_per_actor GPUs), the placement checks that refuse a config no node can run, and the round-robin spread of unfinished trials over slots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cluster.config import NodeTypeConfig, PipelineConfig
from cluster.discovery import NodeInfo, nodes_by_type
from llm_energy.errors import UserError
from llm_energy.measure.spec import ProfileSpec, sweep_id, trial_id
from llm_energy.trials.store import TrialStore


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
