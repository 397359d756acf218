"""The results report end to end on stores the repository ships (data/h100/issue3, NVML-measured) and
on a copy of it relabelled as a CPU estimate: every figure written and named by the Markdown, the
estimate mark exactly where estimated energy is shown, one colour per deployment, the plan and route
sections, the power trace, and Pareto labels that never overlap."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from llm_energy.cli import main

REPO = Path(__file__).resolve().parents[1]
NVML = REPO / "data" / "h100" / "issue3"
FITS = REPO / "data" / "h100" / "fits.json"
ENERGY_FIGURES = ("measured_vs_predicted.png", "residual_heatmap.png", "j_per_token.png", "energy.png",
                  "power_trace.png")
ROUTE = {"policies": {
    "plan-shares": {"energy_j": 1.2e5, "idle_energy_j": 3.0e4, "total_energy_j": 1.5e5, "accuracy": 61.5,
                    "latency_p50_s": 1.5, "latency_p99_s": 9.25, "wait_p99_s": 2.5, "slo_violations": 3},
    "round-robin": {"energy_j": 2.0e5, "idle_energy_j": 3.0e4, "total_energy_j": 2.3e5, "accuracy": 60.9,
                    "latency_p50_s": 1.25, "latency_p99_s": 7.5, "wait_p99_s": 1.0, "slo_violations": 0}}}


def estimate_copy(dst: Path) -> Path:
    """issue3 with every trial's energy relabelled a CPU estimate (as the profiler writes with no meter)."""
    shutil.copytree(NVML, dst)
    for f in (dst / "trials").glob("*.parquet"):
        pl.read_parquet(f).with_columns(pl.lit("estimate").alias("energy_source")).write_parquet(f)
    return dst


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    return make_plan(tmp_path_factory.mktemp("plan"))


def make_plan(d: Path) -> Path:
    """``plan --pareto`` of 200 synthetic queries over issue3's three H100 fits, in ``d``/plan."""
    (d / "deploy.yaml").write_text("deployments:\n" + "".join(
        f"  - {{name: {n}, fit: 'llama-2-7b@h100x1/{b}/b1', accuracy: {a}}}\n"
        for n, b, a in (("h100-cache", "cache", 60), ("h100-nocache", "no-cache", 61), ("h100-static", "static", 62))))
    assert main(["workload", "synth", "--kind", "lognormal", "--n", "200", "--seed", "1", "--out", str(d / "w.csv")]) == 0
    assert main(["plan", "--fits", str(FITS), "--deployments", str(d / "deploy.yaml"), "--workload", str(d / "w.csv"),
                 "--pareto", "--out", str(d / "plan")]) == 0
    return d / "plan"


@pytest.fixture(scope="module")
def route_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("route")
    (d / "summary.json").write_text(json.dumps(ROUTE))
    return d


@pytest.fixture(scope="module")
def full_report(tmp_path_factory, plan_dir, route_dir):
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(NVML), "--fits", str(FITS), "--out", str(out), "--plan", str(plan_dir),
                 "--route", str(route_dir), "--grid-gco2-per-kwh", "400"]) == 0
    return out


def marked(png: Path) -> str | None:
    return Image.open(png).text.get("Estimate")


def test_every_figure_is_written_and_named_by_the_markdown(full_report):
    md = (full_report / "report.md").read_text()
    named = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert set(named) == {p.name for p in full_report.glob("*.png")}
    assert set(ENERGY_FIGURES) | {"plan.png", "plan_pareto.png"} <= set(named)
    for f in named:
        assert (full_report / f).stat().st_size > 5_000
    for section in ("## Energy per node and per deployment", "## Power trace", "## Plan", "### Baselines",
                    "### Pareto front", "## Online routing"):
        assert section in md
    assert "**chosen**" in md.split("### Pareto front")[1]


def test_measured_energy_carries_no_estimate_mark(full_report):
    md = (full_report / "report.md").read_text()
    assert "ESTIMATE" not in md and "Estimated energy" not in md
    for png in full_report.glob("*.png"):
        assert marked(png) is None, png.name


def test_estimated_energy_is_marked_on_every_figure_that_shows_it(tmp_path, plan_dir):
    est = estimate_copy(tmp_path / "est")
    out = tmp_path / "r"
    # fits made here, on estimated energy: the plan's predictions come from such fits
    assert main(["report", str(est), "--out", str(out), "--plan", str(plan_dir)]) == 0
    md = (out / "report.md").read_text()
    assert "**Estimated energy:**" in md
    for f in ("plan.png", "plan_pareto.png"):
        assert marked(out / f) == "llama-2-7b@h100x1/cache/b1, llama-2-7b@h100x1/no-cache/b1", f
    for f in ENERGY_FIGURES:  # the power trace shows one trial, of one deployment
        want = "llama-2-7b@h100x1/" if f == "power_trace.png" else "llama-2-7b@h100x1/cache/b1"
        assert want in (marked(out / f) or ""), f


def test_mixed_stores_mark_only_the_estimated_deployment(tmp_path):
    from llm_energy.fit.fits import load_fits
    from llm_energy.report.markdown import write_report
    from llm_energy.trials.store import load_trials

    est = tmp_path / "est"
    shutil.copytree(NVML, est)
    for f in (est / "trials").glob("*.parquet"):  # only the no-cache sweep becomes an estimate
        df = pl.read_parquet(f)
        df.with_columns(pl.when(pl.col("backend") == "no-cache").then(pl.lit("estimate"))
                        .otherwise(pl.col("energy_source")).alias("energy_source")).write_parquet(f)
    path = write_report(load_trials([str(est)]), load_fits(FITS), tmp_path / "r", stores=[str(est)])
    for f in ("measured_vs_predicted.png", "j_per_token.png", "energy.png"):
        assert marked(path.parent / f) == "llama-2-7b@h100x1/no-cache/b1", f


