"""The eager backends (``cache``, ``no-cache``) run SDPA without its cuDNN kernels (inference/attention.py):
cuDNN caches one graph per key length for the process, so on an H200 an eager decode step built a graph every
step (40-87 ms a step of llama-2-7b, against a 20 ms prefill forward) unless an earlier generation had built it.
On the CPU the flag is read where SDPA runs (a TorchFunctionMode), the tokens are those of torch's default
order, every trial of these backends records ``eager_sdpa`` in its versions, the static backend keeps torch's
default (and its versions), and a sweep stored before the change resumes with it."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from llm_energy.cli import main
from llm_energy.measure import budget as tb
from llm_energy.measure.inference import backends
from llm_energy.measure.inference.attention import EAGER_SDPA
from llm_energy.measure.inference.loading import load_model
from llm_energy.trials.store import open_store

CPU = ["--model", "tiny-llama", "--tin", "8", "--repeats", "1", "--warmups", "0", "--device", "cpu", "--threads", "1",
       "--idle-s", "0.1", "--min-window-s", "0.05", "--no-live"]


class SdpaFlags(TorchFunctionMode):
    """Per SDPA call, which of its backends torch may use there (cudnn, flash, efficient, math)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[bool, bool, bool, bool]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            b = torch.backends.cuda
            self.calls.append((b.cudnn_sdp_enabled(), b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(),
                               b.math_sdp_enabled()))
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def loaded():
    torch.manual_seed(0)
    return load_model("tiny-llama", "cpu", "float32")


def old_code(monkeypatch):
    """The eager backends as they were: torch's default SDPA order (cuDNN first where it can run), no record."""
    monkeypatch.setattr(backends, "eager_attention", contextlib.nullcontext)
    monkeypatch.setattr(backends.EagerBackend, "eager_sdpa", None)


@pytest.mark.parametrize("name", ["cache", "no-cache"])
def test_eager_forwards_run_sdpa_without_cudnn_and_the_tokens_are_unchanged(loaded, name, monkeypatch):
    ids = backends.make_backend("cache", loaded).make_prompt(2, 9, seed=5)
    b = backends.make_backend(name, loaded)
    assert b.eager_sdpa == EAGER_SDPA == "flash,efficient,math"
    assert torch.backends.cuda.cudnn_sdp_enabled()  # torch's default outside the backend
    with SdpaFlags() as mode:
        r = b.generate(ids, 5)
    assert r.tout_actual == 5 and len(mode.calls) == 5 * loaded.config.num_hidden_layers  # every step's layers
    assert set(mode.calls) == {(False, True, True, True)}  # the old code: (True, True, True, True)
    assert torch.backends.cuda.cudnn_sdp_enabled()  # restored: a static backend sharing the model keeps it
    fixed = b.last_tokens[:, -1].tolist()
    old_code(monkeypatch)
    ref = backends.make_backend(name, loaded)
    with SdpaFlags() as mode:
        ref.generate(ids, 5)
    assert set(mode.calls) == {(True, True, True, True)}  # torch's default: the control
    assert ref.last_tokens[:, -1].tolist() == fixed  # the same greedy tokens


def test_cache_and_no_cache_tokens_agree_and_the_static_backend_keeps_torchs_default(loaded):
    ids = backends.make_backend("cache", loaded).make_prompt(1, 13, seed=2)
    toks = {}
    for name in ("cache", "no-cache"):
        b = backends.make_backend(name, loaded)
        b.generate(ids, 6)
        toks[name] = b.last_tokens[:, -1].tolist()
    s = backends.make_backend("static", loaded)
    assert s.eager_sdpa is None
    s._decode, s._prefill = s._decode_step, s._prefill_step  # its StaticCache steps uncompiled (as eager_step's)
    with SdpaFlags() as mode:
        s.generate(ids, 6)
    assert mode.calls and {c[0] for c in mode.calls} == {True}  # cuDNN left allowed: fixed shapes per bucket
    assert s.last_tokens[:, -1].tolist() == toks["cache"] == toks["no-cache"]


def versions(out) -> dict[str, dict]:
    t = open_store(out).trials()
    return {tid.split("/", 1)[1]: json.loads(v) for tid, v in zip(t["trial_id"], t["versions"])}


@pytest.mark.parametrize("name", ["cache", "no-cache"])
def test_stored_trials_record_the_kernels_and_a_sweep_from_before_resumes(tmp_path, monkeypatch, capsys, name):
    """The first run is the old code: it measures i8-o2 and defers i8-o3 (predicted past the budget), exiting as
    interrupted; the rerun with the fix resumes the same sweep and records ``eager_sdpa`` with i8-o3 only."""
    out = tmp_path / "s"
    with monkeypatch.context() as m:
        old_code(m)
        m.setattr(tb.TrialPredictor, "predict", lambda self, b, tin, tout, compiles=False: 1e4 if tout == 3 else None)
        assert main(["profile", *CPU, "--backend", name, "--tout", "2,3", "--out", str(out),
                     "--time-budget-s", "600"]) == 130
    assert list(versions(out)) == ["i8-o2-b1/r0"] and "eager_sdpa" not in versions(out)["i8-o2-b1/r0"]
    sid = list(open_store(out).sweeps())
    capsys.readouterr()
    assert main(["profile", *CPU, "--backend", name, "--tout", "2,3", "--out", str(out)]) == 0
    assert "resuming" in capsys.readouterr().out
    v = versions(out)
    assert sorted(v) == ["i8-o2-b1/r0", "i8-o3-b1/r0"] and list(open_store(out).sweeps()) == sid
    assert "eager_sdpa" not in v["i8-o2-b1/r0"] and v["i8-o3-b1/r0"]["eager_sdpa"] == "flash,efficient,math"
    assert ("kv_cache_keyword" in v["i8-o3-b1/r0"]) == (name == "cache") and "static_warmup" not in v["i8-o3-b1/r0"]
    runs = open_store(out).sweeps()[sid[0]].runs
    assert len(runs) == 2 and "eager_sdpa" in json.loads(runs[1]["versions"])
