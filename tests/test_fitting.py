"""Fitting: the paper reproduced exactly, better forms by held-out error, honest intervals, bad input."""

import json
import re

import numpy as np
import polars as pl
import pytest

from llm_energy.errors import UserError
from llm_energy.fit.fits import load_fits, predict, save_fits
from llm_energy.fit.forms import SANITY_GRID, FitOptions, fit_deployments, is_sane

# The paper's slide: energy model R^2 (uncentered: no-intercept OLS) and F per model.
PUBLISHED_R2_F = {
    "falcon-7b": (0.964, 681.2), "falcon-40b": (0.972, 904.5), "Llama-2-7b-chat-hf": (0.973, 942.3),
    "Llama-2-13b-chat-hf": (0.972, 887.8), "Llama-2-70b-chat-hf": (0.976, 1022), "Mistral-7B-v0.1": (0.975, 997.0),
    "Mixtral-8x7B-v0.1": (0.980, 1238),
}
COEF_KEYS = {"Llama-2-7b-chat-hf": "Llama-2 (7B)", "Llama-2-13b-chat-hf": "Llama-2 (13B)", "Llama-2-70b-chat-hf": "Llama-2 (70B)"}


@pytest.fixture(scope="module")
def paper_fits(grid_trials):
    return fit_deployments(grid_trials, FitOptions(form="paper"))


@pytest.fixture(scope="module")
def auto_fits(grid_trials):
    return fit_deployments(grid_trials, FitOptions(form="auto"))


def _dep(fits, model):
    (d,) = [d for d in fits.deployments.values() if d.model == model]
    return d


def sig(x, n):
    return float(f"{x:.{n}g}")


def published_digits(v: float) -> int:
    """Significant digits the published number carries (they were rounded to a fixed number of decimals)."""
    digits = repr(abs(v)).replace(".", "").lstrip("0")
    return len(digits.rstrip("0")) if "e" not in repr(v) else len(repr(abs(v)).split("e")[0].replace(".", "").strip("0"))


def same_to_4_sig(ours: float, published: float) -> bool:
    n = min(4, published_digits(published))
    return sig(ours, n) == sig(published, n)


def test_published_digits():
    assert published_digits(0.000185) == 3 and published_digits(-3.894991) == 7 and published_digits(414.8197) == 7


def test_paper_coefficients_reproduced_to_4_significant_figures(paper_fits, reference):
    pub = json.loads((reference / "wilkins2024" / "coefficients.json").read_text())
    for model, key in COEF_KEYS.items():
        d = _dep(paper_fits, model)
        a = pub["alpha_coeffs"][key]
        b = pub["beta_coeffs"][key]
        for i in range(3):
            assert same_to_4_sig(d.targets["energy_j"].coef[i], a[f"alpha_{i}"]), (model, i)
            assert same_to_4_sig(d.targets["runtime_s"].coef[i], b[f"beta_{i}"]), (model, i)


# For these three the slide's F implies ~79 rows (F = R2/3 / ((1-R2)/(n-3))), while the public grid file
# holds 81 for each; no consistent subset of the file reproduces them (searched: every 1- and 2-row drop),
# so the slide was fitted on data that differ from the published file. R^2 still agrees to 0.002.
SLIDE_DATA_DIFFERS = {"falcon-7b", "Mistral-7B-v0.1", "Mixtral-8x7B-v0.1"}


def test_slide_r2_and_f_table_reproduced_for_all_seven_models(paper_fits):
    assert len(paper_fits.deployments) == 7
    for model, (r2, f) in PUBLISHED_R2_F.items():
        st = _dep(paper_fits, model).targets["energy_j"].stats
        assert st.r2_statsmodels == pytest.approx(st.r2_uncentered)
        if model in SLIDE_DATA_DIFFERS:
            assert abs(st.r2_uncentered - r2) < 0.002, model
            continue
        assert round(st.r2_uncentered, 3) == r2
        assert st.f == pytest.approx(f, rel=5e-4)
        # the centered R^2 of the same fit is lower, as the reference README says (about 0.96 to 0.975)
        assert 0.95 < st.r2_centered < st.r2_uncentered
        assert len(st.ci95_lo) == 3 and all(lo < hi for lo, hi in zip(st.ci95_lo, st.ci95_hi))


