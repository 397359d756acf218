"""The tables of docs/h200_plans.md, printed from the plans' summary.json (and assignment.parquet)
under data/h200/plans (run.sh makes them first):

    .venv/bin/python data/h200/plans/tables.py
"""

import json
from pathlib import Path

import polars as pl

D = Path("data/h200/plans")
MEASURED = ["llama-2-7b-h200", "llama-2-13b-h200", "llama-2-70b-h200", "mistral-7b-h200", "mixtral-8x7b-h200",
            "falcon-7b-h200", "llama-2-7b-h100", "falcon-40b-h200"]
SHORT = ["7b", "13b", "70b", "mistral", "mixtral", "falcon-7b", "7b-H100", "falcon-40b"]
PLANS = [("zeta 0", "z0"), ("zeta 0.5", "z0.5"), ("zeta 0.9", "z0.9"), ("zeta 1", "z1"),
         ("accuracy >= 55", "acc55"), ("accuracy >= 60", "acc60")]
# the plans compared with a variant of the measured set (the KV estimate, mistral-7b optimised)
VARIANT_PLANS = [("zeta 0.5", "z0.5"), ("zeta 0.9", "z0.9"), ("zeta 1", "z1"), ("zeta 1, min-share 0", "z1-ms0"),
                 ("accuracy >= 55", "acc55"), ("accuracy >= 60", "acc60")]
MS0 = [("zeta 0.5, min-share 0", "z0.5-ms0"), ("zeta 0.9, min-share 0", "z0.9-ms0"), ("zeta 1, min-share 0", "z1-ms0"),
       ("accuracy >= 55, min-share 0", "acc55-ms0"), ("accuracy >= 60, min-share 0", "acc60-ms0")]


def s(name: str) -> dict:
    return json.loads((D / name / "summary.json").read_text())


def share(d: dict, k: str) -> str:
    x = d["deployments"].get(k)
    return f"{100 * x['share']:.1f}" if x else "-"


def head(cols: list[str]) -> None:
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))


def row(cells: list) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |")


def plan_table(prefix: str, plans, deps: list[str], short: list[str]) -> None:
    head(["plan", "energy (MJ)", "J/query", "accuracy", *(f"{x} %" for x in short),
          "energy outside fitted range", "planned / unservable"])
    for label, name in plans:
        d = s(prefix + name)
        q = d["workload"]["queries"]
        row([f"{label} (`{prefix}{name}`)", f"{d['energy_j'] / 1e6:.2f}", f"{d['energy_j'] / q:.0f}",
             f"{d['accuracy']:.2f}", *(share(d, k) for k in deps),
             f"{100 * d['fitted_range']['energy_share_outside']:.1f}%", f"{q} / {d['beyond_context']['unservable']}"])
    print()


def saved_table(prefix: str, plans, extra=()) -> None:
    first = s(prefix + plans[0][1])
    names = [b["name"] for b in first["baselines"]]
    head(["plan", *(n.replace("-h200", "").replace("llama-2-", "") for n in names)])
    for label, name in [*plans, *extra]:
        d = s(prefix + name) if not name.startswith("/") else s(name[1:])
        by = {b["name"]: b for b in d["baselines"]}
        row([label, *(f"{by[n]['saved_pct']:.1f}{'' if by[n]['feasible'] else '*'}" for n in names)])
    z1 = s(prefix + "z1")
    row(["baseline energy (MJ)", *(f"{b['energy_j'] / 1e6:.2f}" for b in z1["baselines"])])
    row(["baseline accuracy", *(f"{b['accuracy']:.2f}" for b in z1["baselines"])])
    print()


def who_gets(name: str, dep: str) -> str:
    a = pl.read_parquet(D / name / "assignment.parquet").filter(pl.col("deployment") == dep)
    n = a["count_assigned"].sum()
    w = a["count_assigned"]
    long = a.filter(pl.col("tin") + pl.col("tout") > 4096)["count_assigned"].sum()
    over = a.filter(pl.col("tin") > 2048)["count_assigned"].sum()
    return (f"{name} {dep}: {n} queries, tin min {a['tin'].min()}, mean tin {(a['tin'] * w).sum() / n:.0f}, "
            f"mean tout {(a['tout'] * w).sum() / n:.0f}; tin > 2048: {over}; tin + tout > 4096: {long}")


