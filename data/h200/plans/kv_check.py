"""The direct checks of kv_estimate.py: six presets on the H200 were measured twice, before the
kv-cache fix (data/h200/*-static, erratum kv-cache-ignored) and after it (data/h200/v2/*-static, the
cache read), on the same cells: llama-2-7b on the 81-cell grid, llama-2-13b, mistral-7b,
mixtral-8x7b, llama-2-70b and falcon-7b on the 27-cell third (falcon-7b with --beyond-context in both
stores: 6 of its cells run past its 2,048-token context). For each, apply kv_estimate.py to the fit of
the old store, predict the cells, and compare the estimated change with the measured one
(docs/h200_plans.md, "Erratum fits and the KV estimate"). The estimate itself is still applied to the
one fit that carries the erratum (llama-2-7b on the H100, data/h100/grid-static): these six are its
only tests.

    .venv/bin/python data/h200/plans/kv_check.py OLD_FITS NEW_FITS [TRACE.csv]
    # OLD_FITS: llm-energy fit of the six old stores; NEW_FITS: data/h200/fits.json (the six from v2)

Per cell (batch 1, warm-ups and erratum-excluded trials left out; medians over repeats): energy (=
J/token at a fixed tout) and decode ms/step (decode_s / (tout - 1)) measured in each store; the
estimate's energy change (old fit + c_K sum_j (tin + j) against the old fit) and its ms/step change
(KV bytes of the mean context / bandwidth against the old step); the v2 fit against the old fit.
Medians over the cells of each tout and of each static-cache bucket, and prefill ms by tin (old and
v2: a change there is not the erratum's, which concerned the decode steps); where some cells run past the
model's context (the fit's context_tokens: falcon-7b's 2,048), the medians over the cells within it
too. With a trace: all its queries within the model's context, total predicted energy by the old fit,
old fit + estimate, v2 fit.
"""

import json
import sys
import tempfile

import numpy as np
import polars as pl

sys.path.insert(0, "data/h200/plans")
from kv_estimate import BANDWIDTH, STEP_MS, add, estimate  # noqa: E402

from llm_energy.fit.fits import FitsFile, load_fits, predict  # noqa: E402
from llm_energy.trials.errata import excluded  # noqa: E402
from llm_energy.trials.store import load_trials  # noqa: E402

PAIRS = [("llama-2-7b", "data/h200/grid-static", "data/h200/v2/grid-static"),
         ("llama-2-13b", "data/h200/llama-2-13b-static", "data/h200/v2/llama-2-13b-static"),
         ("mistral-7b", "data/h200/mistral-7b-static", "data/h200/v2/mistral-7b-static"),
         ("mixtral-8x7b", "data/h200/mixtral-8x7b-static", "data/h200/v2/mixtral-8x7b-static"),
         ("llama-2-70b", "data/h200/llama-2-70b-static", "data/h200/v2/llama-2-70b-static"),
         ("falcon-7b", "data/h200/falcon-7b-static", "data/h200/v2/falcon-7b-static")]


def key(model: str) -> str:
    return f"{model}@h200x1/static/b1"


def bucket(n: np.ndarray) -> np.ndarray:
    return np.maximum(256, 2 ** np.ceil(np.log2(n))).astype(int)


def cells(store: str) -> pl.DataFrame:
    df = load_trials([store])
    df = df.filter(~excluded(df))  # the erratum replays each session's trial order: on the whole store
    df = df.filter(~pl.col("warmup") & (pl.col("batch") == 1) & (pl.col("quality") == "ok"))
    return df.group_by("tin", "tout").agg(e=pl.col("energy_j").median(),
                                          ms=(1e3 * pl.col("decode_s") / (pl.col("tout") - 1)).median(),
                                          pf=(1e3 * pl.col("prefill_s")).median(), n=pl.len())


def fits_with_estimate(path: str, k: str) -> tuple[FitsFile, FitsFile, dict, dict]:
    doc = json.load(open(path))
    old = load_fits(path)
    dep = next(d for d in doc["deployments"] if d["deployment"] == k)
    est = estimate(old, dep)
    add(dep, est)
    doc["deployments"] = [dep]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(doc, f)
    return old, load_fits(f.name), est, dep


def pct(x) -> str:
    return f"{100 * x:+.1f}%"


def compare(model: str, old_store: str, new_store: str, old: FitsFile, kv: FitsFile, new: FitsFile,
            est: dict) -> pl.DataFrame:
    k = key(model)
    j = cells(old_store).join(cells(new_store), on=["tin", "tout"], suffix="_v2").filter(pl.col("tout") > 8)
    j = j.sort("tin", "tout")
    tin, tout = j["tin"].to_numpy(), j["tout"].to_numpy()

    def e(f):
        return predict(f, k, tin, tout, None, per_request=True)["energy_j"].to_numpy()

    e_old, e_kv, e_new = e(old), e(kv), e(new)
    l_mean = tin + (tout - 1) / 2  # the mean context of the decode steps
    d_ms = 1e3 * est["kv_bytes_per_token"] * l_mean / BANDWIDTH["h200"]
    return j.with_columns(meas_e=pl.Series(j["e_v2"] / j["e"] - 1), est_e=pl.Series(e_kv / e_old - 1),
                          fit_e=pl.Series(e_new / e_old - 1), meas_ms=pl.Series(j["ms_v2"] / j["ms"] - 1),
                          est_ms=pl.Series(d_ms / j["ms"].to_numpy()), bucket=pl.Series(bucket(tin + tout)),
                          err_old=pl.Series(np.abs(e_old / j["e_v2"].to_numpy() - 1)),
                          err_kv=pl.Series(np.abs(e_kv / j["e_v2"].to_numpy() - 1)),
                          err_new=pl.Series(np.abs(e_new / j["e_v2"].to_numpy() - 1)))


