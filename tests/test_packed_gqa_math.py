"""``static+gqa+math``: the packed decode attention as bf16 matrix products (packed_gqa.packed_matmul_attention),
never a converted or copied K/V cache. It used to be torch's math SDPA kernel on the packed layout, which
computes in fp32: every step it wrote fp32 copies of each layer's K (scaled) and V and multiplied those,
slower on the H200 than plain ``static``. These tests fail on that code."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from llm_energy.measure.inference.backends import make_backend, static_cache_config
from llm_energy.measure.inference.loading import load_model
from llm_energy.measure.inference.packed_gqa import math_kernel_only, packed_gqa_attention
from tests.test_packed_gqa import _Attn, _one_thread  # noqa: F401  (the autouse one-thread fixture)

_VIEWS = {"view", "_unsafe_view", "reshape", "transpose", "t", "expand", "permute", "unsqueeze", "squeeze", "slice",
          "select", "alias", "as_strided", "detach", "lift_fresh"}
_CACHE_WRITES = {"index_copy", "index_copy_", "index_put", "index_put_", "copy", "copy_"}  # the step's own K/V in



class _Ops(TorchDispatchMode):
    """Every aten op run: (name, input dtypes of the tensors, outputs)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        dtypes = [a.dtype for a in args if isinstance(a, torch.Tensor)]
        self.ops.append((func.overloadpacket.__name__, dtypes, [o for o in outs if isinstance(o, torch.Tensor)]))
        return out


def _inputs(dtype, b=1, kv=2, groups=4, length=64, d=16):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, kv * groups, 1, d, generator=g).to(dtype)
    k, v = (torch.randn(b, kv, length, d, generator=g).to(dtype) for _ in range(2))
    mask = torch.zeros(b, 1, 1, length, dtype=torch.bool)
    mask[..., : length // 2 + 3] = True  # a static cache half full
    return q, k, v, mask


def test_math_packed_attention_reads_the_bf16_cache_as_it_lies():
    q, k, v, mask = _inputs(torch.bfloat16)
    with sdpa_kernel([SDPBackend.MATH]):
        assert math_kernel_only()
        with _Ops() as rec:
            out, _ = packed_gqa_attention(_Attn(), q, k, v, mask)
    assert not math_kernel_only() and out.dtype == torch.bfloat16
    products = [(name, dtypes) for name, dtypes, _ in rec.ops if name in ("bmm", "mm", "matmul", "baddbmm")]
    assert len(products) == 2 and all(dt == [torch.bfloat16] * 2 for _, dt in products), products
    big = [(name, o.dtype, tuple(o.shape)) for name, _, outs in rec.ops for o in outs
           if o.numel() >= k.numel() and name not in _VIEWS]
    assert not big, f"K/V-sized tensors written (a converted or copied cache): {big}"
    # the same attention as repeat_kv + SDPA, to bf16's precision; in float32 to float32's
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.float(), *(x.float().repeat_interleave(4, dim=1) for x in (k, v)), attn_mask=mask).transpose(1, 2)
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=2e-2)
    q, k, v, mask = _inputs(torch.float32)
    with sdpa_kernel([SDPBackend.MATH]):
        out32, _ = packed_gqa_attention(_Attn(), q, k, v, mask)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, *(x.repeat_interleave(4, dim=1) for x in (k, v)), attn_mask=mask).transpose(1, 2)
    torch.testing.assert_close(out32, ref, rtol=1e-5, atol=1e-6)


def _aten_graph(fn, *args):
    """The aten graph (aot_autograd's, functionalized) that torch.compile runs for ``fn(*args)``."""
    from torch._functorch.aot_autograd import aot_module_simplified

    graphs = []

    def backend(gm, example_inputs):
        def capture(g, _):
            graphs.append(g)
            return g
        return aot_module_simplified(gm, example_inputs, fw_compiler=capture)

    torch.compile(fn, backend=backend, fullgraph=True, dynamic=False)(*args)
    assert len(graphs) == 1
    return graphs[0]


def _cache_copies(variant, length=256, device="cpu"):
    """(op, dtype, shape) of every tensor the compiled bf16 tiny-mistral decode step writes that has a dim of
    the bucket's length and at least one layer's K elements, other than the cache update itself and views;
    and the dtypes of the inputs of its matrix products over the bucket."""
    from transformers import StaticCache

    b = make_backend(variant, load_model("tiny-mistral", device, "bfloat16"))
    cfg = b.loaded.config
    kv, d = cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    cache = StaticCache(config=static_cache_config(cfg, length), max_cache_len=length)
    ids = b.make_prompt(1, 9, seed=5)
    tok, pos = torch.ones((1, 1), dtype=torch.long, device=ids.device), torch.full((1, 1), 9, device=ids.device)
    with torch.inference_mode():
        b._restore_layout()
        b._prefill_step(ids, cache)  # eager: fills (and allocates) the cache
        graph = _aten_graph(b._decode_step, tok, pos, cache).graph
    copies, products = [], []
    for n in graph.nodes:
        val = n.meta.get("val")
        if n.op != "call_function" or not isinstance(val, torch.Tensor):
            continue
        name = n.target.overloadpacket.__name__ if hasattr(n.target, "overloadpacket") else str(n.target)
        if name not in _VIEWS | _CACHE_WRITES and length in val.shape and val.numel() >= kv * length * d:
            copies.append((name, val.dtype, tuple(val.shape)))
        ins = [a.meta["val"] for a in n.args if hasattr(a, "meta") and isinstance(a.meta.get("val"), torch.Tensor)]
        if name in ("bmm", "mm", "baddbmm") and any(length in t.shape for t in ins):
            products.append([t.dtype for t in ins])
    return copies, products, cfg.num_hidden_layers


def test_compiled_gqa_math_decode_step_never_converts_or_copies_the_cache():
    copies, products, layers = _cache_copies("static+gqa+math")
    assert not copies, copies
    assert products == [[torch.bfloat16] * 2] * (2 * layers)  # scores and output, each layer, in bf16
    # the check sees a copy where there is one: static+math is transformers' repeat_kv (the cache copied to
    # every query head), then torch's math kernel, which upcasts (torch 2.11, 2.13: fp32 copies and products)
    copies, _, _ = _cache_copies("static+math")
    assert copies


@pytest.mark.gpu
def test_on_cuda_the_compiled_gqa_math_decode_step_never_converts_or_copies_the_cache():
    """The same check on CUDA, where the H200 runs it (session.sh's fusiontests step): bf16 products, no
    converted or copied cache."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    copies, products, layers = _cache_copies("static+gqa+math", device="cuda:0")
    assert not copies, copies
    assert products == [[torch.bfloat16] * 2] * (2 * layers)


def test_falcon_decode_under_math_is_repeat_kv_attention():
    from llm_energy.measure.inference.packed_gqa import falcon_attend

    q, k, v, mask = _inputs(torch.float32)
    for kv in (1, 2):  # falcon-7b's one KV head; falcon-40b's groups
        kk, vv, qq = k[:, :kv], v[:, :kv], q[:, : kv * 4]
        want = torch.nn.functional.scaled_dot_product_attention(
            qq, *(x.repeat_interleave(4, dim=1) for x in (kk, vv)), attn_mask=mask).transpose(1, 2).reshape(1, 1, -1)
        with sdpa_kernel([SDPBackend.MATH]):
            torch.testing.assert_close(falcon_attend(qq, kk, vv, mask, True), want, rtol=1e-5, atol=1e-6)