def trace() -> None:
    q = pl.read_csv("data/azure-llm-2023/AzureLLMInferenceTrace_conv.csv")
    i, o = pl.col("ContextTokens"), pl.col("GeneratedTokens")
    out = (i > 2048) | (o > 2048) | (i < 8) | (o < 8)
    r = q.select(queries=pl.len(), classes=pl.struct(i, o).n_unique(), outside=out.sum(), tin_over=(i > 2048).sum(),
                 tin_under=(i < 8).sum(), tout_under=(o < 8).sum(), tout_over=(o > 2048).sum(),
                 tokens_outside=pl.when(out).then(i + o).otherwise(0).sum() / (i + o).sum(),
                 over_2048=(i + o > 2048).sum(), over_4096=(i + o > 4096).sum(),
                 tokens_over_4096=pl.when(i + o > 4096).then(i + o).otherwise(0).sum() / (i + o).sum(),
                 max_tin=i.max())
    print("trace:", r.row(0, named=True))


def no_context() -> None:
    print("\n## the context masks alone (h200nc*: every context_tokens 1000000) against the masked plans\n")
    for nc, m in (("h200nc-z1", "h200-z1"), ("h200ncllama-z1", "h200llama-z1"), ("h200ncllama-acc55", "h200llama-acc55"),
                  ("h200ncllama-acc60", "h200llama-acc60")):
        a, b = s(nc), s(m)
        print(f"{nc}: {a['workload']['queries']} queries, {a['energy_j'] / 1e6:.2f} MJ, {a['accuracy']:.2f}, "
              + " / ".join(f"{100 * v['share']:.1f}" for v in a["deployments"].values())
              + f" | {m}: {b['workload']['queries']} queries, {b['energy_j'] / 1e6:.2f} MJ, {b['accuracy']:.2f}, "
              + " / ".join(f"{100 * v['share']:.1f}" for v in b["deployments"].values()))
    z1, nz1 = s("h200llama-z1")["energy_j"], s("h200ncllama-z1")["energy_j"]
    for f in ("acc55", "acc60"):
        print(f"Llama-2 floor {f}: masked {s('h200llama-' + f)['energy_j'] / z1:.3f}x its zeta 1 plan, "
              f"unmasked {s('h200ncllama-' + f)['energy_j'] / nz1:.3f}x; "
              f"A100 (masked) {s('a100-' + f)['energy_j'] / s('a100-z1')['energy_j']:.3f}x")
    m1 = s("h200-z1-ms0")["energy_j"]
    for f in ("acc55-ms0", "acc60-ms0"):
        print(f"measured set floor {f}: {s('h200-' + f)['energy_j'] / m1:.4f}x h200-z1-ms0")


def gqa() -> None:
    """mistral-7b served optimised (h200gqa-*: static+gqa+math, fitted at one card's level) against static (h200-*)."""
    print("\n## mistral-7b optimised (h200gqa-*) against the measured set (h200-*)\n")
    deps = [d if d != "mistral-7b-h200" else "mistral-7b-h200-gqa" for d in MEASURED]
    head(["plan", "static: energy (MJ)", "accuracy", "7b / mistral %", "gqa+math: energy (MJ)", "accuracy",
          "7b / mistral %", "energy"])
    for label, name in VARIANT_PLANS:
        a, b = s("h200-" + name), s("h200gqa-" + name)
        row([f"{label} (`h200gqa-{name}`)", f"{a['energy_j'] / 1e6:.2f}", f"{a['accuracy']:.2f}",
             f"{share(a, 'llama-2-7b-h200')} / {share(a, 'mistral-7b-h200')}", f"{b['energy_j'] / 1e6:.2f}",
             f"{b['accuracy']:.2f}", f"{share(b, 'llama-2-7b-h200')} / {share(b, 'mistral-7b-h200-gqa')}",
             f"{100 * (b['energy_j'] / a['energy_j'] - 1):+.1f}%"])
    print()
    plan_table("h200gqa-", PLANS[1:], deps, [x if x != "mistral" else "mistral-gqa" for x in SHORT])
    a, b = ({x["name"]: x for x in s(p)["baselines"]} for p in ("h200-z1", "h200gqa-z1"))
    print(f"all on mistral-7b: static {a['only:mistral-7b-h200']['energy_j'] / 1e6:.2f} MJ, static+gqa+math "
          f"{b['only:mistral-7b-h200-gqa']['energy_j'] / 1e6:.2f} MJ "
          f"({100 * (b['only:mistral-7b-h200-gqa']['energy_j'] / a['only:mistral-7b-h200']['energy_j'] - 1):+.1f}%); "
          f"all on llama-2-7b {a['only:llama-2-7b-h200']['energy_j'] / 1e6:.2f} MJ; "
          f"round robin {a['round-robin']['energy_j'] / 1e6:.2f} -> {b['round-robin']['energy_j'] / 1e6:.2f} MJ")
    print(who_gets("h200gqa-z1-ms0", "mistral-7b-h200-gqa"))


