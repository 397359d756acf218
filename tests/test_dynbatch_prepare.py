"""``static+dynbatch``'s prepare told apart from a compile (issue 13, eighth session: llama-2-70b's static batch
sweep compiles 109-114 s per batch x bucket; under dynbatch a batch >= 2 in a compiled bucket only records a
CUDA graph). The profiler's time budget predicts a trial's prepare from ``will_compile`` and from the trials
recorded ``prepare_compiled``: counted as compiles, dynbatch's graph recordings would make the budget defer
every later batch at a compile's cost and ``profile`` report a compile per batch. These tests fail on a backend
that counts every new cache as a compile (``static``'s count, one compile per new cache:
tests/test_static_eviction.py)."""
from types import SimpleNamespace

import torch


from llm_energy.measure.inference.backends import StaticBackend, make_backend
from llm_energy.measure.inference.loading import load_model
from llm_energy.measure.prepare import _will_compile
from llm_energy.measure.inference.sizing import static_cache_bytes

from tests.test_static_eviction import TIN, TOUT, _fresh_dynamo  # noqa: F401 (one thread, a fresh dynamo)


def test_a_compiled_bucket_serves_later_batches_as_captures_even_after_an_eviction(monkeypatch):
    """The bookkeeping, with the decode step uncompiled (``torch.compile`` the identity: test_dynbatch shows on a
    real compile that batches 4 and 8 compile nothing after batch 2)."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    loaded = load_model("tiny-llama", "cpu", "float32")
    b = make_backend("static+dynbatch", loaded)
    slot = static_cache_bytes(loaded.config.to_dict(), loaded.dtype, 8, 256)[1]
    b.device_free_bytes = lambda: (2 - len(b._caches)) * slot  # room for two caches
    seen = []
    for batch in (2, 4, 8, 2):
        cell = SimpleNamespace(batch=batch, tin=TIN, tout=TOUT)
        will, c0, k0 = _will_compile(b, cell), b.compiles, b.captures
        b.prepare(batch, TIN, TOUT)
        seen.append((batch, will, b.compiles - c0, b.captures - k0))
    assert seen == [(2, True, 1, 0), (4, False, 0, 1), (8, False, 0, 1), (2, False, 0, 1)]
    assert b.evictions == 2  # batch 2's cache went for 8, and came back as a capture
    # batch 1 compiles as static does; a dynamo reset (another SDPA setting in the process) loses the dynamic step
    assert _will_compile(b, SimpleNamespace(batch=1, tin=TIN, tout=TOUT))
    StaticBackend._dynamo_resets += 1
    try:
        assert _will_compile(b, SimpleNamespace(batch=16, tin=TIN, tout=TOUT))
    finally:
        StaticBackend._dynamo_resets -= 1