def tables(j: pl.DataFrame) -> None:
    for by in ("tout", "bucket"):
        g = j.group_by(by).agg(pl.len().alias("cells"), *(pl.col(c).median() for c in
                               ("meas_ms", "est_ms", "meas_e", "est_e", "fit_e"))).sort(by)
        print(f"| {by} | cells | ms/step measured | ms/step estimate | energy measured | energy estimate | v2 fit / old fit |")
        print("|---|---|---|---|---|---|---|")
        for r in g.iter_rows(named=True):
            print(f"| {r[by]} | {r['cells']} | {pct(r['meas_ms'])} | {pct(r['est_ms'])} | {pct(r['meas_e'])} | "
                  f"{pct(r['est_e'])} | {pct(r['fit_e'])} |")
        print()


def within_context(j: pl.DataFrame, context: int) -> None:
    """The medians over the cells within the model's context, where some run past it."""
    inside = j.filter(pl.col("tin") + pl.col("tout") <= context)
    if inside.height == j.height:
        return
    print(f"within its {context}-token context ({inside.height} of {j.height} cells; the others measured with "
          f"--beyond-context): energy measured median {pct(inside['meas_e'].median())}, estimate "
          f"{pct(inside['est_e'].median())}; ms/step measured median {pct(inside['meas_ms'].median())}, "
          f"estimate {pct(inside['est_ms'].median())}")


def prefill(j: pl.DataFrame) -> None:
    """Prefill ms by tin (median over the matched cells), old store against v2: the erratum concerned the
    decode steps, so a change here is something else."""
    g = j.group_by("tin").agg(pl.col("pf").median(), pl.col("pf_v2").median()).sort("tin")
    print("prefill ms by tin (median over the cells), old -> v2: " + ", ".join(
        f"{r['tin']}: {r['pf']:.1f} -> {r['pf_v2']:.1f} ({pct(r['pf_v2'] / r['pf'] - 1)})" for r in g.iter_rows(named=True)))


def on_trace(trace: str, k: str, context: int, fits: dict[str, FitsFile]) -> dict:
    q = pl.read_csv(trace)
    ti, to = q["ContextTokens"].to_numpy(), q["GeneratedTokens"].to_numpy()
    keep = (ti + to <= context) & (ti >= 1) & (to >= 1)
    ti, to = ti[keep], to[keep]
    tot = {n: predict(f, k, ti, to, None, per_request=True)["energy_j"].clip(0).sum() for n, f in fits.items()}
    print(f"{trace}: {keep.sum()} queries within {context} tokens: old fit {tot['old'] / 1e6:.3f} MJ, "
          f"old + estimate {tot['kv'] / 1e6:.3f} MJ ({pct(tot['kv'] / tot['old'] - 1)}), "
          f"v2 fit {tot['v2'] / 1e6:.3f} MJ ({pct(tot['v2'] / tot['old'] - 1)})")
    return {n: tot[n] / tot["old"] - 1 for n in ("kv", "v2")}


def main(old_fits: str, new_fits: str, trace: str | None = None) -> None:
    new = load_fits(new_fits)
    summary = []
    for model, old_store, new_store in PAIRS:
        k = key(model)
        old, kv, est, dep = fits_with_estimate(old_fits, k)
        print(f"## {k}: {old_store} against {new_store}\n")
        print(f"c = {est['c_j']:.3e} J per (context x output token), J/token {est['j_per_output_token']:.3f} "
              f"(old fit, {old_fits}); step {STEP_MS[(model, 'h200')]} ms in kv_estimate.py\n")
        j = compare(model, old_store, new_store, old, kv, new, est)
        print(f"{j.height} matched cells (tout > 8); medians over cells. energy = J/token at the cell's tout; "
              f"estimate's step: KV bytes at mean context / {BANDWIDTH['h200'] / 1e12:.3f} TB/s over the old step\n")
        tables(j)
        print(f"all cells: energy measured median {pct(j['meas_e'].median())} (range {pct(j['meas_e'].min())}.."
              f"{pct(j['meas_e'].max())}), estimate {pct(j['est_e'].median())} ({pct(j['est_e'].min())}.."
              f"{pct(j['est_e'].max())}); ms/step measured median {pct(j['meas_ms'].median())} "
              f"({pct(j['meas_ms'].min())}..{pct(j['meas_ms'].max())}), estimate {pct(j['est_ms'].median())}")
        within_context(j, dep.get("context_tokens") or 4096)
        prefill(j)
        err = {n: f"{100 * j[c].median():.1f}% / {100 * j[c].quantile(0.9):.1f}%"
               for n, c in (("old", "err_old"), ("kv", "err_kv"), ("new", "err_new"))}
        print(f"|error| against the v2 cells, median / p90: old fit {err['old']}, old fit + estimate {err['kv']}, "
              f"v2 fit {err['new']}")
        tr = on_trace(trace, k, dep.get("context_tokens") or 4096, {"old": old, "kv": kv, "v2": new}) if trace else {}
        summary.append((model, j, tr))
        print()
    print("## summary\n")
    print("| model | cells | ms/step measured (median) | estimate | energy measured (median; range) | estimate | "
          "trace: estimate | trace: v2 fit |")
    print("|---|---|---|---|---|---|---|---|")
    for model, j, tr in summary:
        print(f"| {model} | {j.height} | {pct(j['meas_ms'].median())} | {pct(j['est_ms'].median())} | "
              f"{pct(j['meas_e'].median())} ({pct(j['meas_e'].min())}..{pct(j['meas_e'].max())}) | "
              f"{pct(j['est_e'].median())} | {pct(tr['kv']) if tr else '-'} | {pct(tr['v2']) if tr else '-'} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
