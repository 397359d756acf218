"""What every report figure shares: matplotlib (Agg), one colour per name across all figures, the
"estimate" mark, point labels that never overlap, and saving.

**Colours.** :class:`Palette` gives each name (a deployment key, a plan deployment) one colour, in the
order names are first added, so the same deployment has the same colour in every figure of a
report. The plan itself is always :data:`PLAN_COLOUR` and baselines :data:`BASELINE_COLOUR`; neither
is handed to a deployment.

**Estimate mark.** A figure showing energy that is an estimate (``energy_source`` ``estimate``, or an
imported estimate) carries a red band along its bottom edge naming what is estimated, and the PNG's
``Estimate`` text chunk says the same (``Image.open(png).text``); a figure with measured energy only
has neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from llm_energy.trials.schema import SOURCE_ESTIMATE

PLAN_COLOUR = "tab:red"
BASELINE_COLOUR = "0.55"
_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
            "#1b9e77", "#7570b3", "#e6ab02", "#66a61e", "#a6761d", "#386cb0", "#bf5b17", "#666666")
ESTIMATE_KEY = "Estimate"  # PNG text chunk written on figures that carry the mark
DPI = 100


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def is_estimate(source: str | None) -> bool:
    """True for energy that no meter measured: ``estimate`` (CPU utilisation x TDP), or an import of one."""
    s = (source or "").removeprefix("imported:")
    return s.startswith(SOURCE_ESTIMATE)


class Palette:
    """One colour per name, the same in every figure (names beyond the list cycle through it)."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._c: dict[str, str] = {}
        self.add(names)

    def add(self, names: Iterable[str]) -> Palette:
        for n in names:
            if n not in self._c:
                self._c[n] = _COLOURS[len(self._c) % len(_COLOURS)]
        return self

    def __call__(self, name: str) -> str:
        self.add([name])
        return self._c[name]


def short(name: str, n: int = 48) -> str:
    return name if len(name) <= n else name[: n - 3] + "..."


def figure_lines(files: Sequence[str]) -> list[str]:
    """Markdown image lines for ``files`` (alt text from the file name), a blank line after each."""
    return [line for f in files for line in (f"![{f.removesuffix('.png').replace('_', ' ')}]({f})", "")]


def layout(fig, estimate: Sequence[str] = ()) -> None:
    """tight_layout, leaving a strip at the bottom for the estimate mark when ``estimate`` names any."""
    fig.tight_layout(rect=(0, 0.07 if estimate else 0, 1, 1))
    if estimate:
        fig.text(0.5, 0.008, short("ESTIMATE, not measured: " + ", ".join(estimate), 110), ha="center",
                 va="bottom", fontsize=8, color="white", fontweight="bold", gid="estimate-mark",
                 bbox={"facecolor": "tab:red", "edgecolor": "none", "boxstyle": "round,pad=0.3"})


def save(fig, path: str | Path, estimate: Sequence[str] = ()) -> None:
    """Write the PNG (the ``Estimate`` text chunk when marked) and close the figure."""
    meta = {ESTIMATE_KEY: ", ".join(estimate)} if estimate else {}
    fig.savefig(path, dpi=DPI, metadata=meta)
    plt().close(fig)


def finish(fig, path: str | Path, estimate: Sequence[str] = ()) -> None:
    layout(fig, estimate)
    save(fig, path, estimate)


def _group_label(labels: list[str]) -> str:
    return ", ".join(labels) if len(labels) <= 3 else f"{labels[0]}..{labels[-1]}"


_OFFSETS = ((5, -11, "left"), (5, 4, "left"), (-5, 4, "right"), (-5, -11, "right"), (0, 9, "center"),
            (0, -16, "center"), (9, -4, "left"), (-9, -4, "right"), (12, 10, "left"), (-12, -20, "right"))


def label_points(ax, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], *, fontsize: float = 7,
                 color: str = "0.3") -> list:
    """Label points without any two labels overlapping: points drawn within 2 px of each other share
    one label (``0.2, 0.3``); each label tries a few offsets around its point and is left out where
    none is free (inside the axes, clear of every label placed). Call it after the figure's layout is
    final. Returns the labels drawn (matplotlib Text)."""
    fig = ax.figure
    fig.canvas.draw()  # limits are autoscaled at draw time: data -> pixels is final only after it
    renderer = fig.canvas.get_renderer()
    pix = ax.transData.transform(list(zip(xs, ys)))
    groups: list[tuple[tuple[float, float], list[str], float, float]] = []
    for (px, py), x, y, lab in zip(pix, xs, ys, labels):
        for g in groups:
            if abs(g[0][0] - px) <= 2 and abs(g[0][1] - py) <= 2:
                g[1].append(lab)
                break
        else:
            groups.append(((px, py), [lab], x, y))
    area = ax.get_window_extent(renderer)
    placed, boxes = [], []
    for _, labs, x, y in groups:
        for dx, dy, ha in _OFFSETS:
            t = ax.annotate(_group_label(labs), (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha,
                            fontsize=fontsize, color=color)
            bb = t.get_window_extent(renderer)
            inside = bb.x0 >= area.x0 and bb.x1 <= area.x1 and bb.y0 >= area.y0 and bb.y1 <= area.y1
            if inside and not any(bb.overlaps(b) for b in boxes):
                placed.append(t)
                boxes.append(bb)
                break
            t.remove()
    return placed
