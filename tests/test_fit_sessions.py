"""`llm-energy fit` says when the profiler sessions pooled in a deployment measured at different levels
(llm_energy/fit/sessions.py), on the committed H200 stores and on one with a known offset put in."""

from pathlib import Path

import polars as pl
import pytest

from llm_energy.cli import main
from llm_energy.fit.forms import FitOptions, fit_deployments
from llm_energy.fit.sessions import SPREAD_LIMIT, session_spreads, session_warnings
from llm_energy.trials.store import load_trials

H200 = Path(__file__).resolve().parents[1] / "data" / "h200" / "v2"


def _fit_warnings(capsys, store: Path, tmp_path, *extra) -> list[str]:
    capsys.readouterr()
    assert main(["fit", str(store), "--out", str(tmp_path / "fits.json"), *extra]) == 0
    return [ln for ln in capsys.readouterr().err.splitlines() if "its sessions measured" in ln]


def test_a_batch_store_grown_in_two_sessions_of_different_power_is_reported(capsys, tmp_path):
    """The 70B's static batch store: 7 cells from the eighth H200 session, 11 from the twelfth, at the same
    ms/step but not the same watts (and the thirteenth's 2, too few for a median of their own: not named)."""
    store = H200 / "batch-llama-2-70b-static"
    n = load_trials([str(store)]).group_by("session").len()
    sessions, few = (n.filter(c)["session"].to_list() for c in (pl.col("len") >= 3, pl.col("len") < 3))
    assert len(sessions) == 2 and len(few) == 1
    lines = _fit_warnings(capsys, store, tmp_path, "--pool-batch")
    assert len(lines) == 1 and lines[0].startswith("warning: llama-2-70b@h200x1/static/b*: ")
    assert all(s in lines[0] for s in sessions) and few[0] not in lines[0]


def test_two_sessions_at_one_level_say_nothing(capsys, tmp_path):
    store = H200 / "grid-static"  # 84 + 78 trials (2 of them suspect, left out): two profiler runs, calls 2 and 3 of the third H200 session
    assert load_trials([str(store)])["session"].n_unique() == 2
    assert _fit_warnings(capsys, store, tmp_path) == []


@pytest.mark.parametrize("offset,column", [(0.10, "energy_j"), (0.02, "energy_j"), (0.10, "energy_net_j")])
def test_an_offset_put_into_one_session_is_measured(offset, column):
    """The static grid with one session's energies (only the column the fit reads: gross, or net under
    --net) scaled by 1 + offset: the sessions' medians lie about offset apart (the pooled fit splits it), and
    only the 10% is reported."""
    t = load_trials([str(H200 / "grid-static")])
    first = t.sort("t_start")["session"][0]
    opts = FitOptions(energy_column=column)
    base = session_spreads(t, fit_deployments(t, opts), opts)
    t = t.with_columns(pl.when(pl.col("session") == first).then(pl.col(column) * (1 + offset))
                       .otherwise(pl.col(column)).alias(column))
    (s,) = session_spreads(t, fit_deployments(t, opts), opts)
    assert [lv.session for lv in s.levels][0] == first and all(lv.n >= 78 for lv in s.levels)
    assert s.spread("energy") == pytest.approx(offset, abs=base[0].spread("energy") + 0.005)
    assert s.spread("runtime") == pytest.approx(base[0].spread("runtime"), abs=1e-9)
    assert len(session_warnings([s])) == (1 if offset > SPREAD_LIMIT else 0)


def test_a_paper_form_fit_is_compared_on_requested_tokens_and_never_on_a_non_positive_value(grid_trials):
    """The authors' grid, split into two synthetic sessions, fitted with the paper form (fitted on the requested
    tokens; its a0 < 0 predicts energy <= 0 at 5-17 of each model's 81 cells): those trials count in no median,
    the others are compared on the tokens the form was fitted on."""
    import numpy as np

    from llm_energy.fit.fits import predict

    t = grid_trials.filter(~pl.col("warmup")).with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("s-even")).otherwise(pl.lit("s-odd")).alias("session"))
    opts = FitOptions(form="paper")
    fits = fit_deployments(t, opts)
    spreads = {s.deployment: s for s in session_spreads(t, fits, opts)}
    assert set(spreads) == set(fits.deployments)
    for dep, d in fits.deployments.items():
        g = t.filter(pl.col("model") == d.model)
        fitted = predict(fits, dep, g["tin"].to_numpy().astype(float), g["tout"].to_numpy().astype(float))["energy_j"]
        positive = fitted.to_numpy() > 0
        assert 0 < (~positive).sum() and sum(lv.n for lv in spreads[dep].levels) == positive.sum(), dep
        for lv in spreads[dep].levels:
            rows = g.filter(pl.col("session") == lv.session)
            f = predict(fits, dep, rows["tin"].to_numpy().astype(float), rows["tout"].to_numpy().astype(float))
            y, p = rows["energy_j"].to_numpy(), f["energy_j"].to_numpy()
            assert lv.energy == pytest.approx(np.median(y[p > 0] / p[p > 0] - 1.0)), (dep, lv.session)


