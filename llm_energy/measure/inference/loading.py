"""Building a model on its device(s): a preset with random weights or a local checkpoint dir, on one device or with its layers spread over several GPUs; the dtype and device it resolves to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_energy.errors import UserError, bad_value
from llm_energy.measure.inference.sizing import check_fits

DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass(slots=True)
class LoadedModel:
    """A model built on its device(s), with what the profiler records about it."""

    name: str  # preset name or checkpoint dir
    model: Any  # transformers PreTrainedModel
    config: Any
    device: str  # "cpu" or "cuda:N" (the input device when sharded)
    dtype: str  # "bfloat16" | "float32" | "float16"
    n_params: int
    vocab_size: int
    special_ids: tuple[int, ...] = ()
    gpu_indices: tuple[int, ...] = ()  # GPUs holding the weights (empty on CPU)


# ---- loading ------------------------------------------------------------------------------------
def _torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def resolve_dtype(dtype: str, device: str) -> str:
    if dtype not in DTYPES:
        raise bad_value("--dtype", dtype, f"choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    return dtype


@dataclass(slots=True)
class ModelSource:
    """A preset or a checkpoint dir, read (config and parameter count) but not built."""

    name: str
    config: Any  # transformers config
    hf_config: dict[str, Any]
    n_params: int
    checkpoint: bool
    has_weights: bool

    @property
    def max_positions(self) -> int | None:
        v = self.hf_config.get("max_position_embeddings")
        return int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def read_model(name_or_dir: str) -> ModelSource:
    """The config and exact parameter count of a preset or a local checkpoint dir (built on the meta
    device: no memory). A missing, unreadable or unknown config is a one-line UserError naming it."""
    path = Path(name_or_dir)
    if not path.is_dir():
        from llm_energy.measure.inference.presets import get_preset

        preset = get_preset(name_or_dir)
        return ModelSource(name_or_dir, preset.config(), preset.hf_config, preset.n_params, False, False)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise UserError(f"{path}: a checkpoint directory needs a config.json")
    # the config is the user's file parsed and validated by transformers, which raises many kinds of
    # errors for a bad one (OSError for bad JSON, ValueError for an unknown model_type, huggingface_hub's
    # validation errors for inconsistent sizes): each is reported as one line naming the file
    try:
        cfg = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)  # never run code from a checkout
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{cfg_path}: not a usable model config ({_first_line(e)})") from None
    try:
        with torch.device("meta"):
            n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{cfg_path}: model_type={getattr(cfg, 'model_type', None)!r}: cannot build a causal LM "
                        f"from it ({_first_line(e)})") from None
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    return ModelSource(name_or_dir, cfg, cfg.to_dict(), n_params, True, has_weights)


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message (of its cause's where the message only introduces it)."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    if line.endswith(":") and e.__cause__ is not None:
        return _first_line(e.__cause__)
    return line


def load_model(name_or_dir: str, device: str = "auto", dtype: str = "auto", *,
               gpu_indices: tuple[int, ...] | None = None, seed: int = 0, batch: int = 1, max_seq_len: int = 4096,
               kv_cache: bool = True, kv_groups: bool = False) -> LoadedModel:
    """Build a preset (random weights, directly on the device) or load a local checkpoint dir.

    With several ``gpu_indices`` the decoder layers are spread over those GPUs (embedding on the
    first, final norm and LM head on the last), each built directly on its GPU. The memory check
    assumes ``batch`` sequences of ``max_seq_len`` tokens (the profiler passes its sweep's largest;
    ``kv_groups``: a cache of falcon-40b's KV groups, ``sizing.kv_groups_cached``).
    """
    import torch
    from transformers import AutoModelForCausalLM

    if device == "auto":
        device = f"cuda:{gpu_indices[0] if gpu_indices else 0}" if torch.cuda.is_available() else "cpu"
    if device == "cuda":  # not "cuda:N": without this it built on the CPU (no ordinal, so no GPU in the placement)
        device = f"cuda:{gpu_indices[0] if gpu_indices else 0}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise bad_value("--device", device, "CUDA is not available on this node")
    dt = resolve_dtype(dtype, device)
    path = Path(name_or_dir)
    src = read_model(name_or_dir)
    cfg, hf_cfg, n_params, checkpoint, has_weights = src.config, src.hf_config, src.n_params, src.checkpoint, src.has_weights
    gpus = tuple(gpu_indices) if gpu_indices else ((int(device.split(":")[1]),) if device.startswith("cuda:") else ())
    devices = [f"cuda:{i}" for i in gpus] if gpus else ["cpu"]
    check_fits(name_or_dir, n_params, hf_cfg, dt, devices, batch=batch, max_seq_len=max_seq_len, kv_cache=kv_cache,
               grouped=kv_groups)
    torch.manual_seed(seed)
    tdt = _torch_dtype(dt)
    if checkpoint and has_weights:
        kw: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False, "dtype": tdt,
                              "attn_implementation": "sdpa"}
        if len(gpus) > 1:
            kw["device_map"] = layer_device_map(cfg.num_hidden_layers, devices)
        else:
            kw["device_map"] = devices[0]
        model = AutoModelForCausalLM.from_pretrained(path, **kw)
    elif len(gpus) > 1:
        model = _build_sharded(cfg, tdt, devices)
    else:
        with torch.device(devices[0]):
            model = AutoModelForCausalLM.from_config(cfg, dtype=tdt, attn_implementation="sdpa")
    model.eval()
    special = tuple(sorted({int(i) for i in _ids(cfg, "bos_token_id", "eos_token_id", "pad_token_id")}))
    return LoadedModel(
        name=name_or_dir, model=model, config=cfg, device=devices[0], dtype=dt, n_params=n_params,
        vocab_size=int(cfg.vocab_size), special_ids=special, gpu_indices=gpus,
    )


def _ids(cfg: Any, *names: str) -> list[int]:
    out: list[int] = []
    for n in names:
        v = getattr(cfg, n, None)
        if isinstance(v, int):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(int(x) for x in v)
    return out


def layer_device_map(n_layers: int, devices: list[str]) -> dict[str, str]:
    """Balanced placement of decoder layers over devices (HF ``device_map`` keys, llama-style names).

    Layers are split into contiguous, near-equal runs; the embedding goes with the first run and the
    final norm and LM head with the last (which holds one layer fewer when the split is uneven, since
    the LM head is large).
    """
    k = len(devices)
    if k < 1 or n_layers < k:
        raise ValueError(f"cannot place {n_layers} layers on {k} devices")
    base, extra = divmod(n_layers, k)
    sizes = [base + (1 if i < extra else 0) for i in range(k)]
    out: dict[str, str] = {"model.embed_tokens": devices[0], "model.rotary_emb": devices[0]}
    layer = 0
    for dev, n in zip(devices, sizes):
        for _ in range(n):
            out[f"model.layers.{layer}"] = dev
            layer += 1
    out["model.norm"] = devices[-1]
    out["lm_head"] = devices[-1]
    return out


def _build_sharded(cfg: Any, tdt: Any, devices: list[str]):
    """Build a decoder model with its layers spread over several GPUs, each part directly on its GPU."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=tdt, attn_implementation="sdpa")
    placement = layer_device_map(cfg.num_hidden_layers, devices)
    for prefix, dev in placement.items():
        mod = model.get_submodule(prefix)
        mod.to_empty(device=dev, recurse=True)
        with torch.no_grad():
            for p in mod.parameters(recurse=True):
                if p.dim() >= 2:
                    nn.init.normal_(p, std=getattr(cfg, "initializer_range", 0.02))
                else:
                    nn.init.ones_(p)
    rot = model.get_submodule("model.rotary_emb")
    with torch.device(placement["model.rotary_emb"]):  # its inv_freq buffer is computed, not a parameter
        model.model.rotary_emb = type(rot)(config=cfg)
    model.hf_device_map = placement
    _add_device_hooks(model, placement)
    return model


def _add_device_hooks(model: Any, placement: dict[str, str]) -> None:
    """Move each layer's tensor inputs to its device (what accelerate's hooks do, minimal)."""
    import torch

    def to_dev(x, dev):
        if isinstance(x, torch.Tensor):
            return x.to(dev, non_blocking=True)
        if isinstance(x, tuple):
            return tuple(to_dev(y, dev) for y in x)
        return x

    for prefix, dev in placement.items():
        if not prefix.startswith("model.layers.") and prefix not in ("model.norm", "lm_head"):
            continue
        mod = model.get_submodule(prefix)

        def pre_hook(_m, args, kwargs, dev=dev):
            return tuple(to_dev(a, dev) for a in args), {k: to_dev(v, dev) for k, v in kwargs.items()}

        mod.register_forward_pre_hook(pre_hook, with_kwargs=True)


def cuda_ordinals(device: str, gpu_indices: tuple[int, ...] | None) -> tuple[int, ...]:
    """The CUDA ordinals a deployment on ``device`` uses: its ``gpu_indices``, else the device's own;
    none on the CPU."""
    if not device.startswith("cuda"):
        return ()
    return tuple(gpu_indices) if gpu_indices else (int(device.split(":")[1]),)


def resolve_device(device: str, gpu_indices: tuple[int, ...] | None) -> str:
    if device == "auto":
        try:
            import torch

            has_cuda = torch.cuda.is_available()
        except Exception:  # noqa: BLE001
            has_cuda = False
        if has_cuda:
            return f"cuda:{gpu_indices[0] if gpu_indices else 0}"
        return "cpu"
    if device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        return "cuda:0" if device == "cuda" else device
    raise bad_value("--device", device, "expected auto, cpu, cuda or cuda:N")
