"""``LLM_ENERGY_COMPILE_BACKEND`` (fusion.compile_backend): the torch.compile backend of the static backends,
inductor unless it names another. The tests set ``aot_eager`` (conftest.py) except for those marked ``inductor``
or ``gpu``. Unset, torch.compile is called exactly as before the variable existed; set, ``mode`` and ``options``
(inductor's) are dropped, and a profile stores the backend in its trials' versions."""

import json

import pytest
import torch

from llm_energy.errors import UserError
from llm_energy.measure.inference import fusion
from llm_energy.measure.inference.backends import make_backend
from llm_energy.measure.inference.loading import load_model

ENV = fusion.COMPILE_BACKEND_ENV
CDT = {"coordinate_descent_tuning": True, "triton.unique_kernel_names": True}


def test_the_variable_names_the_backend_inductor_by_default(monkeypatch):
    from tests.conftest import COMPILE_BACKEND_ENV

    assert ENV == COMPILE_BACKEND_ENV == "LLM_ENERGY_COMPILE_BACKEND"
    assert fusion.compile_backend() == "aot_eager"  # conftest's, for every test not marked inductor or gpu
    for unset in (None, "", "inductor"):
        if unset is None:
            monkeypatch.delenv(ENV)
        else:
            monkeypatch.setenv(ENV, unset)
        assert fusion.compile_backend() == "inductor"
        assert fusion.backend_kwargs({"mode": "reduce-overhead"}) == {"mode": "reduce-overhead"}
        assert fusion.backend_kwargs({"options": CDT}) == {"options": CDT} and fusion.backend_kwargs({}) == {}
    monkeypatch.setenv(ENV, "eager")
    assert fusion.backend_kwargs({"mode": "max-autotune"}) == {"backend": "eager"}


@pytest.mark.parametrize("value", ["inductorr", "aot-eager"])
def test_a_name_torch_does_not_know_is_a_one_line_user_error(monkeypatch, value):
    monkeypatch.setenv(ENV, value)
    with pytest.raises(UserError) as e:
        fusion.compile_backend()
    assert str(e.value).startswith(f"LLM_ENERGY_COMPILE_BACKEND={value!r}: not a torch.compile backend")
    assert len(str(e.value).splitlines()) == 1
    with pytest.raises(UserError, match=f"LLM_ENERGY_COMPILE_BACKEND={value!r}"):
        make_backend("static", load_model("tiny-llama", "cpu", "float32"))


def _compile_calls(monkeypatch, name):
    """The keyword arguments of each torch.compile a static backend ``name`` makes (nothing compiled)."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or fn)
    b = make_backend(name, load_model("tiny-llama", "cpu", "float32"))
    return b, calls


def test_unset_the_static_backends_compile_as_they_always_did(monkeypatch):
    monkeypatch.delenv(ENV)
    b, calls = _compile_calls(monkeypatch, "static+cdt+cprefill")
    assert calls == [{"fullgraph": False, "dynamic": False, "options": CDT}, {"fullgraph": True, "dynamic": True}]
    assert b.compile_backend is None
    b, calls = _compile_calls(monkeypatch, "static")
    assert calls == [{"fullgraph": False, "dynamic": False, "mode": None}] and b.compile_backend is None


def test_another_backend_replaces_inductors_mode_and_options(monkeypatch):
    b, calls = _compile_calls(monkeypatch, "static+cdt+cprefill")
    assert calls == [{"fullgraph": False, "dynamic": False, "backend": "aot_eager"},
                     {"fullgraph": True, "dynamic": True, "backend": "aot_eager"}]
    assert b.compile_backend == "aot_eager" and make_backend("cache", b.loaded).compile_backend is None


def _versions(out):
    from llm_energy.trials.store import open_store

    store = open_store(out)
    runs = [r for s in store.sweeps().values() for r in s.runs]
    return [json.loads(v) for v in store.trials()["versions"]], [json.loads(r["versions"]) for r in runs]


@pytest.fixture
def _fresh_dynamo():
    """Dynamo's compiled steps of the profiles here would serve later tests' tiny-llama of equal shapes."""
    yield
    torch._dynamo.reset()


def _profile(out, backend):
    from llm_energy.cli.main import main

    assert main(["profile", "--model", "tiny-llama", "--backend", backend, "--tin", "8", "--tout", "3", "--repeats",
                 "1", "--warmups", "0", "--device", "cpu", "--threads", "1", "--idle-s", "0.1", "--min-window-s", "0",
                 "--no-live", "--out", str(out)]) == 0
    return _versions(out)


def test_a_profile_compiled_by_another_backend_says_so_in_its_versions(tmp_path, monkeypatch, _fresh_dynamo):
    """aot_eager (conftest's): every trial and the run record ``torch_compile_backend``; an eager backend, which
    compiles nothing, does not; unset, nothing changes (torch.compile the identity: no inductor compile here)."""
    trials, runs = _profile(tmp_path / "aot", "static")
    assert trials and all(v["torch_compile_backend"] == "aot_eager" for v in trials + runs)
    trials, runs = _profile(tmp_path / "cache", "cache")
    assert trials and not any("torch_compile_backend" in v for v in trials + runs)
    monkeypatch.delenv(ENV)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    trials, runs = _profile(tmp_path / "inductor", "static")
    assert trials and not any("torch_compile_backend" in v for v in trials + runs)
    assert all(v["static_warmup"] for v in trials)  # the other static marks are there