def test_paper_form_predicts_negative_energy_and_is_flagged_not_sane(paper_fits):
    m = _dep(paper_fits, "Llama-2-7b-chat-hf").targets["energy_j"]
    assert m.predict(np.array([2048]), np.array([8]))[0] < 0
    assert not is_sane(m)


def test_auto_meets_the_targets_on_every_grid_model(auto_fits):
    assert len(auto_fits.deployments) == 7
    for d in auto_fits.deployments.values():
        for t in ("energy_j", "runtime_s"):
            m = d.targets[t]
            paper = m.candidate("paper")
            assert m.cv.median <= 0.10, (d.deployment, t, m.cv)
            assert paper.median > 3 * m.cv.median
            assert m.form != "paper" and is_sane(m)
        ii, oo = np.meshgrid(np.arange(1, 4097, 15), np.arange(1, 4097, 15))
        assert (d.targets["energy_j"].predict(ii.ravel(), oo.ravel()) >= 0).all()


def test_intervals_cover_about_90_percent_of_held_out_cells(grid_trials):
    rng = np.random.default_rng(0)
    df = grid_trials.filter(pl.col("model").is_in(["Llama-2-7b-chat-hf", "Mistral-7B-v0.1", "falcon-40b"]))
    cells = df["cell_id"].unique().sort().to_list()
    test_cells = set(rng.choice(cells, size=len(cells) // 3, replace=False).tolist())
    train = df.filter(~pl.col("cell_id").is_in(list(test_cells)))
    test = df.filter(pl.col("cell_id").is_in(list(test_cells)))
    fits = fit_deployments(train)
    inside = total = 0
    for d in fits.deployments.values():
        g = test.filter(pl.col("model") == d.model)
        p = predict(fits, d.deployment, g["tin"].to_numpy(), g["tout"].to_numpy())
        y = g["energy_j"].to_numpy()
        inside += int(((p["energy_j_lo"].to_numpy() <= y) & (y <= p["energy_j_hi"].to_numpy())).sum())
        total += len(y)
    assert total > 60
    assert 0.75 <= inside / total <= 1.0


def test_fits_file_roundtrip_and_validation(auto_fits, tmp_path):
    p = tmp_path / "fits.json"
    save_fits(auto_fits, p)
    back = load_fits(p)
    assert set(back.deployments) == set(auto_fits.deployments)
    key = next(iter(back.deployments))
    a = predict(auto_fits, key, [8, 100], [8, 300])
    b = predict(back, key, [8, 100], [8, 300])
    assert a.equals(b)
    d = json.loads(p.read_text())
    d["deployments"][0]["targets"]["energy_j"]["terms"][0] = "tin^9"
    p.write_text(json.dumps(d))
    with pytest.raises(UserError, match="tin\\^9"):
        load_fits(p)
    d["schema_version"] = 7
    p.write_text(json.dumps(d))
    with pytest.raises(UserError, match="schema_version=7"):
        load_fits(p)


def test_bad_trials_are_errors_or_skipped_with_reason(grid_trials):
    one = grid_trials.filter(pl.col("model") == "Llama-2-7b-chat-hf")
    nan = one.with_columns(pl.when(pl.col("tin") == 64).then(float("nan")).otherwise(pl.col("energy_j")).alias("energy_j"))
    with pytest.raises(UserError, match="no deployment could be fitted.*invalid targets"):
        fit_deployments(nan)
    ok = fit_deployments(nan, FitOptions(drop_invalid=True))
    assert next(iter(ok.deployments.values())).n_trials == one.height - 9
    few = one.filter(pl.col("tin") <= 8).head(4)
    with pytest.raises(UserError, match="fewer than"):
        fit_deployments(few)
    mixed = fit_deployments(pl.concat([one, few.with_columns(pl.lit("other").alias("model"))]))
    assert [s["deployment"].split("@")[0] for s in mixed.skipped] == ["other"]
    with pytest.raises(UserError, match="column 'tout' missing"):
        fit_deployments(one.drop("tout"))
    with pytest.raises(UserError, match="tin=-3"):
        fit_deployments(one.with_columns(pl.lit(-3, pl.Int32).alias("tin")))


def test_infinite_targets_are_invalid_never_nan_coefficients(grid_trials):
    one = grid_trials.filter(pl.col("model") == "Llama-2-7b-chat-hf")
    for col in ("energy_j", "runtime_s"):
        inf = one.with_columns(pl.when(pl.col("tin") == 64).then(float("inf")).otherwise(pl.col(col)).alias(col))
        with pytest.raises(UserError, match=f"no deployment could be fitted.*invalid targets.*{col}=inf"):
            fit_deployments(inf, FitOptions(form="paper"))
        ok = fit_deployments(inf, FitOptions(form="paper", drop_invalid=True))
        d = next(iter(ok.deployments.values()))
        assert d.n_trials == one.height - 9
        assert all(np.isfinite(d.targets[t].coef).all() for t in ("energy_j", "runtime_s"))


def test_fits_file_interval_and_batch_are_validated(auto_fits, tmp_path):
    p = tmp_path / "fits.json"
    save_fits(auto_fits, p)
    good = json.loads(p.read_text())
    key = good["deployments"][0]["deployment"]

    def write(mut):
        d = json.loads(json.dumps(good))
        mut(d["deployments"][0])
        p.write_text(json.dumps(d))

    # null interval: explicitly no interval, so null bounds (never NaN)
    write(lambda e: e["targets"]["energy_j"].update(interval=None))
    pr = predict(load_fits(p), key, [8, 100], [8, 300])
    assert pr["energy_j_lo"].null_count() == 2 and pr["energy_j_hi"].null_count() == 2
    assert not pr["energy_j_lo"].is_nan().any() and pr["runtime_s_lo"].null_count() == 0
    for mut, needle in [
        (lambda e: e.update(batch="x"), r"deployments\[0\]\.batch='x'"),
        (lambda e: e.update(batch=0), r"deployments\[0\]\.batch=0"),
        (lambda e: e.update(batch=True), r"deployments\[0\]\.batch=True"),
        (lambda e: e["targets"]["energy_j"].update(interval="wide"), r"targets\.energy_j\.interval='wide'"),
        (lambda e: e["targets"]["runtime_s"]["interval"].update(q_lo="a"), r"targets\.runtime_s\.interval\.q_lo='a'"),
        (lambda e: e["targets"]["runtime_s"]["interval"].update(q_hi=None), r"targets\.runtime_s\.interval\.q_hi=None"),
    ]:
        write(mut)
        with pytest.raises(UserError, match=re.escape(str(p)) + ".*" + needle):
            load_fits(p)
    write(lambda e: e.update(batch="*"))
    assert load_fits(p).deployments[key].batch == "*"


def test_predict_refuses_a_batch_the_deployment_was_not_fitted_at(auto_fits):
    key = next(iter(auto_fits.deployments))
    assert predict(auto_fits, key, [8], [8], [1])["batch"].to_list() == [1]
    with pytest.raises(UserError, match="batch=4.*fitted at batch 1 only"):
        predict(auto_fits, key, [8], [8], [4])


def _with_idle(trials, watts=(80.0, 90.0, 130.0)):
    """Trials split into three sweeps with different idle baselines (and a fourth that measured none)."""
    sweep = np.arange(trials.height) % 4
    return trials.with_columns(pl.Series("sweep_id", [f"s{i}" for i in sweep]),
                               pl.Series("idle_w", np.array([*watts, np.nan])[sweep]).fill_nan(None))


def test_save_load_save_is_byte_identical(auto_fits, paper_fits, grid_trials, reference, tmp_path):
    """The typed records write back exactly the objects they were read from (fits.json unchanged)."""
    from llm_energy.fit.fits import paper_fits_from_coefficients

    pooled = fit_deployments(_with_idle(grid_trials.filter(pl.col("model") == "falcon-7b")), FitOptions(pool_batch=True))
    published = paper_fits_from_coefficients(reference / "wilkins2024" / "coefficients.json")
    for fits in (auto_fits, paper_fits, pooled, published):
        a, b = tmp_path / "a.json", tmp_path / "b.json"
        save_fits(fits, a)
        save_fits(load_fits(a), b)
        assert a.read_text() == b.read_text()


def test_idle_power_is_carried_into_the_fits_file(grid_trials, tmp_path):
    one = _with_idle(grid_trials.filter(pl.col("model") == "Llama-2-7b-chat-hf"))
    fits = fit_deployments(one, FitOptions(form="paper"))
    (d,) = fits.deployments.values()
    assert d.idle_w == pytest.approx(90.0)  # the median over the three sweeps that measured one
    p = tmp_path / "fits.json"
    save_fits(fits, p)
    doc = json.loads(p.read_text())
    assert doc["deployments"][0]["idle_w"] == pytest.approx(90.0)
    assert load_fits(p).deployments[d.deployment].idle_w == pytest.approx(90.0)
    # imported data without an idle baseline: None, written as null
    (imp,) = fit_deployments(grid_trials.filter(pl.col("model") == "Llama-2-7b-chat-hf"),
                             FitOptions(form="paper")).deployments.values()
    assert imp.idle_w is None
    # an old fits file without the key still loads, with idle_w None
    del doc["deployments"][0]["idle_w"]
    p.write_text(json.dumps(doc))
    assert load_fits(p).deployments[d.deployment].idle_w is None
    for bad in (-1, "80 W", True, float("inf")):
        doc["deployments"][0]["idle_w"] = bad
        p.write_text(json.dumps(doc))
        with pytest.raises(UserError, match=re.escape(str(p)) + r".*deployments\[0\]\.idle_w="):
            load_fits(p)


def test_deployment_key_is_one_definition_for_scalars_and_frames():
    from llm_energy.fit.fits import deployment_key, deployment_key_expr

    rows = pl.DataFrame({"model": ["m", "m", "m", "m"], "node_type": ["h100", "cpu", "cpu", "a100"],
                         "n_gpus": [4, 0, None, 1], "backend": ["static", "cache", "cache", "cache"],
                         "batch": [1, 8, 2, 16]}, schema_overrides={"n_gpus": pl.Int32, "batch": pl.Int32})
    keys = rows.select(deployment_key_expr().alias("k"), deployment_key_expr(pool_batch=True).alias("p"))
    want = [deployment_key(r["model"], r["node_type"], r["n_gpus"], r["backend"], r["batch"])
            for r in rows.iter_rows(named=True)]
    assert keys["k"].to_list() == want == ["m@h100x4/static/b1", "m@cpu/cache/b8", "m@cpu/cache/b2", "m@a100x1/cache/b16"]
    assert keys["p"].to_list() == [deployment_key(r["model"], r["node_type"], r["n_gpus"], r["backend"], "*")
                                   for r in rows.iter_rows(named=True)]


def test_find_fit_by_key_or_by_parts():
    from llm_energy.fit.fits import DeploymentFit, DeploymentKey, FitsFile, TargetModel, deployment_key, find_fit

    def dep(model, node, gpus):
        key = deployment_key(model, node, gpus, "cache", 1)
        t = TargetModel("paper", ["tin"], [1.0])
        return key, DeploymentFit(key, model, node, gpus, "cache", 1, {"energy_j": t, "runtime_s": t})

    fits = FitsFile(dict([dep("m", "cpu", 0), dep("m", "cpu2", 0), dep("m", "h100", 1), dep("m", "h100", 2)]))
    assert find_fit(fits, "m@h100x2/cache/b1").n_gpus == 2
    # by parts: a node type is never matched by its prefix (cpu is not cpu2), the GPU count is part of it
    assert find_fit(fits, DeploymentKey("m", "cpu", None, "cache", 1)).deployment == "m@cpu/cache/b1"
    assert find_fit(fits, DeploymentKey("m", "h100", 1, "cache", 1)).deployment == "m@h100x1/cache/b1"
    with pytest.raises(UserError, match=r"m@h100\[xN\]/cache/b1.*matches m@h100x1/cache/b1, m@h100x2/cache/b1"):
        find_fit(fits, DeploymentKey("m", "h100", None, "cache", 1))
    with pytest.raises(UserError, match=r"F\.json: deployment='m@h100x1/cache/b4' not in the fits file; it has: m@cpu"):
        find_fit(fits, DeploymentKey("m", "h100", 1, "cache", 4), source="F.json")
    with pytest.raises(UserError, match=r"deployment='nope' not in the fits file"):
        find_fit(fits, "nope")
