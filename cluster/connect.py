"""Connecting to Ray quietly.

Ray logs at INFO by default: every connection, packaging step and runtime-env stage is a line, and in
``make demo`` they bury the job's own output. Here Ray logs at WARNING unless ``LLM_ENERGY_RAY_LOGS=1``
(``python -m cluster.demo --ray-logs``) asks for everything, and Ray's INFO lines that reach a job's
log anyway (the job supervisor's) are dropped from what the demo prints.
"""

from __future__ import annotations

import logging
import os
import re

RAY_LOGS_ENV = "LLM_ENERGY_RAY_LOGS"
# Ray's log format: "2026-12-01 11:47:19,870\tINFO job_manager.py:581 -- ..."
_RAY_INFO_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(?:INFO|DEBUG)\s")


def ray_verbose() -> bool:
    return os.environ.get(RAY_LOGS_ENV, "") not in ("", "0")


def ray_logging_level() -> int:
    return logging.INFO if ray_verbose() else logging.WARNING


def quiet_ray_logger() -> None:
    """This process's own Ray client logging (job submission, packaging) at the chosen level."""
    logging.getLogger("ray").setLevel(logging.INFO if ray_verbose() else logging.ERROR)


def connect(address: str | None = None):
    """``ray.init`` to a running cluster (``auto``: the one this process runs on) at the chosen log level."""
    import ray

    return ray.init(address=address or "auto", logging_level=ray_logging_level(), ignore_reinit_error=True)


def drop_ray_info(text: str) -> str:
    """``text`` without Ray's own INFO/DEBUG log lines (unless Ray logs were asked for)."""
    if ray_verbose():
        return text
    return "".join(line for line in text.splitlines(keepends=True) if not _RAY_INFO_LINE.match(line))