def test_one_colour_per_deployment_across_figures():
    from llm_energy.report.style import PLAN_COLOUR, Palette

    p = Palette(["b", "a"])
    assert p("b") != p("a") and p("a") == Palette(["b", "a"])("a")
    p.add(["c", "a"])
    assert p("b") == Palette(["b"])("b") and len({p(n) for n in "abc"}) == 3 and PLAN_COLOUR not in {p(n) for n in "abc"}


def test_energy_tables_and_carbon_equal_energy_times_intensity(full_report):
    from llm_energy.report.energy import per_node, usable, with_window_energy
    from llm_energy.report.carbon import GridIntensity
    from llm_energy.trials.store import load_trials

    trials, _ = usable(load_trials([str(NVML)]))
    df = with_window_energy(trials, GridIntensity.of_constant(400))
    node = per_node(df).row(0, named=True)
    window_j = float((trials["energy_j"] * trials["n_inner"].fill_null(1)).sum())
    assert node["window_j"] == pytest.approx(window_j)
    assert node["co2e_g"] == pytest.approx(window_j / 3.6e6 * 400)
    md = (full_report / "report.md").read_text()
    assert f"| {window_j / 1e3:.2f} | {window_j / 3.6e6:.4f} |" in md and f"| {window_j / 3.6e6 * 400:.3g} |" in md


def test_plan_and_route_carbon_use_the_constant(full_report, plan_dir):
    from llm_energy.plan.summary import PlanSummary

    s = PlanSummary.load(plan_dir)
    md = (full_report / "report.md").read_text()
    total = next(r for r in md.splitlines() if r.startswith("| **total** |"))
    assert f"| {s.energy_j / 1e3:.2f} | {s.energy_j / 3.6e6 * 400:.3g} |" in total
    rr = next(r for r in md.splitlines() if r.startswith("| round-robin | 200.00"))
    assert "| 230.00 | 25.6 | 60.90 | 1.25 | 7.5 | 1 | 0 |" in rr  # 2.3e5 J / 3.6e6 * 400 g


def test_power_trace_of_a_chosen_trial(tmp_path):
    from llm_energy.trials.store import load_trials

    tid = load_trials([str(NVML)]).filter(~pl.col("warmup"))["trial_id"][3]
    out = tmp_path / "r"
    assert main(["report", str(NVML), "--fits", str(FITS), "--out", str(out), "--trace-trial", tid]) == 0
    assert f"Trial {tid} " in (out / "report.md").read_text() and (out / "power_trace.png").exists()


def test_report_flag_errors_are_one_line(tmp_path, capsys):
    capsys.readouterr()
    for argv, want in ((["--trace-trial", "nope"], "--trace-trial='nope': no such trial"),
                       (["--plan", str(tmp_path)], f"--plan='{tmp_path}': no summary.json there"),
                       (["--route", str(tmp_path)], f"--route='{tmp_path}': no summary.json there")):
        assert main(["report", str(NVML), "--fits", str(FITS), "--out", str(tmp_path / "r"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert want in err and len(err.splitlines()) == 1, err
    (tmp_path / "summary.json").write_text('{"policies": [1, 2]}')
    assert main(["report", str(NVML), "--fits", str(FITS), "--out", str(tmp_path / "r"), "--route", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "summary.json: policies=list: not a route summary" in err and len(err.splitlines()) == 1


def test_pareto_labels_never_overlap():
    from llm_energy.report.style import label_points, plt

    fig, ax = plt().subplots(figsize=(5, 3.5))
    rng = np.random.default_rng(0)
    x = np.r_[np.linspace(0, 1, 30), [0.5, 0.5, 0.5]]
    y = np.r_[rng.random(30) * 0.1, [0.05, 0.05, 0.05]]
    ax.plot(x, y, "o")
    fig.tight_layout()
    texts = label_points(ax, x, y, [f"{v:.2g}" for v in np.linspace(0, 1, 33)])
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in texts]
    assert 0 < len(texts) < 33
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_identical_pareto_points_share_one_label():
    from llm_energy.report.style import label_points, plt

    fig, ax = plt().subplots()
    ax.plot([1, 2, 2, 3], [1, 2, 2, 3], "o")
    texts = label_points(ax, [1, 2, 2, 3], [1, 2, 2, 3], ["0", "0.2", "0.3", "1"])
    assert sorted(t.get_text() for t in texts) == ["0", "0.2, 0.3", "1"]


def test_suspect_trials_are_counted_and_left_out(tmp_path):
    from llm_energy.report.markdown import write_report
    from llm_energy.fit.fits import load_fits
    from llm_energy.trials.store import load_trials

    trials = load_trials([str(NVML)])
    bad = trials["trial_id"].is_in(trials["trial_id"].head(5).to_list())
    flagged = trials.with_columns(pl.when(bad).then(pl.lit("suspect:frozen")).otherwise(pl.lit("ok")).alias("quality"))
    md = write_report(flagged, load_fits(FITS), tmp_path / "r", stores=[str(NVML)]).read_text()
    kept = trials.filter(~bad)
    window_j = float((kept["energy_j"] * kept["n_inner"].fill_null(1)).sum())
    assert "**Suspect trials:** 5 trials" in md and "5 suspect trials left out" in md
    assert f"| {kept.height} | " in md and f"| {window_j / 1e3:.2f} | {window_j / 3.6e6:.4f} |" in md
