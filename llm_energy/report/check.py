"""``llm-energy check``'s session closure table (rows: :meth:`~llm_energy.measure.closure.SessionClosure.to_dict`)."""

from __future__ import annotations

from rich.table import Table

from llm_energy.measure.quality import short_card

CLOSURE_HEADER = "(trials + prepare + idle x rest) / counter"


def print_closure(console, sessions: list[dict]) -> None:
    """The table, and a line on what its columns mean (and on the sessions without prepare's energy)."""
    console.print(closure_table(sessions))
    console.print("rest: the time outside trial windows and prepare; rest J: its energy above idle (a heavy window's "
                  "power decaying through the cooldown and settle waits, the model loading)", markup=False, highlight=False)
    if any(not s["closure_counts_prepare"] for s in sessions):
        console.print("* prepare J not recorded (measured before it was): prepare's time counted as idle, the closure "
                      "is (trials + idle x outside) / counter", markup=False, highlight=False)


def closure_table(sessions: list[dict]) -> Table:
    """Per session and device: the card (its NVML UUID, shortened), the counter's total, the trials' and prepare's energy, the idle baseline, the
    rest's energy above idle (what the closure misses), the closure and the integrated power against the counter.
    A session from before prepare's energy was recorded shows ``-`` for it and its closure marked ``*``."""
    t = Table(title="session closure against the counter total")
    for col in ("session", "device", "card", "s", "counter J", "trials J", "prepare J", "idle W", "rest J", CLOSURE_HEADER,
                "power / counter"):
        t.add_column(col, justify="right")
    for c in sessions:
        new = c["closure_counts_prepare"]
        t.add_row(c["session"], c["device"], short_card(c.get("card")), f"{c['seconds']:.0f}", f"{c['counter_j']:.0f}", f"{c['trials_j']:.0f}",
                  f"{c['prepare_j']:.0f}" if new else "-", f"{c['idle_w']:.1f}", f"{c['rest_above_idle_j']:+.0f}",
                  f"{c['closure']:.4f}" + ("" if new else "*"), f"{c['power_closure']:.4f}")
    return t