def batch() -> None:
    """llama-2-7b at batch 1, 8 and 32 (h200batch-*), each alone on the trace."""
    print("\n## llama-2-7b batches on the trace (h200batch-*)\n")
    head(["batch", "energy MJ", "J a query", "mean latency s", "energy outside fitted range", "queries outside"])
    b1 = s("h200batch-b1")
    for b in (1, 8, 32):
        d = s(f"h200batch-b{b}")
        dep = d["deployments"][f"llama-2-7b-h200-b{b}"]
        q = d["workload"]["queries"]
        row([b, f"{d['energy_j'] / 1e6:.2f}", f"{d['energy_j'] / q:.0f}", f"{dep['runtime_s'] / dep['count']:.2f}",
             f"{100 * d['fitted_range']['energy_share_outside']:.1f}%", f"{int(d['fitted_range']['outside'])} of {q}"])
    print(f"batch 1 / 8: {b1['energy_j'] / s('h200batch-b8')['energy_j']:.2f}x, 1 / 32: "
          f"{b1['energy_j'] / s('h200batch-b32')['energy_j']:.2f}x")


def ratios() -> None:
    """The ratios docs/h200_plans.md cites, from the summaries' baselines and plans."""
    print("\n## ratios\n")
    b = {x["name"]: x["energy_j"] for x in s("h200-z1")["baselines"]}
    print(f"measured set all-on-one: only:llama-2-13b-h200 / only:mistral-7b-h200 "
          f"{b['only:llama-2-13b-h200'] / b['only:mistral-7b-h200']:.2f}x, only:llama-2-70b-h200 / "
          f"only:mixtral-8x7b-h200 {b['only:llama-2-70b-h200'] / b['only:mixtral-8x7b-h200']:.2f}x, "
          f"only:llama-2-7b-h100 / only:llama-2-7b-h200 {b['only:llama-2-7b-h100'] / b['only:llama-2-7b-h200']:.3f}x")
    z1, z1m = s("h200-z1")["energy_j"], s("h200-z1-ms0")["energy_j"]
    print(f"the 1% shares at zeta 1: h200-z1 / h200-z1-ms0 {z1 / z1m:.4f}x")
    h, a = s("h200llama-z1"), s("a100-z1")
    hb = {x["name"]: x["energy_j"] for x in h["baselines"]}
    ab = {x["name"]: x["energy_j"] for x in a["baselines"]}
    print(f"A100 / H200, Llama-2 only, zeta 1: J/query {a['energy_j'] / h['energy_j']:.1f}x, all-on-7B "
          f"{ab['only:llama-2-7b'] / hb['only:llama-2-7b-h200']:.1f}x; saved against round robin: A100 "
          f"{(ab['round-robin'] - a['energy_j']) / 1e6:.0f} MJ, H200 {(hb['round-robin'] - h['energy_j']) / 1e6:.1f} MJ")
    for n in ("13b", "70b"):
        print(f"all-on-one {n} / 7b: A100 {ab['only:llama-2-' + n] / ab['only:llama-2-7b']:.2f}x, "
              f"H200 {hb['only:llama-2-' + n + '-h200'] / hb['only:llama-2-7b-h200']:.2f}x")


def pareto_steps(name: str) -> None:
    p = pl.read_parquet(D / name / "pareto.parquet").sort("zeta", descending=True)
    z, e, a = p["zeta"].to_list(), p["energy_j"].to_list(), p["accuracy"].to_list()
    steps = [(f"{z[i]:.1f} -> {z[i + 1]:.1f}", (e[i + 1] - e[i]) / 1e6, a[i + 1] - a[i]) for i in range(len(z) - 1)]
    print(name, "steps (zeta, +MJ, +accuracy points, MJ per point):",
          "; ".join(f"{lab}: {de:+.2f}, {da:+.2f}, {de / da:.3f}" if da > 0 else f"{lab}: {de:+.2f}, {da:+.2f}"
                    for lab, de, da in steps))


