"""The KV-cache keyword defect (found 2026-12-01): before commit e5b5c49 the cache and static backends passed the
KV cache as ``cache=``, which transformers < 5.24 (5.17 on the GPU machines) lets fall into ``**kwargs`` unused,
so no decode step attended to the context. The backends now pass it under the keyword the model takes, and the
trials measured before the fix are flagged (``llm_energy.trials.errata``), never silently trusted."""

import dataclasses
import json
from pathlib import Path

import polars as pl
import pytest
import torch

from llm_energy.measure.inference.backends import cache_keyword, make_backend
from llm_energy.measure.inference.loading import load_model
from llm_energy.trials.errata import KV_CACHE_IGNORED, affected, errata

ROOT = Path(__file__).resolve().parents[1]


class Transformers517(torch.nn.Module):
    """A causal LM with transformers 5.17's forward signature: the KV cache is ``past_key_values``, and any other
    keyword (``cache=``) lands in ``**kwargs``, unused, as it does there."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self._kw = inner, inner.config, cache_keyword(inner)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0, **kwargs):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=use_cache, logits_to_keep=logits_to_keep, **{self._kw: past_key_values})


@pytest.fixture(scope="module")
def old_signature():
    torch.manual_seed(0)
    lm = load_model("tiny-llama", "cpu", "float32")
    return dataclasses.replace(lm, model=Transformers517(lm.model))


@pytest.mark.parametrize("backend", ["cache", "static"])
def test_decode_attends_to_the_context_on_the_older_signature(old_signature, backend):
    ids = make_backend("no-cache", old_signature).make_prompt(1, 13, seed=3)
    ref = make_backend("no-cache", old_signature)  # reprocesses the whole sequence: needs no cache at all
    ref.generate(ids, 8)
    b = make_backend(backend, old_signature)
    b.prepare(1, 13, 8)
    b.generate(ids, 8)
    assert b.last_tokens[:, -1].tolist() == ref.last_tokens[:, -1].tolist()


def _trials(**cols) -> pl.DataFrame:
    n = len(cols["backend"])
    return pl.DataFrame({"trial_id": [f"s/c{i}/r0" for i in range(n)], "sweep_id": ["s"] * n, **cols})


def test_the_rule_flags_kv_cache_trials_of_older_transformers_measured_before_the_fix():
    v = lambda tf, **extra: json.dumps({"transformers": tf, "torch": "2.11.0", **extra})  # noqa: E731
    df = _trials(backend=["static", "cache", "no-cache", "static", "static+fused", "cache", "static"],
                 versions=[v("5.17.0"), v("4.46.1"), v("5.17.0"), v("5.24.0"), v("5.23.0"),
                           v("5.17.0", kv_cache_keyword="past_key_values"), None])
    assert affected(df).to_list() == [True, True, False, False, True, False, False]
    (hit,) = errata(df)
    assert hit.key == KV_CACHE_IGNORED and hit.n_trials == 3 and hit.versions == ("4.46.1", "5.17.0", "5.23.0")
    assert errata(df.filter(pl.col("backend") == "no-cache")) == []


def test_the_committed_gpu_stores_measured_before_the_fix_are_flagged():
    from llm_energy.trials.store import load_trials

    for d in ("data/h200/grid-static", "data/h100/grid-cache"):
        t = load_trials([str(ROOT / d)])
        assert affected(t).all(), d
    assert errata(load_trials([str(ROOT / "data/h100/grid-nocache")])) == []  # no KV cache: not affected


def test_show_and_check_say_so(capsys):
    from llm_energy.cli.main import main

    assert main(["show", str(ROOT / "data/h200/falcon-7b-static"), "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "erratum kv-cache-ignored: 27 trial(s)" in out and "e5b5c49" in out
    assert main(["check", str(ROOT / "data/h200/falcon-7b-static"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["key"] for e in doc["errata"]] == [KV_CACHE_IGNORED] and doc["errata"][0]["n_trials"] == 27


def test_trials_measured_now_record_the_keyword_and_are_not_flagged(tmp_path):
    from llm_energy.cli.main import main
    from llm_energy.trials.store import load_trials

    out = tmp_path / "s"
    assert main(["profile", "--model", "tiny-llama", "--backend", "cache", "--tin", "8", "--tout", "4", "--device",
                 "cpu", "--node-type", "cpu", "--idle-s", "0.2", "--min-window-s", "0", "--out", str(out),
                 "--no-live"]) == 0
    t = load_trials([str(out)])
    (kw,) = {json.loads(v)["kv_cache_keyword"] for v in t["versions"]}
    assert kw == cache_keyword(load_model("tiny-llama", "cpu", "float32").model)  # cache from 5.24, else past_key_values
    assert errata(t) == []


def test_fit_warns_and_fits_json_keeps_the_erratum_per_deployment(tmp_path, capsys):
    from llm_energy.cli.main import main
    from llm_energy.fit.fits import load_fits

    out = tmp_path / "fits.json"
    assert main(["fit", str(ROOT / "data/h100/grid-static"), str(ROOT / "data/h100/grid-nocache"), "--out",
                 str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: erratum kv-cache-ignored: 162 trial(s)" in err
    fits = load_fits(out)
    assert {k: d.errata for k, d in fits.deployments.items()} == {
        "llama-2-7b@h100x1/static/b1": ["kv-cache-ignored"], "llama-2-7b@h100x1/no-cache/b1": []}
    doc = {d["backend"]: d for d in json.loads(out.read_text())["deployments"]}
    assert doc["static"]["errata"] == ["kv-cache-ignored"] and "errata" not in doc["no-cache"]


def test_predict_and_route_say_which_fits_carry_an_erratum(tmp_path, capsys):
    import numpy as np

    from llm_energy.cli.main import main
    from tests.test_route import H100_FITS, h100_yaml

    assert main(["predict", str(H100_FITS), "--tin", "100", "--tout", "50", "--json"]) == 0
    err = capsys.readouterr().err
    assert "erratum kv-cache-ignored" in err and "llama-2-7b@h100x1/static/b1" in err
    assert "no-cache/b1" not in err.split("erratum kv-cache-ignored")[1].split(")")[0]  # not affected
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.exponential(0.5, 60))
    pl.DataFrame({"tin": rng.integers(16, 512, 60), "tout": rng.integers(8, 128, 60), "arrival_s": t - t[0]}
                 ).write_csv(tmp_path / "trace.csv")
    assert main(["route", "--fits", str(H100_FITS), "--deployments", str(h100_yaml(tmp_path)), "--trace",
                 str(tmp_path / "trace.csv"), "--policy", "greedy", "--out", str(tmp_path / "r"), "--no-plots",
                 "--json"]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert any("erratum kv-cache-ignored" in w for w in summary["warnings"])


def test_plan_warns_when_its_fits_carry_an_erratum(tmp_path, capsys):
    from llm_energy.cli.main import main
    from tests.test_route import H100_FITS

    (tmp_path / "d.yaml").write_text("deployments:\n"
                                     "  - {name: s, fit: 'llama-2-7b@h100x1/static/b1', accuracy: 50}\n"
                                     "  - {name: n, fit: 'llama-2-7b@h100x1/no-cache/b1', accuracy: 50}\n")
    (tmp_path / "w.csv").write_text("tin,tout\n64,64\n128,256\n")
    assert main(["plan", "--fits", str(H100_FITS), "--deployments", str(tmp_path / "d.yaml"), "--workload",
                 str(tmp_path / "w.csv"), "--out", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    w = json.loads((tmp_path / "p" / "summary.json").read_text())["warnings"]
    (line,) = [x for x in w if "erratum" in x]
    assert "1 fit(s) carry erratum kv-cache-ignored (llama-2-7b@h100x1/static/b1)" in line


# ---- compiled-in-window (e5b5c49..cb2fefc: static warm-ups outside the trial's bucket) ---------------
def test_compiled_in_window_replays_the_old_warm_ups_in_trial_order():
    from llm_energy.trials.errata import COMPILED_IN_WINDOW, compiled_in_window

    old = json.dumps({"transformers": "5.17.0", "kv_cache_keyword": "past_key_values"})
    fixed = json.dumps({"transformers": "5.17.0", "kv_cache_keyword": "past_key_values", "static_warmup": "trial-bucket"})
    # one session, in this order (t_start): 16x8 (bucket 256: the compile warm-up's), 16x256 (512: tin+2 = 18
    # warmed 256 only -> compiled in its window), 16x512 (1024, same prompt shape: no new warm-up -> compiled),
    # 500x8 (512 warmed by tin+2 = 502, and decoded before), 1000x16 (tin+2 = 1002 warms 1024... its own
    # bucket 1024 decoded: fine), then the same cells in a second session measured by the fixed code
    cells = [(16, 8), (16, 256), (16, 512), (500, 8), (1000, 16)]
    n = len(cells)
    df = _trials(backend=["static"] * (2 * n), versions=[old] * n + [fixed] * n,
                 session=["a"] * n + ["b"] * n, tin=[c[0] for c in cells] * 2, tout=[c[1] for c in cells] * 2,
                 batch=[1] * (2 * n), t_start=[float(i) for i in range(2 * n)])
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=3)  # the rule orders by t_start, not by row
    want = {"s/c1/r0", "s/c2/r0"}
    assert set(shuffled.filter(compiled_in_window(shuffled))["trial_id"]) == want
    assert [h.key for h in errata(df)] == [COMPILED_IN_WINDOW] and errata(df)[0].n_trials == 2
    assert affected(df).sum() == 2


def test_fit_leaves_out_trials_that_compiled_in_their_window():
    """The committed v2 stores (measured between the two fixes): exactly the three slow trials."""
    from llm_energy.trials.errata import compiled_in_window
    from llm_energy.trials.schema import drop_suspect
    from llm_energy.trials.store import load_trials

    t = load_trials([str(ROOT / "data/h200/v2/grid-static"), str(ROOT / "data/h200/v2/mistral-7b-static")])
    hit = t.filter(compiled_in_window(t))
    assert sorted(hit.select("model", "tin", "tout").rows()) == [
        ("llama-2-7b", 16, 256), ("llama-2-7b", 128, 512), ("mistral-7b", 32, 1024)]
    ms = (hit["decode_s"] / (hit["tout"] - 1) * 1e3).to_list()
    assert min(ms) > 15  # the slow ones (about 5 ms/step elsewhere)
    kept, note = drop_suspect(t)
    assert kept.height == t.height - 3 and "erratum compiled-in-window x3" in note


def test_static_trials_measured_now_carry_the_warm_up_mark(tmp_path):
    from llm_energy.cli.main import main
    from llm_energy.trials.store import load_trials

    out = tmp_path / "s"
    assert main(["profile", "--model", "tiny-llama", "--backend", "static", "--tin", "8,300", "--tout", "4",
                 "--device", "cpu", "--node-type", "cpu", "--idle-s", "0.2", "--min-window-s", "0", "--out",
                 str(out), "--no-live"]) == 0
    t = load_trials([str(out)])
    assert {json.loads(v).get("static_warmup") for v in t["versions"]} == {"trial-bucket"}
    assert errata(t) == []


def test_drop_suspect_replays_the_erratum_over_every_trial_of_a_session():
    """A suspect trial still ran (and compiled) in its process: the replay must see it, or the next trial of
    its bucket would be taken for the one that compiled (16x256 compiled in its window; 32x256 did not)."""
    from llm_energy.trials.schema import drop_suspect

    old = json.dumps({"transformers": "5.17.0", "kv_cache_keyword": "past_key_values"})
    df = _trials(backend=["static"] * 3, versions=[old] * 3, session=["a"] * 3, tin=[16, 32, 8], tout=[256, 256, 8],
                 batch=[1] * 3, t_start=[0.0, 1.0, 2.0], quality=["suspect:above-limit", "ok", "ok"])
    kept, note = drop_suspect(df)
    assert kept["trial_id"].to_list() == ["s/c1/r0", "s/c2/r0"]
    assert note == "fit: left out 1 suspect trial(s) of 3 (erratum compiled-in-window x1)"


def test_a_fitted_group_is_not_replayed_without_the_trials_left_out():
    """The replay follows a session in order: once drop_suspect has left out the trial that compiled, the
    next trial of its bucket must not look like the first one (fits.json's errata key per deployment)."""
    from llm_energy.trials.errata import compiled_in_window
    from llm_energy.trials.schema import drop_suspect

    old = json.dumps({"transformers": "5.17.0", "kv_cache_keyword": "past_key_values"})
    df = _trials(backend=["static"] * 3, versions=[old] * 3, session=["a"] * 3, tin=[16, 16, 16], tout=[8, 256, 256],
                 batch=[1] * 3, t_start=[0.0, 1.0, 2.0])
    assert compiled_in_window(df).to_list() == [False, True, False]
    kept, _ = drop_suspect(df)
    assert kept.height == 2 and not compiled_in_window(kept).any() and errata(kept) == []
    assert compiled_in_window(kept.drop("_compiled_in_window")).to_list() == [False, True]  # the bare replay would


def test_the_replays_bucket_is_the_static_backends():
    """errata.py (trials/, below measure/) keeps its own copy of the bucket rule: it must not drift."""
    from llm_energy.measure.inference import sizing
    from llm_energy.trials import errata as er

    assert er.MIN_BUCKET == sizing.MIN_BUCKET
    assert all(er._bucket(n) == sizing.bucket_len(n) for n in range(1, 9000, 7))
