"""Known defects of stored measurements, found after they were taken.

Each erratum is a rule over what a trial's record already holds (its backend and the software
versions stored with it; for ``compiled-in-window`` also its cell and its place among its session's
trials), so every store, committed or not, is checked the same way and no stored
number is changed. ``show``, ``check`` and ``fit`` say which trials an erratum affects and what it
means (docs/measurement.md, "Errata"); ``fit`` keeps the keys in fits.json, so ``predict``, ``plan`` and
``route`` name the fits that carry one.

* ``kv-cache-ignored``: before commit e5b5c49 the ``cache`` and ``static`` backends passed the KV cache
  to the model as ``cache=``, the keyword of transformers >= 5.24 (what CI and the developers' machines
  run). transformers < 5.24 (the GPU machines run 5.17) takes it as ``past_key_values`` and lets
  ``cache=`` fall into ``**kwargs`` unused, so every decode step ran its one new token from a new empty
  cache: prefill is right, but no decode step attended to the context. Decode energy and runtime then
  miss the attention over the context, which is small at batch 1 and short contexts and grows with the
  context length and the batch (the KV cache read). Trials measured by the fixed code carry the keyword
  they passed (``kv_cache_keyword`` in their versions) and are never flagged.
* ``compiled-in-window``: from commit e5b5c49 (the cache reaches the model) to cb2fefc the static
  backend's warm-ups ran in buckets of their own lengths (an 8 + 4 token compile warm-up: always the
  256 bucket; a tin + 2 token warm-up per new prompt shape), never in the trial's. The compiled decode
  step guards on the cache's shape, so a trial whose bucket no earlier generation of its process had
  decoded in compiled its decode step inside the measurement window (on the H200: +7 s to +38 s at
  near-idle power, 3 of 167 trials). The rule replays that bookkeeping over each session's trials in
  the order they ran; those trials are not plausible numbers, so :func:`excluded` leaves them out of
  fits as suspect trials are (``fit --include-suspect`` keeps them). Trials of the fixed code carry
  ``static_warmup`` in their versions and are never flagged: its profiler re-measures (or flags
  ``suspect:compiled``) any trial during whose window torch compiled.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

KV_CACHE_IGNORED = "kv-cache-ignored"
FIXED_IN = "e5b5c49"
COMPILED_IN_WINDOW = "compiled-in-window"
COMPILED_FIXED_IN = "cb2fefc"
#: a frame column holding compiled_in_window's replay over the whole frame, so that a subset of it
#: (a deployment's group, after the flagged trials were left out) is not replayed without its neighbours
COMPILED_COLUMN = "_compiled_in_window"
#: versions key of trials whose static warm-ups ran in the trial's own bucket (set by the profiler)
STATIC_WARMUP_MARK = "trial-bucket"
MIN_BUCKET = 256  # measure.inference.sizing.MIN_BUCKET (trials/ sits below measure/)
#: the first transformers release whose causal-LM forward takes the KV cache as ``cache``
CACHE_KEYWORD_SINCE = (5, 24)


@dataclass(frozen=True, slots=True)
class ErratumHit:
    """One erratum and the trials of a frame it affects."""

    key: str
    n_trials: int
    sweeps: tuple[str, ...]
    versions: tuple[str, ...]
    text: str

    def line(self) -> str:
        return f"erratum {self.key}: {self.n_trials} trial(s) of sweep(s) {', '.join(self.sweeps)}: {self.text}"

    def to_dict(self) -> dict:
        return {"key": self.key, "n_trials": self.n_trials, "sweeps": list(self.sweeps),
                "versions": list(self.versions), "text": self.text}


def kv_cache_ignored_expr() -> pl.Expr:
    """True for a trial of a KV-cache backend (cache, static, static+...) measured with transformers older
    than 5.24 by code that did not record the keyword it passed the cache under."""
    versions = pl.col("versions").fill_null("{}")
    tf = versions.str.json_path_match("$.transformers")
    major = tf.str.extract(r"^(\d+)\.", 1).cast(pl.Int64, strict=False)
    minor = tf.str.extract(r"^\d+\.(\d+)", 1).cast(pl.Int64, strict=False)
    old = (major < CACHE_KEYWORD_SINCE[0]) | ((major == CACHE_KEYWORD_SINCE[0]) & (minor < CACHE_KEYWORD_SINCE[1]))
    uses_cache = (pl.col("backend") == "cache") | pl.col("backend").str.starts_with("static")
    unmarked = versions.str.json_path_match("$.kv_cache_keyword").is_null()
    return (uses_cache & old.fill_null(False) & unmarked).fill_null(False)


def compiled_in_window(trials: pl.DataFrame) -> pl.Series:
    """A boolean per trial (in ``trials``' row order): a static-backend trial measured between e5b5c49 and
    cb2fefc whose bucket no earlier generation of its session had decoded in (erratum compiled-in-window)."""
    if COMPILED_COLUMN in trials.columns:  # replayed already, over the whole frame (drop_suspect)
        return trials[COMPILED_COLUMN].fill_null(False).alias("erratum")
    need = {"backend", "versions", "session", "tin", "tout", "batch", "t_start"}
    flags = [False] * trials.height
    if trials.height == 0 or not need <= set(trials.columns):
        return pl.Series("erratum", flags, dtype=pl.Boolean)
    versions = pl.col("versions").fill_null("{}")
    cand = (pl.col("backend").str.starts_with("static")
            & versions.str.json_path_match("$.kv_cache_keyword").is_not_null()
            & versions.str.json_path_match("$.static_warmup").is_null()).fill_null(False)
    rows = (trials.with_row_index("_row").filter(cand)
            .select("_row", "session", "t_start", "tin", "tout", "batch").sort("session", "t_start"))
    for (_,), g in rows.group_by(["session"], maintain_order=True):
        decoded: set[tuple[int, int]] = set()  # (batch, bucket) whose decode step this process compiled
        warm: set[tuple[int, int]] = set()  # (batch, tin) prompt shapes warmed up
        for row, tin, tout, batch in g.select("_row", "tin", "tout", "batch").iter_rows():
            decoded.add((batch, MIN_BUCKET))  # the compile warm-up of a new bucket decodes in 256
            if (batch, tin) not in warm:  # the shape warm-up: 2 tokens, one decode step in bucket(tin + 2)
                warm.add((batch, tin))
                decoded.add((batch, _bucket(tin + 2)))
            key = (batch, _bucket(tin + tout))
            if key not in decoded and tout > 1:
                flags[row] = True
                decoded.add(key)
    return pl.Series("erratum", flags, dtype=pl.Boolean)


def _bucket(n: int) -> int:
    b = MIN_BUCKET
    while b < n:
        b *= 2
    return b


def excluded(trials: pl.DataFrame) -> pl.Series:
    """A boolean per trial: an erratum makes it no plausible number (compiled-in-window), so fits leave
    it out like a suspect trial; ``kv-cache-ignored`` trials stay (flagged: the whole store is affected)."""
    return compiled_in_window(trials)


def errata(trials: pl.DataFrame) -> list[ErratumHit]:
    """The errata that affect any trial of ``trials`` (a frame of TRIAL_SCHEMA columns)."""
    if trials.height == 0 or not {"backend", "versions", "sweep_id"} <= set(trials.columns):
        return []
    return [h for h in (_kv_hit(trials), _compiled_hit(trials)) if h is not None]


def _compiled_hit(trials: pl.DataFrame) -> ErratumHit | None:
    hit = trials.filter(compiled_in_window(trials))
    if hit.height == 0:
        return None
    cells = ", ".join(f"{a}x{b}" for a, b in hit.select("tin", "tout").iter_rows())
    text = (f"the static decode step compiled inside the measurement window (tin x tout {cells}): before commit "
            f"{COMPILED_FIXED_IN} the warm-ups ran in other length buckets than the trial's, so the first trial "
            "of a bucket paid its compile; fits leave these trials out (docs/measurement.md, Errata).")
    return _hit(COMPILED_IN_WINDOW, hit, text)


def _hit(key: str, hit: pl.DataFrame, text: str) -> ErratumHit:
    return ErratumHit(key, hit.height, tuple(sorted(set(hit["sweep_id"].to_list()))), tuple(_transformers(hit)), text)


def _transformers(hit: pl.DataFrame) -> list[str]:
    return sorted({v for v in hit.select(pl.col("versions").str.json_path_match("$.transformers"))
                   .to_series().to_list() if v})


def _kv_hit(trials: pl.DataFrame) -> ErratumHit | None:
    hit = trials.filter(kv_cache_ignored_expr())
    if hit.height == 0:
        return None
    tfs = _transformers(hit)
    text = (f"decode steps did not attend to the context: transformers {', '.join(tfs)} takes the KV cache as "
            f"past_key_values and ignored the cache= the profiler passed before commit {FIXED_IN}, so each "
            "decode step ran its new token from an empty cache. Prefill is right; decode energy and runtime "
            "lack the attention over the context (low at long contexts and large batch). Re-measure with "
            "today's code (docs/measurement.md, Errata).")
    return _hit(KV_CACHE_IGNORED, hit, text)


def affected(trials: pl.DataFrame) -> pl.Series:
    """A boolean per trial: does any erratum affect it."""
    if trials.height == 0 or not {"backend", "versions"} <= set(trials.columns):
        return pl.Series("erratum", [False] * trials.height, dtype=pl.Boolean)
    return trials.select(kv_cache_ignored_expr().alias("erratum")).to_series() | compiled_in_window(trials)
