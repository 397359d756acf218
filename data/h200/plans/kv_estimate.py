"""A sensitivity estimate, not a measurement: data/h200/plans/fits.json with the KV-cache reads its
stores' decode steps did not do added to every energy fit (docs/h200_plans.md, "The stores' decode
did not read the KV cache").

The stores were measured on transformers 5.17, which silently ignored the ``cache=`` keyword the
backends passed (commit e5b5c49): every decode step attended to itself only. A real step at context
L also reads the KV cache of L tokens. If a decode step's time (and, at its measured power, its
energy) grows by the time those bytes take at the measured HBM bandwidth, a query (tin, tout) costs

    dE = c_K * sum_{j<tout} (tin + j) ~= c_K * (tin * tout + tout^2 / 2)
    c_K = J_tok * (kv_bytes_per_token / bandwidth) / step_time

more, J_tok the fit's own energy per output token (at tin 8, tout 1024..2048). That is added to the
fits' tin*tout and tout^2 coefficients (every chosen energy form has both). Sources of the constants:
KV MiB per 1k tokens from `llm-energy models`; step times (ms/step, from the stores) and bandwidth
from docs/h200.md (H200: 4.204 TB/s) and docs/h100.md (H100: 3.00 TB/s, llama-2-7b 6.12 ms/step).
Mistral-7b's 4,096-token attention window is ignored (it would cap its correction).

    .venv/bin/python data/h200/plans/kv_estimate.py data/h200/plans/fits.json data/h200/plans/fits.kv-estimate.json
"""

import json
import sys

import numpy as np

from llm_energy.fit.fits import load_fits, predict

KV_MIB_PER_1K = {"llama-2-7b": 500.0, "llama-2-13b": 781.2, "llama-2-70b": 312.5, "mistral-7b": 125.0,
                 "mixtral-8x7b": 125.0, "falcon-7b": 7.8}
STEP_MS = {("llama-2-7b", "h200"): 4.81, ("llama-2-13b", "h200"): 7.85, ("llama-2-70b", "h200"): 36.14,
           ("mistral-7b", "h200"): 5.08, ("mixtral-8x7b", "h200"): 12.46, ("falcon-7b", "h200"): 4.52,
           ("llama-2-7b", "h100"): 6.12}
BANDWIDTH = {"h200": 4.204e12, "h100": 3.00e12}


def main(src: str, dst: str) -> None:
    doc = json.load(open(src))
    fits = load_fits(src)
    for dep in doc["deployments"]:
        key, model, node = dep["deployment"], dep["model"], dep["node_type"]
        e = predict(fits, key, np.array([8, 8]), np.array([1024, 2048]), None, per_request=True)["energy_j"].to_numpy()
        j_tok = (e[1] - e[0]) / 1024
        kv_bytes = KV_MIB_PER_1K[model] * 2**20 / 1000
        c = j_tok * (kv_bytes / BANDWIDTH[node]) / (STEP_MS[(model, node)] / 1000)
        t = dep["targets"]["energy_j"]
        t["coef"][t["terms"].index("tin*tout")] += c
        t["coef"][t["terms"].index("tout^2")] += c / 2
        t["kv_estimate"] = {"c_j": c, "j_per_output_token": j_tok, "kv_bytes_per_token": kv_bytes,
                            "note": "added by data/h200/plans/kv_estimate.py: a sensitivity estimate"}
        print(f"{key}: J/token {j_tok:.3f}, c = {c:.3e} J per (context token x output token)")
    doc["source"] += " + data/h200/plans/kv_estimate.py"
    with open(dst, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