def test_held_out_scores_read_the_paper_form_on_the_requested_tokens(grid_trials):
    """nested_holdout / batch_holdout score each row the way its form was fitted: the paper form on the requested
    tin, tout (497 of the authors' 566 trials generated other counts), the others on the actual ones. Before, the
    scorer predicted every form on the actual tokens, so the paper form's held-out errors were of a model it had not
    fitted."""
    import numpy as np

    from llm_energy.fit.fits import predict
    from llm_energy.fit.forms import _prepared
    from llm_energy.fit.validate import HoldoutErrors, _score

    t = grid_trials.filter(~pl.col("warmup") & pl.col("model").is_in(["falcon-7b", "Llama-2-13b-chat-hf"]))
    assert t.filter((pl.col("tin_actual") != pl.col("tin")) | (pl.col("tout_actual") != pl.col("tout"))).height > 0
    for form, tokens in (("paper", ("tin", "tout")), ("affine", ("_tin", "_tout"))):
        opts = FitOptions(form=form)
        fits = fit_deployments(t, opts)
        df = _prepared(t, opts, "trials").filter(~pl.col("_bad"))
        out = HoldoutErrors()
        _score(fits, df, out, opts.energy_column)
        for (dep,), g in df.group_by(["_dep"]):
            for target, col in (("energy_j", opts.energy_column), ("runtime_s", "runtime_s")):
                f = fits.deployments[dep].targets[target].form
                cols = ("tin", "tout") if f == "paper" else ("_tin", "_tout")
                assert cols == tokens or f != form, (dep, target, f)
                p = predict(fits, dep, g[cols[0]].to_numpy().astype(float), g[cols[1]].to_numpy().astype(float))
                want = p[target].to_numpy() / g[col].to_numpy() - 1.0
                np.testing.assert_allclose(np.sort(out.errors[(dep, target)]), np.sort(want), rtol=1e-9)


def test_the_warning_names_each_sessions_card_where_the_run_recorded_it(capsys, tmp_path):
    """The 70B's static batch store with each run's GPU given a UUID (the runs before the thirteenth session
    recorded none): the warning says which card measured which level; a session without one stays unnamed."""
    import json
    import shutil

    store = tmp_path / "s"
    shutil.copytree(H200 / "batch-llama-2-70b-static", store)
    m = json.loads((store / "manifest.json").read_text())
    runs = sorted((r for sw in m["sweeps"].values() for r in sw["runs"]), key=lambda r: r["created"])
    cards = {}
    for i, r in enumerate(runs[:-1]):  # the last run left without one
        cards[r["session"]] = r["meters"]["gpu0"]["uuid"] = f"GPU-{i:08x}-0000-test"
    (store / "manifest.json").write_text(json.dumps(m))
    from llm_energy.fit.sessions import session_cards

    assert session_cards([str(store)]) == cards
    (line,) = _fit_warnings(capsys, store, tmp_path, "--pool-batch")
    named = [s for s in cards if f"{s} on {cards[s][:12]} " in line]
    assert len(named) == 2  # the eighth and twelfth sessions; the thirteenth (2 trials, no card) has no median


