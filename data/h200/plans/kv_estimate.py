"""A sensitivity estimate, not a measurement: data/h200/plans/fits.json with the KV-cache reads its
erratum stores' decode steps did not do added to the energy fit of every deployment whose fit carries
the erratum ``kv-cache-ignored`` (its ``errata`` key; docs/h200_plans.md, "Erratum fits and the KV
estimate"). A fit without it is copied unchanged: since the refit on data/h200/v2 (measured with the
cache read) that is all six H200 fits, and only llama-2-7b@h100 (data/h100/grid-static) carries it.
kv_check.py applies ``estimate`` and ``add`` to the fits of the six erratum H200 stores, one at a time.

The erratum stores were measured on transformers 5.17, which silently ignored the ``cache=`` keyword
the backends passed (commit e5b5c49): every decode step attended to itself only. A real step at
context L also reads the KV cache of L tokens. If a decode step's time (and, at its measured power,
its energy) grows by the time those bytes take at the measured HBM bandwidth, a query (tin, tout) costs

    dE = c_K * sum_{j<tout} (tin + j) = c_K * (tin * tout + tout * (tout - 1) / 2)
    c_K = J_tok * (kv_bytes_per_token / bandwidth) / step_time

more, J_tok the fit's own energy per output token (at tin 8, tout 1024..2048). That is added to the
fit's ``sum_j(tin+j-0)+`` coefficient where the form has one (spline, roofline at knot 0), else to its
tin*tout and (halved) tout^2 coefficients (tout^2 / 2 for tout (tout - 1) / 2). Sources of the
constants: KV bytes per token from the preset's config (``ModelPreset.kv_bytes_per_token``, what
`llm-energy models` prints as KV MiB/1k tok: 2 x layers x KV heads x head_dim x 2 bytes, the KV heads
``num_key_value_heads`` (Llama-2 70B, Mistral, Mixtral: 8), or for Falcon 1 where ``multi_query`` is set
(falcon-7b: 71 query heads, one KV head, 8 KiB a token); step times (ms/step, from the erratum
stores) and bandwidth from docs/h200.md (H200: 4.204 TB/s) and docs/h100.md (H100: 3.00 TB/s,
llama-2-7b 6.12 ms/step). Mistral-7b's 4,096-token attention window is ignored (it would cap its
correction).

    .venv/bin/python data/h200/plans/kv_estimate.py data/h200/plans/fits.json data/h200/plans/fits.kv-estimate.json
    .venv/bin/python data/h200/plans/kv_estimate.py OLD.json OUT.json --all   # every fit (kv_check.py)
"""

import json
import sys

import numpy as np

from llm_energy.fit.fits import load_fits, predict
from llm_energy.measure.inference.presets import get_preset

ERRATUM = "kv-cache-ignored"
STEP_MS = {("llama-2-7b", "h200"): 4.81, ("llama-2-13b", "h200"): 7.85, ("llama-2-70b", "h200"): 36.14,
           ("mistral-7b", "h200"): 5.08, ("mixtral-8x7b", "h200"): 12.46, ("falcon-7b", "h200"): 4.52,
           ("llama-2-7b", "h100"): 6.12}
BANDWIDTH = {"h200": 4.204e12, "h100": 3.00e12}
SUM_L = "sum_j(tin+j-0)+"  # sum over the decode steps of the context L = tin + j


def kv_bytes_per_token(model: str) -> float:
    return float(get_preset(model).kv_bytes_per_token)


def estimate(fits, dep: dict) -> dict:
    """c_K (J per context token and output token) of one fits.json deployment entry, and its inputs."""
    key, model, node = dep["deployment"], dep["model"], dep["node_type"]
    e = predict(fits, key, np.array([8, 8]), np.array([1024, 2048]), None, per_request=True)["energy_j"].to_numpy()
    j_tok = (e[1] - e[0]) / 1024
    kv_bytes = kv_bytes_per_token(model)
    c = j_tok * (kv_bytes / BANDWIDTH[node]) / (STEP_MS[(model, node)] / 1000)
    return {"c_j": c, "j_per_output_token": j_tok, "kv_bytes_per_token": kv_bytes,
            "step_ms": STEP_MS[(model, node)], "bandwidth_bps": BANDWIDTH[node],
            "note": "added by data/h200/plans/kv_estimate.py: a sensitivity estimate"}


def add(dep: dict, est: dict) -> None:
    """Add c_K * sum_j (tin + j) to the entry's energy form, in place."""
    t, c = dep["targets"]["energy_j"], est["c_j"]
    if SUM_L in t["terms"]:
        t["coef"][t["terms"].index(SUM_L)] += c
    elif "tin*tout" in t["terms"] and "tout^2" in t["terms"]:
        t["coef"][t["terms"].index("tin*tout")] += c
        t["coef"][t["terms"].index("tout^2")] += c / 2
    else:
        raise SystemExit(f"{dep['deployment']}: energy form {t.get('form')} has neither {SUM_L} nor "
                         f"tin*tout and tout^2: {t['terms']}")
    t["kv_estimate"] = est


def main(src: str, dst: str, every: bool = False) -> None:
    doc = json.load(open(src))
    fits = load_fits(src)
    for dep in doc["deployments"]:
        key = dep["deployment"]
        if not every and ERRATUM not in (dep.get("errata") or []):
            print(f"{key}: no {ERRATUM} erratum (measured with the KV cache read): unchanged")
            continue
        est = estimate(fits, dep)
        add(dep, est)
        print(f"{key}: J/token {est['j_per_output_token']:.3f}, c = {est['c_j']:.3e} J per "
              f"(context token x output token), form {dep['targets']['energy_j'].get('form')}")
    doc["source"] += " + data/h200/plans/kv_estimate.py"
    with open(dst, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--all"]
    main(args[0], args[1], every="--all" in sys.argv[1:])
