"""``llm-energy watch DIR``: the live view of a sweep running elsewhere (a Ray job, another terminal).

The cluster sweep mirrors its live view to ``DIR/progress.json`` (see :func:`llm_energy.report.live.write_progress`);
this command renders that file until every node is done or failed (or once, with ``--once``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from llm_energy.errors import bad_value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watch", help="show the live progress of a running cluster sweep",
                       description="Render DIR/progress.json (written by a cluster sweep, e.g. `ray job submit ... "
                                   "jobs/pipeline.py --out DIR`) as the per-node live view until the sweep ends.")
    p.add_argument("dir", help="the sweep's output directory (or its progress.json)")
    p.add_argument("--once", action="store_true", help="print the current view once and exit")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between refreshes (default 0.5)")
    p.add_argument("--wait-s", type=float, default=60.0,
                   help="how long to wait for progress.json to appear (default 60; 0 with --once)")
    p.set_defaults(func=cmd_watch)


def progress_path(d: str | Path) -> Path:
    p = Path(d)
    return p if p.name.endswith(".json") else p / "progress.json"


def finished(view) -> bool:
    return bool(view.rows) and all(t.state in ("done", "failed") for t in view.rows.values())


def cmd_watch(args: argparse.Namespace) -> int:
    from rich.live import Live

    from llm_energy.report.live import view_from_progress
    from llm_energy.report.tables import stdout_console

    if not args.interval > 0:
        raise bad_value("--interval", args.interval, "must be > 0 seconds")
    path = progress_path(args.dir)
    con = stdout_console()
    if not con.is_terminal:  # a pipe or a file: the whole table, not one cut to 80 columns
        import sys

        from rich.console import Console

        con = Console(file=sys.stdout, width=200)
    deadline = time.monotonic() + (0.0 if args.once else args.wait_s)
    view = view_from_progress(path, con)
    while view is None and time.monotonic() < deadline:
        time.sleep(args.interval)
        view = view_from_progress(path, con)
    if view is None and path.is_file():
        raise bad_value("watch", str(path), "not a progress file written by a sweep (unreadable, or another version)")
    if view is None:
        raise bad_value("watch", str(path), "no progress file (is a cluster sweep writing to this directory?)")
    if args.once or not con.is_terminal:
        con.print(view.render())
        return 0
    with Live(view.render(), console=con, refresh_per_second=4) as live:
        while not finished(view):
            time.sleep(args.interval)
            view = view_from_progress(path, con) or view
            live.update(view.render())
    return 0
