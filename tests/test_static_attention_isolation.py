"""Static variants with and without the ``math`` option in one process: dynamo does not guard a compiled frame
on SDPA's kernel setting, and after a graph break inside the model the frames below the decode step are
shared by backends compiled with equal settings. A frame traced under ``static+gqa`` (SDPA) then ran for
``static+gqa+math`` (packed_gqa's bf16 products), silently. StaticBackend._isolate_attention resets dynamo
when a process switches; these tests fail without it (a graph break is injected: tiny models have none)."""

from __future__ import annotations

import collections

import pytest
import torch
import transformers.models.mistral.modeling_mistral as mistral

from llm_energy.measure.inference.backends import StaticBackend, make_backend
from llm_energy.measure.inference.loading import load_model


@pytest.fixture
def graph_break_in_the_model(monkeypatch):
    torch.set_num_threads(1)
    forward = mistral.MistralModel.forward

    def broken(self, *args, **kwargs):
        torch._dynamo.graph_break()
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(mistral.MistralModel, "forward", broken)
    monkeypatch.setattr(StaticBackend, "_setting_in_process", None)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_each_variant_runs_its_own_attention_after_a_graph_break(graph_break_in_the_model):
    """static+gqa, static+gqa+math, static+gqa again, one model, one process: each generation's compiled graphs
    hold the attention of its own variant (SDPA; the products without SDPA)."""
    loaded = load_model("tiny-mistral", "cpu", "float32")
    graphs: list[list[str]] = []
    ran: dict[str, set[int]] = collections.defaultdict(set)
    current = [""]

    def capture(gm, example_inputs):  # one backend object for both, as equal inductor settings compare equal
        i = len(graphs)
        graphs.append([str(n.target) for n in gm.graph.nodes if n.op == "call_function"])

        def run(*args):
            ran[current[0]].add(i)
            return gm.forward(*args)
        return run

    backends = {}
    for name in ("static+gqa", "static+gqa+math"):
        b = backends[name] = make_backend(name, loaded)
        b._decode = torch.compile(b._decode_step, backend=capture, fullgraph=False, dynamic=False)
    ids = backends["static+gqa"].make_prompt(1, 9, seed=1)
    for i, name in enumerate(("static+gqa", "static+gqa+math", "static+gqa")):
        current[0] = f"{i}:{name}"
        backends[name].generate(ids, 4)
    for label, idx in ran.items():
        ops = [op for i in idx for op in graphs[i]]
        sdpa = sum("scaled_dot_product_attention" in op for op in ops)
        products = sum("matmul" in op for op in ops)
        if label.endswith("+math"):
            assert sdpa == 0 and products > 0, (label, sdpa, products)
        else:
            assert sdpa > 0 and products == 0, (label, sdpa, products)
    assert len(ran) == 3