@pytest.mark.parametrize("column", ["energy_j", "energy_net_j"])
def test_session_levels_take_a_known_offset_out_and_carry_it_into_the_interval(tmp_path, column):
    """The static grid with one session's energies (the column the fit reads: gross, or net under --net) scaled by 1.10: fitted with the sessions as a factor, the two
    levels lie 10% apart, the model is the middle level (the offset-free fit x sqrt(1.1)), its within-session
    held-out error is the offset-free one's, and its energy interval is widened by the 10%."""
    import math

    import numpy as np

    from llm_energy.fit.fits import load_fits, predict, save_fits
    from llm_energy.fit.sessions import INTERVAL_METHOD, fit_session_levels

    t = load_trials([str(H200 / "grid-static")])
    first = t.sort("t_start")["session"][0]
    off = t.with_columns(pl.when(pl.col("session") == first).then(pl.col(column) * 1.10)
                         .otherwise(pl.col(column)).alias(column))
    opts = FitOptions(energy_column=column)
    (clean,) = fit_deployments(t, opts).deployments.values()
    base_spread = session_spreads(t, fit_deployments(t, opts), opts)[0].spread("energy")
    fits = fit_session_levels(off, opts, {first: "GPU-0000aaaa-test"})
    (d,) = fits.deployments.values()
    lv = {s.session: s for s in d.session_levels}
    assert set(lv) == set(t["session"].unique()) and lv[first].card == "GPU-0000aaaa-test"
    assert d.sessions_share_cells  # the grid's two runs measured the same 81 cells
    other = next(s for s in lv if s != first)
    assert (1 + lv[first].energy) / (1 + lv[other].energy) - 1 == pytest.approx(0.10, abs=base_spread + 0.005)
    assert abs(lv[first].runtime - lv[other].runtime) <= session_spreads(t, fit_deployments(t, opts), opts)[0].spread("runtime") + 1e-3
    cells = t.select("tin", "tout").unique()
    ratio = (predict(fits, d.deployment, cells["tin"], cells["tout"])["energy_j"].to_numpy()
             / predict(fit_deployments(t, opts), d.deployment, cells["tin"], cells["tout"])["energy_j"].to_numpy())
    assert np.median(ratio) == pytest.approx(math.sqrt(1.10), abs=0.01)
    e, c = d.targets["energy_j"], clean.targets["energy_j"]
    # the offset is out of the within-session error (which may fall below the offset-free pooled fit's: the
    # sessions' own levels are out of it too)
    assert e.cv.median <= c.cv.median + 0.003
    assert e.interval.method == INTERVAL_METHOD and e.interval.coverage_cv is None
    # held out with the levels (levels and fit from the other folds): the offset is out of that error too,
    # which a fit pooled over the offset sessions carries
    pooled = fit_deployments(off, opts).deployments[d.deployment].targets["energy_j"]
    assert e.cv_levels.median <= c.cv.median + 0.005 < pooled.cv.median
    assert d.targets["runtime_s"].cv_levels.median <= clean.targets["runtime_s"].cv.median + 0.005
    assert (e.interval.q_hi - e.interval.q_lo) >= (c.interval.q_hi - c.interval.q_lo) + 0.08
    save_fits(fits, tmp_path / "f.json")
    back = load_fits(tmp_path / "f.json").deployments[d.deployment]
    assert back.session_levels == d.session_levels and back.targets["energy_j"].cv_levels == e.cv_levels


def test_fit_session_levels_on_the_70b_batch_store(capsys, tmp_path):
    """The store the warning fires on: with --session-levels its energy is fitted at about the runtime's held-out
    error (the sessions' power levels were the pooled fit's error), the levels are printed and stored, and the
    warning is not repeated; a store of one session is fitted exactly as without the option."""
    import json

    store = H200 / "batch-llama-2-70b-static"
    capsys.readouterr()
    assert main(["fit", str(store), "--pool-batch", "--out", str(tmp_path / "pooled.json")]) == 0
    capsys.readouterr()
    assert main(["fit", str(store), "--pool-batch", "--session-levels", "--out", str(tmp_path / "lv.json")]) == 0
    err = capsys.readouterr().err
    assert "its sessions measured" not in err and err.count("levels: llama-2-70b@h200x1/static/b*: ") == 1
    assert "share no (tin, tout, batch) cell" in err  # session 8 measured batches 2 and 16, session 12 1, 4 and 8
    from llm_energy.fit.sessions import session_counts

    (counts,) = session_counts(load_trials([str(store)]), FitOptions(pool_batch=True)).values()
    few = [c for c in counts if c[1] < 3]
    assert len(counts) == 3 and len(few) == 1 and few[0][1] == 2  # the thirteenth session's last two cells
    assert f"; left at the middle level (fewer than 3 trials): {few[0][0]} (2 trials)" in err
    whole = json.loads((tmp_path / "lv.json").read_text())["deployments"][0]["targets"]
    assert (f"held out with the levels (the whole procedure): energy {100 * whole['energy_j']['cv_levels']['median']:.1f}%"
            in err) and whole["energy_j"]["cv_levels"]["median"] < 0.02 and whole["runtime_s"]["cv_levels"]["folds"] == 5
    pooled, lv = (json.loads((tmp_path / f).read_text())["deployments"][0] for f in ("pooled.json", "lv.json"))
    e0, e1 = pooled["targets"]["energy_j"], lv["targets"]["energy_j"]
    assert e1["cv"]["median"] < 0.5 * e0["cv"]["median"] and e1["cv"]["median"] < 0.02
    assert len(lv["session_levels"]) == 2 and "session_levels" not in pooled
    spread = max(s["energy"] for s in lv["session_levels"]) - min(s["energy"] for s in lv["session_levels"])
    assert spread > 0.10 and e1["interval"]["method"] == "cv-conformal-ratio+session-levels"
    one = H200 / "mistral-7b-static+gqa+math"  # one session
    for name, extra in (("a.json", []), ("b.json", ["--session-levels"])):
        assert main(["fit", str(one), "--out", str(tmp_path / name), *extra]) == 0
    a, b = (json.loads((tmp_path / f).read_text())["deployments"] for f in ("a.json", "b.json"))
    assert a == b


