"""The Polars integration against analytic energies of known power profiles."""

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_energy.measure.integrate import counter_total, window_energy


def trace(power, t_end=3.0, poll=0.02, update=0.1, offset=0.003, node="n", device="gpu0", counter0=5000.0):
    """Samples of a power profile as a meter would report them: instant power polled every `poll` s and
    a cumulative counter that only changes every `update` s (its value at the last update)."""
    ts = np.arange(0.0, t_end, poll) + offset
    fine = np.linspace(0.0, t_end, 30001)
    cum = np.concatenate([[0.0], np.cumsum((power(fine[1:]) + power(fine[:-1])) / 2 * np.diff(fine))])
    energy = lambda t: np.interp(t, fine, cum)  # noqa: E731
    last_update = np.floor(ts / update) * update
    rows = []
    for t, u in zip(ts, last_update):
        rows.append((t, t, node, device, "nvml-power", float(power(np.array([t]))[0]), None))
        rows.append((t, t, node, device, "nvml-counter", None, counter0 + float(energy(u))))
    df = pl.DataFrame(rows, schema=["t_wall", "t_mono", "node", "device", "source", "watts", "joules"], orient="row")
    return df, energy


def windows(*spans, node="n"):
    return pl.DataFrame({
        "trial_id": [f"w{i}" for i in range(len(spans))], "node": [node] * len(spans),
        "t_start_mono": [a for a, _ in spans], "t_end_mono": [b for _, b in spans],
    })


def get(out, trial, source):
    row = out.filter((pl.col("trial_id") == trial) & (pl.col("source") == source))
    assert row.height == 1, out
    return row.row(0, named=True)


def step_power(t):
    return np.where(t < 1.0, 70.0, 310.0)


def test_counter_and_trapezoid_match_analytic_energy():
    s, energy = trace(step_power)
    spans = [(0.15, 0.45), (0.5, 1.5), (1.6, 2.85)]  # windows of a node never overlap
    out = window_energy(s, windows(*spans))
    for i, (a, b) in enumerate(spans):
        true = energy(b) - energy(a)
        c = get(out, f"w{i}", "nvml-counter")
        p = get(out, f"w{i}", "nvml-power")
        assert c["method"] == "counter" and p["method"] == "trapezoid"
        assert c["energy_j"] == pytest.approx(true, rel=0.02)
        assert p["energy_j"] == pytest.approx(true, rel=0.02)
        assert p["peak_w"] == pytest.approx(310.0 if b > 1.0 else 70.0)
        assert p["mean_w"] == pytest.approx(true / (b - a), rel=0.02)


def test_counter_interpolation_beats_edge_reads_on_short_windows():
    # a 250 ms window at 310 W: raw edge reads of a 100 ms counter can be off by up to 2 x 31 J
    s, energy = trace(step_power)
    a, b = 1.537, 1.787
    out = window_energy(s, windows((a, b)))
    true = energy(b) - energy(a)
    assert get(out, "w0", "nvml-counter")["energy_j"] == pytest.approx(true, rel=0.05)


def test_window_without_samples_uses_nearest_reading():
    s, energy = trace(step_power, poll=0.05)
    out = window_energy(s, windows((2.311, 2.318)))
    p = get(out, "w0", "nvml-power")
    assert p["n_samples"] == 0
    assert p["energy_j"] == pytest.approx(310.0 * 0.007)


def test_nodes_are_kept_apart():
    a, _ = trace(lambda t: np.full_like(t, 100.0), node="a")
    b, _ = trace(lambda t: np.full_like(t, 200.0), node="b")
    w = pl.concat([windows((1.0, 2.0), node="a"), windows((1.0, 2.0), node="b").with_columns(trial_id=pl.lit("wb"))])
    out = window_energy(pl.concat([a, b]), w)
    assert get(out, "w0", "nvml-power")["energy_j"] == pytest.approx(100.0, rel=1e-6)
    assert get(out, "wb", "nvml-power")["energy_j"] == pytest.approx(200.0, rel=1e-6)


def test_counter_total():
    s, energy = trace(step_power)
    tot = counter_total(s)
    assert tot.height == 1
    assert tot["energy_j"][0] == pytest.approx(energy(2.9), rel=0.01)


@settings(max_examples=25, deadline=None)
@given(
    level=st.floats(50, 700), start=st.floats(0.2, 2.0), length=st.floats(0.3, 0.9),
)
def test_constant_power_any_window(level, start, length):
    s, _ = trace(lambda t: np.full_like(t, level))
    out = window_energy(s, windows((start, start + length)))
    for src in ("nvml-counter", "nvml-power"):
        assert get(out, "w0", src)["energy_j"] == pytest.approx(level * length, rel=0.01)


def test_interleaved_devices_with_varying_power():
    # two devices on one node with different, time-varying power: the per-window integration must
    # keep each device's samples in time order (a wrong order breaks the trapezoid, not the sum)
    a, ea = trace(lambda t: 100 + 80 * np.sin(3 * t), device="gpu0", offset=0.001)
    b, eb = trace(lambda t: 300 - 120 * np.cos(5 * t), device="gpu1", offset=0.011)
    s = pl.concat([b, a]).sample(fraction=1.0, shuffle=True, seed=1)
    spans = [(0.2, 0.9), (1.0, 2.1), (2.2, 2.9)]
    out = window_energy(s, windows(*spans))
    for i, (lo, hi) in enumerate(spans):
        for dev, e in (("gpu0", ea), ("gpu1", eb)):
            row = out.filter((pl.col("trial_id") == f"w{i}") & (pl.col("device") == dev))
            for method in ("counter", "trapezoid"):
                got = row.filter(pl.col("method") == method)["energy_j"][0]
                assert got == pytest.approx(e(hi) - e(lo), rel=0.02), (i, dev, method)
