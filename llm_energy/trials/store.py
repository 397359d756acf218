"""The trial store: an append-only Parquet dataset directory (see docs/schema.md).

Layout::

    DIR/manifest.json              schema version + one SweepInfo per sweep (rewritten atomically)
    DIR/trials/part-<ns>-<id>.parquet    TRIAL_SCHEMA rows, one chunk per append
    DIR/samples/part-<ns>-<id>.parquet   SAMPLE_SCHEMA rows

Every chunk is written to a temporary name in the same directory, fsynced, then renamed: a reader
(or a resumed sweep) sees a whole chunk or none of it. A trial is committed when its trial chunk is
renamed into place; its samples are written before it, so a SIGKILL at any moment loses no committed
trial, and the resumed sweep reruns only trials whose chunk never landed. ``append_trials`` also
drops trial ids already present, so a trial requeued after a node failure is never stored twice.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from llm_energy.errors import UserError
from llm_energy.trials import lock as store_lock
from llm_energy.trials.schema import (
    SAMPLE_SCHEMA,
    SCHEMA_VERSION,
    TRIAL_SCHEMA,
    SweepInfo,
    TrialRecord,
    conform,
    identity_diff,
    trials_frame,
    with_quality_default,
)

MANIFEST = "manifest.json"
COMPACTING = "compacting.json"  # a compaction's journal: the chunks it replaces and the ones it writes
STORE_KIND = "llm-energy-store"


class TrialStore:
    """A trial store directory; creates it (and its manifest) unless ``create=False``.

    Every write takes the store's advisory lock (:mod:`llm_energy.trials.lock`) first, and this object
    holds it until it is closed or collected: a second writing process is refused with a UserError
    naming the holder. ``writer`` takes it at once (``wait``: blocking until it is free), before
    anything is read, so a command is refused before it does any work."""

    def __init__(self, root: Path | str, create: bool = True, *, writer: str | None = None, wait: bool = False) -> None:
        self.root = Path(root)
        self._done: set[str] | None = None
        self._lock_key: str | None = None
        if writer is not None:
            if create:
                try:
                    self.root.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise UserError(f"{self.root}: cannot write the output directory ({e.strerror or e})") from None
            self.lock(writer, wait=wait)
        mpath = self.root / MANIFEST
        if mpath.exists():
            self._manifest = _read_manifest(mpath)
        elif create:
            try:
                (self.root / "trials").mkdir(parents=True, exist_ok=True)
                (self.root / "samples").mkdir(parents=True, exist_ok=True)
                probe = self.root / f".probe-{uuid.uuid4().hex[:8]}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as e:
                raise UserError(f"{self.root}: cannot write the output directory ({e.strerror or e})") from None
            self._manifest = {"kind": STORE_KIND, "schema_version": SCHEMA_VERSION, "created": time.time(), "sweeps": {}}
            self._write_manifest()
        else:
            raise UserError(f"{self.root}: not an llm-energy store (no {MANIFEST})")

    # ---- the write lock ----------------------------------------------------------------------
    def lock(self, what: str = "", *, wait: bool = False) -> None:
        """Take the store's write lock (held until :meth:`close`); re-reads the manifest and the
        committed ids, which another writer may have changed before."""
        if self._lock_key is not None:
            return
        first = not store_lock.held(self.root)  # this process's first hold: no writer of ours is midway
        self._lock_key = store_lock.acquire(self.root, what, wait=wait)
        weakref.finalize(self, store_lock.release, self._lock_key)
        if (self.root / MANIFEST).exists():
            self._manifest = _read_manifest(self.root / MANIFEST)
        self._done = None
        if first:
            self._recover()

    def close(self) -> None:
        """Release the write lock (if this object took it)."""
        if self._lock_key is not None:
            store_lock.release(self._lock_key)
            self._lock_key = None

    # ---- sweeps ------------------------------------------------------------------------------
    def register_sweep(self, sweep_id: str, info: SweepInfo) -> None:
        """Record a sweep's metadata, or add a run to a sweep already recorded. A run whose settings
        differ from the sweep's (design, seed, window, backend, dtype, energy source:
        :func:`~llm_energy.trials.schema.identity_diff`) is a UserError: its trials are not mixed in.
        The recorded fields are never rewritten; each run's idle baseline is kept in ``runs``; notes
        accumulate."""
        self.lock()
        old = self._manifest["sweeps"].get(sweep_id)
        new = asdict(info)
        if not new["runs"]:
            new["runs"] = [_run_record(new)]
        if old:
            stored = SweepInfo.from_dict(old)
            diff = identity_diff(stored, info)
            if diff:
                what = ", ".join(f"{k}={a!r} (this run: {b!r})" for k, a, b in diff)
                raise UserError(f"{self.root}: sweep {sweep_id} was measured with {what}; not mixing the two")
            merged = dict(old)
            for k, v in new.items():  # fill what an older record lacked, never overwrite
                if merged.get(k) in (None, "", {}, []) and k != "runs":
                    merged[k] = v
            runs = list(old.get("runs") or [_run_record(old)])
            seen = {r.get("session") for r in runs if r.get("session")}
            runs += [r for r in new["runs"] if r not in runs and (not r.get("session") or r["session"] not in seen)]
            merged["runs"] = runs
            merged["notes"] = list(dict.fromkeys(list(old.get("notes", [])) + list(new.get("notes", []))))
            new = merged
        self._manifest["sweeps"][sweep_id] = new
        self._write_manifest()

    def sweeps(self) -> dict[str, SweepInfo]:
        return {k: SweepInfo.from_dict(v) for k, v in self._manifest["sweeps"].items()}

    # ---- appends -----------------------------------------------------------------------------
    def append_trials(self, records: list[TrialRecord] | pl.DataFrame) -> int:
        """Commit trials atomically as one chunk; ids already stored are dropped. Returns rows written."""
        df = records if isinstance(records, pl.DataFrame) else trials_frame(records)
        df = with_quality_default(conform(df, TRIAL_SCHEMA))
        self.lock()
        done = self.done_trial_ids()
        df = df.filter(~pl.col("trial_id").is_in(list(done))).unique("trial_id", keep="first", maintain_order=True)
        if df.height == 0:
            return 0
        self._write_chunk("trials", df)
        done.update(df["trial_id"].to_list())
        return df.height

    def append_samples(self, frame: pl.DataFrame) -> int:
        if frame.height == 0:
            return 0
        self._write_chunk("samples", conform(frame, SAMPLE_SCHEMA))
        return frame.height

    # ---- reads -------------------------------------------------------------------------------
    def done_trial_ids(self) -> set[str]:
        if self._done is None:
            files = self._files("trials")
            if files:
                # chunks of one store may differ in columns (a sweep resumed by newer code): only trial_id is read
                ids = _read_chunks(files, lambda f: pl.scan_parquet(f, extra_columns="ignore").select("trial_id")
                                   .collect())["trial_id"].to_list()
                self._done = set(ids)
            else:
                self._done = set()
        return self._done

    def trials(self) -> pl.DataFrame:
        """All committed trials (TRIAL_SCHEMA), in commit order. A chunk that cannot be read is a
        UserError naming it."""
        files = self._files("trials")
        if not files:
            return pl.DataFrame(schema=TRIAL_SCHEMA)
        # chunks written before a column existed lack it (a sweep resumed by newer code mixes both): each run of
        # chunks with one schema is read together and conformed, the missing columns null
        runs: list[list[str]] = []
        last: list | None = None
        for f in files:
            cols = list(_read_chunks([f], pl.read_parquet_schema).items())
            if cols != last:
                runs.append([])
                last = cols
            runs[-1].append(f)
        df = pl.concat([conform(_read_chunks(r, pl.read_parquet), TRIAL_SCHEMA) for r in runs])
        return with_quality_default(df).unique("trial_id", keep="first", maintain_order=True)

    def samples(self) -> pl.LazyFrame:
        """All samples, lazily. Every chunk's footer is read first, so a garbage chunk is a UserError
        naming it here, not an error deep inside a later query."""
        files = self._files("samples")
        if not files:
            return pl.LazyFrame(schema=SAMPLE_SCHEMA)
        for f in files:
            _read_chunks([f], pl.read_parquet_schema)
        return pl.scan_parquet(files, missing_columns="insert", extra_columns="ignore")

    def compact(self, decimate_s: float | None = None) -> tuple[int, int, int]:
        """Merge all chunks into one trials and one samples chunk; returns (trials, samples, old files).

        With ``decimate_s``: one power reading per (session, device) per interval, and counter readings
        only where the counter changed (its update points, which is all energy integration uses).
        Idempotent and self-cleaning: a journal (``compacting.json``) names the chunks replaced and the
        ones to be written before anything is written; the old chunks go once every new one is in place.
        A compaction killed midway is finished (every new chunk landed) or undone (not all did) by the
        next writer to open the store, and readers meanwhile see one side only, never both.
        """
        self.lock()
        old_t, old_s = self._files("trials"), self._files("samples")
        trials = self.trials()
        samples = _read_chunks(old_s, lambda f: self.samples().collect()).unique(maintain_order=True) if old_s \
            else pl.DataFrame(schema=SAMPLE_SCHEMA)
        if decimate_s:
            samples = _decimate(samples, decimate_s)
        new = {k: _chunk_name() for k, df in (("trials", trials), ("samples", samples)) if df.height}
        journal = {"old": [str(Path(f).relative_to(self.root)) for f in old_t + old_s],
                   "new": [f"{k}/{n}" for k, n in new.items()]}
        self._write_json(self.root / COMPACTING, journal, "the compaction journal")
        if "trials" in new:
            self._write_chunk("trials", trials, new["trials"])
        if "samples" in new:
            self._write_chunk("samples", conform(samples, SAMPLE_SCHEMA), new["samples"])
        self._finish_compaction(journal)
        return trials.height, samples.height, len(old_t) + len(old_s)

    def _recover(self) -> None:
        """What a killed writer left (this process holds the lock, so no writer is live): a compaction's
        journal finished or undone, and ``.tmp-`` files (chunks and manifests never renamed) removed."""
        journal = _read_journal(self.root)
        if journal is not None:
            if all((self.root / n).exists() for n in journal["new"]):
                self._finish_compaction(journal)
            else:  # not every merged chunk landed: the old chunks are all still there
                for n in journal["new"]:
                    (self.root / n).unlink(missing_ok=True)
                (self.root / COMPACTING).unlink(missing_ok=True)
        for d in (self.root, self.root / "trials", self.root / "samples"):
            if d.is_dir():
                for p in [*d.glob(".tmp-*"), *d.glob(".probe-*")]:
                    p.unlink(missing_ok=True)

    def _finish_compaction(self, journal: dict[str, list[str]]) -> None:
        for n in journal["old"]:
            (self.root / n).unlink(missing_ok=True)
        for d in ("trials", "samples"):
            fsync_path(self.root / d)
        (self.root / COMPACTING).unlink(missing_ok=True)
        fsync_path(self.root)
        self._done = None

    # ---- internals ---------------------------------------------------------------------------
    def _files(self, kind: str) -> list[str]:
        """The committed chunks of ``kind``. While a compaction's journal is present (a compaction
        running, or killed), one side of it: the merged chunks once all landed, else the old ones."""
        d = self.root / kind
        if not d.is_dir():
            return []
        files = sorted(str(p) for p in d.glob("part-*.parquet"))
        journal = _read_journal(self.root)
        if journal is not None:
            done = all((self.root / n).exists() for n in journal["new"])
            hide = {str(self.root / n) for n in (journal["old"] if done else journal["new"])}
            files = [f for f in files if f not in hide]
        return files

    def _write_chunk(self, kind: str, df: pl.DataFrame, name: str | None = None) -> Path:
        self.lock()
        d = self.root / kind
        d.mkdir(parents=True, exist_ok=True)
        name = name or _chunk_name()
        tmp = d / f".tmp-{name}"
        final = d / name
        try:
            df.write_parquet(tmp)
            _fsync_file(tmp)
            os.replace(tmp, final)
            fsync_path(d)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise UserError(f"{d}: cannot write a {kind} chunk ({e.strerror or e})") from None
        return final

    def _write_manifest(self) -> None:
        if self._lock_key is None:
            keep = self._manifest
            self.lock()
            self._manifest = keep  # what this call is writing (lock() re-read the file)
        self._write_json(self.root / MANIFEST, self._manifest, "the manifest")

    def _write_json(self, path: Path, doc: Any, what: str) -> None:
        tmp = self.root / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
            _fsync_file(tmp)
            os.replace(tmp, path)
            fsync_path(self.root)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise UserError(f"{path}: cannot write {what} ({e.strerror or e})") from None


def _chunk_name() -> str:
    return f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"


def _decimate(samples: pl.DataFrame, decimate_s: float) -> pl.DataFrame:
    """One power reading per (node, session, device, source) per ``decimate_s``, and counter readings
    where the counter changed (and each series' last)."""
    keys = ["node", "session", "device", "source"]
    samples = samples.sort("t_mono")
    power = (samples.filter(pl.col("watts").is_not_null())
             .with_columns((pl.col("t_mono") / decimate_s).floor().alias("_slot"))
             .unique([*keys, "_slot"], keep="first", maintain_order=True).drop("_slot"))
    counter = samples.filter(pl.col("joules").is_not_null()).filter(
        (pl.col("joules") != pl.col("joules").shift(1).over(keys)) | pl.col("joules").shift(1).over(keys).is_null()
        | (pl.col("t_mono") == pl.col("t_mono").max().over(keys)))
    return pl.concat([power, counter]).sort("t_mono")


def _read_journal(root: Path) -> dict[str, list[str]] | None:
    """A compaction's journal, or None; one that cannot be read (never written whole: it is renamed
    into place) is a UserError naming it."""
    path = root / COMPACTING
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable compaction journal ({e}); move it aside to read the store") from None
    if not (isinstance(doc, dict) and all(isinstance(doc.get(k), list) for k in ("old", "new"))):
        raise UserError(f"{path}: not a compaction journal (old/new lists); move it aside to read the store")
    return doc


def _run_record(info: dict[str, Any]) -> dict[str, Any]:
    """One run's own record (a sweep record without ``runs`` is its first run)."""
    keys = ("session", "node", "created", "idle_w", "idle_cold_w", "idle_per_device_w", "versions")
    return {k: info.get(k) for k in keys if k in info}


def _read_chunks(files: list[str], read: Any) -> Any:
    """``read(files)``; if Polars cannot read them, a UserError naming the first chunk that fails on its
    own (a corrupt or truncated file), or the directory when only the combination fails."""
    try:
        return read(files)
    except (pl.exceptions.PolarsError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    for f in files:
        try:
            pl.read_parquet(f)
        except (pl.exceptions.PolarsError, OSError) as e:
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{f}: unreadable Parquet chunk ({why}); move it out of the store to read the rest") from None
    where = Path(files[0]).parent if files else "store"
    raise UserError(f"{where}: cannot read the chunks together ({first})") from None


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError (random bytes) are ValueErrors
        raise UserError(f"{path}: unreadable manifest ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(m, dict) or m.get("kind") != STORE_KIND:
        raise UserError(f"{path}: kind={m.get('kind') if isinstance(m, dict) else m!r}: not an llm-energy store manifest")
    v = m.get("schema_version")
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= SCHEMA_VERSION:
        raise UserError(f"{path}: schema_version={v!r}: this llm-energy reads versions 1..{SCHEMA_VERSION}")
    m.setdefault("sweeps", {})
    if not isinstance(m["sweeps"], dict) or not all(isinstance(v, dict) for v in m["sweeps"].values()):
        raise UserError(f"{path}: sweeps={str(m['sweeps'])[:60]!r}: expected an object of sweep records")
    return m


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (its entries: a rename made durable), best effort: an OS that
    cannot open or sync it is not an error."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_store(path: Path | str) -> TrialStore:
    """An existing store (UserError naming the path if it is not one)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such directory")
    return TrialStore(p, create=False)


def load_trials(dirs: list[str]) -> pl.DataFrame:
    """Every committed trial of the stores in ``dirs``, one frame (:data:`TRIAL_SCHEMA`): what the fit
    and report stages read. A directory that is not a store, or stores with no trial, is a UserError."""
    frames = [open_store(d).trials() for d in dirs]
    df = pl.concat(frames) if frames else pl.DataFrame()
    if df.height == 0:
        raise UserError(f"{', '.join(dirs)}: no trials")
    return df
