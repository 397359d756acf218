"""The static backend gives back least recently used caches when the device would not hold the next one
(H200, llama-2-7b static batches 1..256 x buckets 256/512: one StaticCache per (batch, bucket) kept forever
summed past the card's 139.8 GiB at batch 128, a raw torch.OutOfMemoryError after 12 of 36 trials). The
device's free memory is injected (``device_free_bytes``): here, the bytes of the caches held against a
capacity. These tests fail on a backend that keeps every cache."""

import gc
import weakref
from types import SimpleNamespace

import pytest
import torch

from llm_energy.measure.inference.backends import StaticBackend, make_backend
from llm_energy.measure.inference.compiles import compile_count
from llm_energy.measure.inference.loading import load_model
from llm_energy.measure.inference.sizing import DeviceMemoryError, static_cache_bytes
from llm_energy.measure.prepare import _will_compile
from tests.test_dynbatch import decode_tokens

TIN, TOUT = 8, 10  # one 256-token bucket


@pytest.fixture(autouse=True)
def _fresh_dynamo(monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(StaticBackend, "_setting_in_process", None)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def loaded():
    return load_model("tiny-llama", "cpu", "float32")


def kv_and_room(b, batch):
    return static_cache_bytes(b.loaded.config.to_dict(), b.loaded.dtype, batch, 256)


def capacity(b, limit):
    """A device of ``limit`` bytes for caches: free = limit minus the KV of the caches ``b`` holds."""
    return lambda: limit - sum(kv_and_room(b, k[0])[0] for k in b._caches)


def tokens(b, batch):
    """Every token of one generation (tin 8, tout 10, seed = batch) after its prepare; the window's compiles."""
    b.prepare(batch, TIN, TOUT)
    before = compile_count()
    toks = decode_tokens(b, b.make_prompt(batch, TIN, seed=batch), TOUT)
    return toks, compile_count() - before


def key_tensors(b, key):
    return [weakref.ref(layer.keys) for layer in b._caches[key].layers]


def test_a_device_of_two_caches_keeps_two_and_every_key_generates_a_fresh_backends_tokens(loaded):
    """A device with room for two caches whatever their batch: a third key gives back the least recently
    used; a key back after its eviction prepares again and generates what a fresh backend generates."""
    ref = {batch: tokens(make_backend("static", loaded), batch)[0] for batch in (1, 2, 4, 8)}
    b = make_backend("static", loaded)
    slot = kv_and_room(b, 8)[1]
    b.device_free_bytes = lambda: (2 - len(b._caches)) * slot
    alive = []
    for batch in (1, 2, 4, 8, 2, 8, 1):
        will, before = _will_compile(b, SimpleNamespace(batch=batch, tin=TIN, tout=TOUT)), b.compiles
        toks, window = tokens(b, batch)
        assert b.compiles - before == will, batch  # the profiler's prepare_compiled: true for a re-prepared key
        assert toks == ref[batch], batch
        assert not window, (batch, window.describe())  # a re-prepared key compiled in prepare, not the window
        alive += key_tensors(b, (batch, 256))
        gc.collect()
        assert len(b._caches) <= 2, (batch, list(b._caches))
        assert len({id(r()) for r in alive if r() is not None}) == 4 * len(b._caches), batch  # tiny-llama: 4 layers
    assert list(b._caches) == [(8, 256), (1, 256)]  # 8 used again after 2 came back: 2 went for 1
    assert b.compiles == 6 and b.evictions == 4  # 1, 2, 4, 8, then 2 and 1 again: every preparation counted


@pytest.mark.parametrize("name", [pytest.param("static", marks=pytest.mark.inductor),  # nor inductor's compiled code
                                  "static+dynbatch+cprefill"])
def test_an_evicted_cache_dies_after_torch_compile_ran_its_decode_step(loaded, name):
    """Nothing keeps an evicted cache's tensors alive: not dynamo's guards or graphs (transformers marks the
    cache's tensors static addresses; dynbatch marks them dynamic; cprefill compiles the prefill too), not
    the backend's state."""
    b = make_backend(name, loaded)
    b.prepare(2, TIN, TOUT)
    b.generate(b.make_prompt(2, TIN, seed=1), TOUT)
    assert b.compiles == 1 and b._filled == {(2, 256)}
    refs = key_tensors(b, (2, 256)) + [weakref.ref(b._caches[(2, 256)])]
    b.device_free_bytes = capacity(b, kv_and_room(b, 1)[1])  # room for batch 1's cache alone
    b.prepare(1, TIN, TOUT)
    gc.collect()
    assert list(b._caches) == [(1, 256)] and b.evictions == 1
    assert all(r() is None for r in refs), "an evicted cache is still alive"
    assert (2, 256) not in b._filled and not any(s[0] == 2 for s in b._warm_shapes)


def test_a_cache_that_does_not_fit_alone_is_one_clear_error(loaded):
    b = make_backend("static", loaded)
    b.prepare(1, TIN, TOUT)
    kv2, _ = kv_and_room(b, 2)
    b.device_free_bytes = lambda: kv2 - 1
    with pytest.raises(DeviceMemoryError, match=r"batch 2 \(256-token static cache\): needs .* MiB free with every"):
        b.prepare(2, TIN, TOUT)
    assert not b._caches and b.evictions == 1


def test_torch_out_of_memory_gives_every_cache_back_and_retries_once(loaded, monkeypatch):
    b = make_backend("static", loaded)
    b.prepare(1, TIN, TOUT)
    b.prepare(4, TIN, TOUT)
    calls = []
    real = StaticBackend._make_room

    def oom_once(self, key):
        calls.append(list(self._caches))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB. Including junk")
        return real(self, key)

    monkeypatch.setattr(StaticBackend, "_make_room", oom_once)
    assert tokens(b, 2)[0] == tokens(make_backend("static", loaded), 2)[0]
    assert calls[:2] == [[(1, 256), (4, 256)], []] and list(b._caches) == [(2, 256)]

    def oom(self, key):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB. Including junk")

    monkeypatch.setattr(StaticBackend, "_make_room", oom)
    with pytest.raises(DeviceMemoryError, match=r"^batch 8, tin 8 \+ tout 10 \(256-token static cache, KV .* MiB\): "
                                                 r"CUDA out of memory. Tried to allocate 1.00 GiB, with every other"):
        b.prepare(8, TIN, TOUT)
    assert not b._caches


def test_profile_ends_a_sweep_the_device_cannot_hold_in_one_line_and_resumes(tmp_path, monkeypatch, capsys):
    """The first trial's cache fits; the second's does not even alone: one line naming the trial, its batch
    and the memory needed vs free, exit 2, the first trial kept; the same command then resumes it."""
    from llm_energy.cli.main import main
    from llm_energy.trials.store import open_store

    out = tmp_path / "s"
    argv = ["profile", "--model", "tiny-llama", "--backend", "static", "--tin", "8", "--tout", "4", "--batch", "1,2",
            "--repeats", "1", "--warmups", "0", "--device", "cpu", "--threads", "1", "--idle-s", "0.1",
            "--min-window-s", "0.05", "--no-live", "--out", str(out)]
    monkeypatch.setattr(StaticBackend, "device_free_bytes", lambda self: 2**40 if self.compiles == 0 else 0)
    assert main(argv) == 2
    got = capsys.readouterr().err
    assert "Traceback" not in got, got
    err = got.strip().splitlines()[-1]  # after the progress lines (--no-live: stderr)
    assert sum("error" in line for line in got.splitlines()) == 1, got
    assert err.startswith("llm-energy profile: error: trial i8-o4-b"), err
    assert "(256-token static cache): needs " in err and " MiB (KV " in err and "0.00 MiB free with every other" in err
    assert "1 of 2 trials of sweep" in err, err
    assert open_store(out).trials().height == 1
    monkeypatch.undo()
    assert main(argv) == 0
    assert "resuming: 1 of 2 trials" in capsys.readouterr().out
    assert open_store(out).trials().height == 2


def test_torch_out_of_memory_anywhere_else_is_one_line_too():
    from llm_energy.cli.profile import _out_of_memory

    e = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB. GPU 0 has a total capacity of "
                               "139.80 GiB of which 281.12 MiB is free. Including non-PyTorch memory, this process ...")
    assert _out_of_memory(e) == ("device out of memory: CUDA out of memory. Tried to allocate 512.00 MiB. GPU 0 has a "
                                 "total capacity of 139.80 GiB of which 281.12 MiB is free")
    assert _out_of_memory(RuntimeError("CUDA error: an illegal memory access")) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA")
