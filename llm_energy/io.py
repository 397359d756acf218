"""Input and output shared by every stage: strict JSON (NaN and inf as null, numpy scalars plain), tables read by suffix, files and directories written atomically (aside, then renamed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from llm_energy.errors import UserError


def json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def to_json(obj: Any, default: Callable[[Any], Any] | None = None, **kw: Any) -> str:
    """Strict JSON text: NaN and +-inf become null (bare NaN/Infinity is not JSON), numpy scalars plain;
    ``default`` converts anything else JSON lacks (e.g. ``str``)."""
    def conv(o: Any) -> Any:
        try:
            return json_default(o)
        except TypeError:
            if default is None:
                raise
            return default(o)

    return json.dumps(_finite(obj), default=conv, allow_nan=False, **kw)


def _finite(o: Any) -> Any:
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return [_finite(v) for v in o.tolist()]
    return o


def read_table(path: str) -> pl.DataFrame:
    p = Path(path)
    try:
        if p.suffix == ".parquet":
            return pl.read_parquet(p)
        if p.suffix in (".jsonl", ".ndjson"):
            return pl.read_ndjson(p)
        return pl.read_csv(p, infer_schema_length=100000)
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    except (pl.exceptions.PolarsError, OSError) as e:
        raise UserError(f"{p}: cannot read ({str(e).splitlines()[0]})") from None


def write_text_atomic(path: str | Path, text: str, *, what: str = "file") -> Path:
    """Write ``text`` to ``path`` whole or not at all: written aside, flushed, then renamed over the
    target, so a crash leaves the old file or the new one, never a torn one. An OSError is a
    UserError naming the path."""
    import os

    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    _remove_dead_writers_tmp(p)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{p}: cannot write the {what} ({e.strerror or e})") from None
    return p


def _remove_dead_writers_tmp(p: Path) -> None:
    """Remove the aside files (``.NAME.tmp-PID``) that killed writers of ``p`` left behind; a live
    writer's is left alone."""
    import os

    for t in p.parent.glob(f".{p.name}.tmp-*"):
        pid = t.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            t.unlink(missing_ok=True)
        except OSError:  # alive, another user's
            pass


def read_document(path: str | Path, what: str, fmt: str | None = None) -> Any:
    """The parsed contents of a JSON or YAML file (``fmt`` "json" | "yaml", else by suffix: ``.json`` is
    JSON, anything else YAML), or a UserError naming the file and ``what`` it should have been:
    missing, unreadable (random bytes included), or not valid JSON/YAML."""
    p = Path(path)
    as_json = fmt == "json" if fmt else p.suffix == ".json"
    if as_json:
        parse, bad = json.loads, ValueError  # JSONDecodeError is a ValueError
    else:
        import yaml  # only for YAML files

        parse, bad = yaml.safe_load, yaml.YAMLError
    try:
        return parse(p.read_text())
    except FileNotFoundError:
        raise UserError(f"{p}: no such {what}") from None
    except (OSError, UnicodeDecodeError, bad) as e:
        raise UserError(f"{p}: not a readable {'JSON' if as_json else 'YAML'} {what} ({str(e).splitlines()[0][:120]})"
                        ) from None