def main() -> None:
    trace()
    print("## measured set\n")
    plan_table("h200-", PLANS, MEASURED, SHORT)
    plan_table("h200-", MS0, MEASURED, SHORT)
    print("saved % (* = the baseline breaks a constraint of the plan)\n")
    saved_table("h200-", PLANS, [(lab, "/h200-" + n) for lab, n in MS0])
    for name, dep in [("h200-z1", "mistral-7b-h200"), ("h200-z1-ms0", "mistral-7b-h200"),
                      ("h200-z0.5", "mixtral-8x7b-h200"), ("h200-z0.5-ms0", "mixtral-8x7b-h200"),
                      ("h200-acc60-ms0", "mistral-7b-h200"), ("h200-acc60-ms0", "mixtral-8x7b-h200"),
                      ("h200-z1", "falcon-7b-h200"), ("h200-z1", "falcon-40b-h200"), ("h200-acc60", "falcon-40b-h200"),
                      ("h200-z1", "mixtral-8x7b-h200"),
                      ("h200-z1-ms0", "llama-2-7b-h100"), ("h200nc-z1", "llama-2-7b-h100")]:
        print(who_gets(name, dep))
    print("\n## Llama-2 only: H200 and A100\n")
    head(["plan", "H200: energy (MJ)", "J/query", "accuracy", "7b / 13b / 70b %", "A100: energy (MJ)", "J/query",
          "accuracy", "7b / 13b / 70b %"])
    for label, name in PLANS:
        h, a = s("h200llama-" + name), s("a100-" + name)
        cells = [label]
        for d in (h, a):
            q = d["workload"]["queries"]
            cells += [f"{d['energy_j'] / 1e6:.2f}", f"{d['energy_j'] / q:.0f}", f"{d['accuracy']:.2f}",
                      " / ".join(f"{100 * v['share']:.1f}" for v in d["deployments"].values())]
        row(cells)
    print()
    for pre in ("h200llama-", "a100-"):
        print(pre)
        saved_table(pre, PLANS)
    for pre in ("h200llama-z1", "a100-z1", "a100-z0.5"):
        d = s(pre)
        print(pre, "planned", d["workload"]["queries"], "unservable", d["beyond_context"]["unservable"],
              "negative energy", d["negative_predictions"]["queries_energy"], d["negative_predictions"]["by_deployment"])
    for name in ("a100-z1", "a100-z0.5"):
        a = pl.read_parquet(D / name / "assignment.parquet").filter(pl.col("deployment") == "llama-2-13b")
        print(f"{name} llama-2-13b: {a['count_assigned'].sum()} queries, of which zero predicted energy: "
              f"{a.filter(pl.col('energy_j') <= 0)['count_assigned'].sum()}")
    print(who_gets("h200llama-acc55", "llama-2-70b-h200"))
    print(who_gets("h200llama-acc55", "llama-2-7b-h200"))
    print("\n## KV estimate (h200kv-*) against the measured fits\n")
    head(["plan", "energy (MJ)", "accuracy", "7b %", "mistral %", "mixtral %", "measured fits: energy (MJ), 7b / mistral %"])
    for label, name in VARIANT_PLANS:
        k, m = s("h200kv-" + name), s("h200-" + name)
        row([f"{label} (`h200kv-{name}`)", f"{k['energy_j'] / 1e6:.2f}", f"{k['accuracy']:.2f}",
             share(k, "llama-2-7b-h200"), share(k, "mistral-7b-h200"), share(k, "mixtral-8x7b-h200"),
             f"{m['energy_j'] / 1e6:.2f}; {share(m, 'llama-2-7b-h200')} / {share(m, 'mistral-7b-h200')}"])
    for name in ("z0.5", "z1"):
        k, m = s("h200kvllama-" + name), s("h200llama-" + name)
        print(f"h200kvllama-{name}: {k['energy_j'] / 1e6:.2f} MJ, "
              + " / ".join(f"{100 * v['share']:.1f}" for v in k["deployments"].values())
              + f"; measured h200llama-{name}: {m['energy_j'] / 1e6:.2f} MJ, "
              + " / ".join(f"{100 * v['share']:.1f}" for v in m["deployments"].values()))
    k, m = s("h200kv-z1"), s("h200-z1")
    kb = {b["name"]: b["energy_j"] for b in k["baselines"]}
    for b in m["baselines"]:
        if b["name"].startswith("only:"):
            print(f"{b['name']}: measured {b['energy_j'] / 1e6:.3f} MJ, kv estimate {kb[b['name']] / 1e6:.3f} MJ "
                  f"({100 * (kb[b['name']] / b['energy_j'] - 1):+.2f}%)")
    no_context()
    gqa()
    batch()
    print("\n## pareto\n")
    for name in ("h200-pareto", "h200llama-pareto", "a100-pareto"):
        p = pl.read_parquet(D / name / "pareto.parquet").sort("zeta")
        print(name, [(r["zeta"], round(r["energy_j"] / 1e6, 2), round(r["accuracy"], 2)) for r in p.iter_rows(named=True)])
    for name in ("h200-pareto", "h200llama-pareto", "a100-pareto"):
        pareto_steps(name)
    ratios()


if __name__ == "__main__":
    main()