@pytest.fixture(scope="module")
def levelled_doc(tmp_path_factory):
    """The 70B static batch store fitted with --session-levels, as a fits document."""
    import json

    f = tmp_path_factory.mktemp("lv") / "fits.json"
    assert main(["fit", str(H200 / "batch-llama-2-70b-static"), "--pool-batch", "--session-levels", "--out", str(f)]) == 0
    return json.loads(f.read_text())


@pytest.mark.parametrize("bad,field", [
    ({"session": "a", "n": "seven", "energy": 0.1, "runtime": 0.0}, "session_levels[0].n='seven'"),
    ({"session": "a", "n": 7, "energy": "big", "runtime": 0.0}, "session_levels[0].energy='big'"),
    ({"session": "a", "n": 7, "energy": 0.1, "runtime": -1.5}, "session_levels[0].runtime=-1.5"),
    ({"session": "", "n": 7, "energy": 0.1, "runtime": 0.0}, "session_levels[0].session=''"),
    ({"session": "a", "n": 7, "energy": 0.1, "runtime": 0.0, "card": 7}, "session_levels[0].card=7"),
    ("x", "session_levels[0]='x'"),
])
def test_a_bad_session_level_in_a_fits_file_is_one_line_naming_it(tmp_path, capsys, levelled_doc, bad, field):
    import copy
    import json

    f = tmp_path / "fits.json"
    doc = copy.deepcopy(levelled_doc)
    assert doc["deployments"][0]["session_levels"]
    doc["deployments"][0]["session_levels"] = [bad]
    f.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["predict", str(f), "--tin", "64", "--tout", "64", "--batch", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(f) in err[0] and field in err[0] and "Traceback" not in err[0]


def test_a_session_whose_fitted_runtimes_are_all_non_positive_has_no_runtime_level(grid_trials):
    """The paper form predicts runtime <= 0 at some short cells of the authors' 70B grid; those trials in a session
    of their own gave a null runtime median, which crashed the spreads (float(None))."""
    import numpy as np

    from llm_energy.fit.fits import predict

    t = grid_trials.filter(~pl.col("warmup") & (pl.col("model") == "Llama-2-70b-chat-hf"))
    opts = FitOptions(form="paper")
    (dep,) = fit_deployments(t, opts).deployments
    fits = fit_deployments(t, opts)
    p = predict(fits, dep, t["tin"].to_numpy().astype(float), t["tout"].to_numpy().astype(float))
    odd = (p["runtime_s"].to_numpy() <= 0) & (p["energy_j"].to_numpy() > 0)
    assert odd.sum() >= 3
    t = t.with_columns(pl.Series("session", np.where(odd, "s-odd", "s-rest")))
    (s,) = session_spreads(t, fits, opts)
    lv = {x.session: x for x in s.levels}
    assert lv["s-odd"].runtime == 0.0 and lv["s-odd"].n == odd.sum()


def test_the_whole_procedure_holds_out_every_trial_of_a_folds_cells(monkeypatch):
    """``procedure_cv`` deals the cells into folds as the fit's cross-validation does (over every fitted
    trial, of a session or none: a store grown across the change that started recording sessions), and
    each fold's training trials hold none of its cells (the first version dealt only the trials with a
    session, so a held-out cell's trials without one stayed in training)."""
    import numpy as np

    from llm_energy.fit import sessions
    from llm_energy.fit.forms import fold_of

    t = load_trials([str(H200 / "grid-static")]).with_row_index("_i")
    t = t.with_columns(pl.when(pl.col("_i") % 3 == 0).then(None).otherwise(pl.col("session")).alias("session")).drop("_i")
    opts = FitOptions()
    (dep,) = fit_deployments(t, opts).deployments
    trains = []
    real = sessions.fit_session_levels

    def spy(train, *a, **kw):
        trains.append(train)
        return real(train, *a, **kw)

    monkeypatch.setattr(sessions, "fit_session_levels", spy)
    cv = sessions.procedure_cv(t, dep, opts)
    fitted = t.filter(~pl.col("warmup"))
    key = pl.concat_str([pl.coalesce(f"{c}_actual", c).cast(pl.Float64).cast(pl.String) for c in ("tin", "tout")]
                        + [pl.col("batch").cast(pl.Float64).cast(pl.String)], separator="-")
    cells = fitted.select(key).to_series().to_numpy()
    fold = fold_of(cells, opts.folds, opts.seed)
    assert len(trains) == len(np.unique(fold)) == cv["energy_j"].folds == 5
    for k, train in enumerate(trains):
        held = set(cells[fold == k])
        in_train = set(train.filter(~pl.col("warmup")).select(key).to_series().to_list())
        assert not held & in_train and in_train | held == set(cells), k


def _offset_grid(column: str = "energy_j", offset: float = 0.10):
    """The static grid with its first session's energies scaled by 1 + offset, its two sessions given cards."""
    t = load_trials([str(H200 / "grid-static")])
    first = t.sort("t_start")["session"][0]
    other = next(s for s in t["session"].unique().to_list() if s != first)
    off = t.with_columns(pl.when(pl.col("session") == first).then(pl.col(column) * (1 + offset))
                         .otherwise(pl.col(column)).alias(column))
    return t, off, {first: "GPU-0000aaaa-0000-test", other: "GPU-0000bbbb-0000-test"}, first


def test_level_card_puts_the_model_at_that_cards_level_not_the_middle(tmp_path):
    """The grid with one session 10% above the other (each on its own card): --level-card of the high card gives
    the offset-free fit x 1.10, of the low card x 1.00 (the middle, without it: x sqrt(1.1)); the card's session
    then sits at level 0, the other 10% below or above; level_card is stored and read back; and the whole
    procedure's held-out error is as small as at the middle (the levels come from training trials there too)."""
    import math

    import numpy as np

    from llm_energy.fit.fits import load_fits, predict, save_fits
    from llm_energy.fit.sessions import fit_session_levels

    t, off, cards, first = _offset_grid()
    opts = FitOptions()
    clean = fit_deployments(t, opts)
    (dep,) = clean.deployments
    cells = t.select("tin", "tout").unique()

    def ratio(fits):
        return float(np.median(predict(fits, dep, cells["tin"], cells["tout"])["energy_j"].to_numpy()
                               / predict(clean, dep, cells["tin"], cells["tout"])["energy_j"].to_numpy()))

    middle = fit_session_levels(off, opts, cards)
    high = fit_session_levels(off, opts, cards, level_card="GPU-0000aaaa-0000-test")
    low = fit_session_levels(off, opts, cards, level_card="GPU-0000bbbb-0000-test")
    assert ratio(middle) == pytest.approx(math.sqrt(1.10), abs=0.01) and middle.deployments[dep].level_card is None
    assert ratio(high) == pytest.approx(1.10, abs=0.01) and ratio(low) == pytest.approx(1.00, abs=0.01)
    h = high.deployments[dep]
    lv = {s.session: s for s in h.session_levels}
    assert h.level_card == "GPU-0000aaaa-0000-test" and abs(lv[first].energy) < 0.005
    assert (1 + lv[first].energy) / (1 + next(s for k, s in lv.items() if k != first).energy) == pytest.approx(1.10, abs=0.01)
    # the interval spans the other card from the model's level: the high card's reaches about 1.1^0.5 further
    # down than the middle's, the low card's as far further up
    iv, mid = (x.deployments[dep].targets["energy_j"].interval for x in (high, middle))
    lo_iv = low.deployments[dep].targets["energy_j"].interval
    assert (1 + iv.q_lo) / (1 + mid.q_lo) == pytest.approx(1 / math.sqrt(1.10), abs=0.01)
    assert (1 + lo_iv.q_hi) / (1 + mid.q_hi) == pytest.approx(math.sqrt(1.10), abs=0.01)
    assert h.targets["energy_j"].cv_levels.median <= middle.deployments[dep].targets["energy_j"].cv_levels.median + 0.003
    save_fits(high, tmp_path / "f.json")
    assert load_fits(tmp_path / "f.json").deployments[dep].level_card == "GPU-0000aaaa-0000-test"
    # a card neither session ran on alone: the middle, and no level_card
    both = fit_session_levels(off, opts, cards, level_card="GPU-0000aaaa-0000-test+GPU-0000bbbb-0000-test")
    assert both.deployments[dep].level_card is None and ratio(both) == pytest.approx(ratio(middle), abs=1e-9)


def test_a_card_is_resolved_from_a_prefix_naming_one_gpu_and_matched_whole():
    """--level-card's reference: a prefix must name one recorded GPU (every UUID starts "GPU-": that prefix names
    them all), a multi-GPU session is named by all its GPUs, and what is stored is the full card."""
    from llm_energy.errors import UserError
    from llm_energy.fit.sessions import on_card, resolve_card

    cards = {"s1": "GPU-aaaa1111", "s2": "GPU-aaaa2222", "s3": "GPU-bbbb3333+GPU-cccc4444"}
    assert resolve_card("GPU-aaaa1", cards) == "GPU-aaaa1111"
    assert resolve_card("GPU-cccc+GPU-bbbb", cards) == "GPU-bbbb3333+GPU-cccc4444"
    for bad, why in (("GPU-", "matches 4 GPUs"), ("GPU-aaaa", "matches 2 GPUs"), ("", "expected a card"),
                     ("GPU-dddd", "matches no GPU"), ("GPU-bbbb", "is no session's card"),
                     ("GPU-aaaa1+GPU-bbbb", "is no session's card")):
        with pytest.raises(UserError) as e:
            resolve_card(bad, cards)
        assert why in str(e.value) and "\n" not in str(e.value) and "GPU-aaaa1111" in str(e.value), bad
    assert on_card("GPU-b+GPU-c", "GPU-c+GPU-b") and not on_card("GPU-b+GPU-c", "GPU-b") and not on_card(None, "GPU-b")


def test_level_card_on_the_command_line(capsys, tmp_path):
    """`fit --level-card`: the stores' recorded card accepted by its prefix and named in the levels line; a
    card no session recorded, or the option without --session-levels, is one line naming it; a deployment with
    no levelled session on the card says it stays at the middle."""
    import json

    ab = H200 / "ab-batch-mistral-7b-static"  # the fifteenth session: its run recorded its card
    (card,) = {c for c in __import__("llm_energy.fit.sessions", fromlist=["x"]).session_cards([str(ab)]).values()}
    stores = [str(H200 / "mistral-7b-static"), str(ab), str(H200 / "grid-static")]
    out = tmp_path / "f.json"
    capsys.readouterr()
    assert main(["fit", *stores, "--session-levels", "--level-card", card[:12], "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"mistral-7b@h200x1/static/b1: sessions as a factor, the model at the level of card {card}" in err
    assert "levels: llama-2-7b@h200x1/static/b1: no session of 3 or more trials on card" in err
    docs = {d["deployment"]: d for d in json.loads(out.read_text())["deployments"]}
    assert docs["mistral-7b@h200x1/static/b1"]["level_card"] == card and "level_card" not in docs["llama-2-7b@h200x1/static/b1"]
    # a store measured on the card alone is at its level without levelling
    one = H200 / "batch1024-llama-2-7b-static+dynbatch"
    assert main(["fit", str(one), "--pool-batch", "--session-levels", "--level-card", card[:12],
                 "--out", str(tmp_path / "one.json")]) == 0
    assert json.loads((tmp_path / "one.json").read_text())["deployments"][0]["level_card"] == card
    capsys.readouterr()
    for extra, field in ((["--session-levels", "--level-card", "GPU-ffffffff"], "--level-card='GPU-ffffffff'"),
                         (["--session-levels", "--level-card", ""], "--level-card=''"),
                         (["--level-card", card], f"--level-card='{card}'")):
        assert main(["fit", *stores, *extra, "--out", str(tmp_path / "g.json")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and field in lines[0] and "Traceback" not in lines[0]
    assert not (tmp_path / "g.json").exists()


def test_a_bad_level_card_in_a_fits_file_is_one_line_naming_it(tmp_path, capsys, levelled_doc):
    import copy
    import json

    f = tmp_path / "fits.json"
    doc = copy.deepcopy(levelled_doc)
    doc["deployments"][0]["level_card"] = 7
    f.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["predict", str(f), "--tin", "64", "--tout", "64", "--batch", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(f) in err[0] and "level_card=7" in err[0]