def test_on_cuda_an_evicted_cache_gives_its_memory_back_after_its_cuda_graphs_ran():
    """reduce-overhead: cudagraph trees hold the static inputs' addresses, not the tensors; the memory of an
    evicted cache is the allocator's again, and the next key replays without a compile in its window."""
    b = make_backend("static", load_model("tiny-llama", "cuda:0", "float16"))
    b.prepare(64, TIN, TOUT)
    b.generate(b.make_prompt(64, TIN, seed=1), TOUT)
    refs, held = key_tensors(b, (64, 256)), torch.cuda.memory_allocated()
    kv64 = kv_and_room(b, 64)[0]
    b.device_free_bytes = capacity(b, kv_and_room(b, 1)[1])
    toks, window = tokens(b, 1)
    assert all(r() is None for r in refs) and not window, window.describe()
    assert torch.cuda.memory_allocated() < held - kv64 // 2


def test_a_prepare_that_compiles_again_after_an_out_of_memory_retry_is_recorded_as_compiled(tmp_path, monkeypatch):
    """The second trial's key is cached (prepare_compiled predicted false), but its prepare runs out of memory:
    every cache is given back and the retry compiles the key again. The trial says so (the time budget takes a
    non-compiling trial's prepare for the largest other prepare: one compile's 30 s there defers later trials)."""
    from llm_energy.cli.main import main
    from llm_energy.trials.store import open_store

    calls = []
    real = StaticBackend._warm_shape

    def oom_second(self, *a, **k):
        calls.append(self.compiles)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB.")
        return real(self, *a, **k)

    monkeypatch.setattr(StaticBackend, "_warm_shape", oom_second)
    out = tmp_path / "s"
    assert main(["profile", "--model", "tiny-llama", "--backend", "static", "--tin", "8", "--tout", "4,8", "--repeats",
                 "1", "--warmups", "0", "--device", "cpu", "--threads", "1", "--idle-s", "0.1", "--min-window-s", "0.05",
                 "--no-live", "--out", str(out)]) == 0
    t = open_store(out).trials().sort("t_start")
    assert calls[:3] == [1, 1, 2] and t["prepare_compiled"].to_list() == [True, True]
