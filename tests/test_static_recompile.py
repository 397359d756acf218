"""Compilation inside a measurement window (H200, llama-2-7b static 16 x 256: the decode step compiled
in the window, 31.9 ms/step instead of 5.1 at 169 W): the static backend's warm-ups run in the trial's
own bucket; compile_count sees what torch compiles (tests/test_profiler_compiles.py: the profiler's guard)."""

import pytest
import torch

from llm_energy.measure.inference.backends import make_backend
from llm_energy.measure.inference.compiles import CompileCount, compile_count
from llm_energy.measure.inference.loading import load_model


def fresh_compile(i: int) -> None:
    """One dynamo compile: a function with a code object of its own, compiled and called."""
    ns: dict = {}
    exec(f"def step_{i}(x):\n    return x * {i} + 1\n", ns)  # noqa: S102 - a new code object per call
    torch.compile(ns[f"step_{i}"], backend="eager")(torch.ones(2))


def test_compile_count_sees_a_dynamo_compile_and_nothing_else():
    compile_count()
    torch._dynamo.reset()  # clears every compile callback (torch._dynamo.explain calls it)
    before = compile_count()
    assert not (compile_count() - before)
    fresh_compile(10_000)
    got = compile_count() - before
    assert got.frames >= 1 and got.graphs >= 1 and got.cudagraphs == 0
    assert "dynamo compile" in got.describe() and "new graph" in got.describe()
    assert CompileCount().describe() == "no compiles" and CompileCount(frames=2).describe() == "2 dynamo compiles"


def test_a_static_trial_compiles_nothing_in_its_window_whatever_its_bucket():
    """tin 16 + 2 falls in the 256 bucket, 16 + 256 in 512: the old warm-ups (8 + 4 tokens, then tin + 2)
    both ran in 256, so the trial's first generation compiled the 512 bucket's decode step. Decode then
    runs to the bucket's last position (16 + 496 = 512) without a compile either."""
    b = make_backend("static", load_model("tiny-llama", "cpu", "float32"))
    for tout in (256, 496):
        b.prepare(1, 16, tout)
        before = compile_count()
        r = b.generate(b.make_prompt(1, 16, seed=3), tout)
        assert r.tout_actual == tout
        assert not (compile_count() - before), f"tout {tout}: {(compile_count() - before).describe()}"
    assert set(b._caches) == {(1, 512)} and b.compiles == 1  # no stray 256-token cache either


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA")
def test_on_cuda_a_prepared_bucket_neither_compiles_nor_records_a_cuda_graph_in_a_trial():
    """reduce-overhead on CUDA: cudagraph trees record in prepare(); a trial, also one back in a bucket
    after another bucket ran, replays (a re-recording would count as a CUDA graph recording)."""
    b = make_backend("static", load_model("tiny-llama", "cuda:0", "float16"))
    cells = [(1, 16, 256), (1, 128, 512), (1, 16, 256), (1, 16, 496)]
    for batch, tin, tout in cells:
        b.prepare(batch, tin, tout)
    for batch, tin, tout in cells:
        b.prepare(batch, tin, tout)
        before = compile_count()
        assert b.generate(b.make_prompt(batch, tin, seed=5), tout).tout_actual == tout
        got = compile_count() - before
        assert not got, f"{(batch, tin, tout)}: {got.describe()}"
