"""Known defects of stored measurements, found after they were taken.

Each erratum is a rule over what a trial's record already holds (its backend and the software
versions stored with it), so every store, committed or not, is checked the same way and no stored
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
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

KV_CACHE_IGNORED = "kv-cache-ignored"
FIXED_IN = "e5b5c49"
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


def errata(trials: pl.DataFrame) -> list[ErratumHit]:
    """The errata that affect any trial of ``trials`` (a frame of TRIAL_SCHEMA columns)."""
    if trials.height == 0 or not {"backend", "versions", "sweep_id"} <= set(trials.columns):
        return []
    hit = trials.filter(kv_cache_ignored_expr())
    if hit.height == 0:
        return []
    tfs = sorted({v for v in hit.select(pl.col("versions").str.json_path_match("$.transformers"))
                  .to_series().to_list() if v})
    text = (f"decode steps did not attend to the context: transformers {', '.join(tfs)} takes the KV cache as "
            f"past_key_values and ignored the cache= the profiler passed before commit {FIXED_IN}, so each "
            "decode step ran its new token from an empty cache. Prefill is right; decode energy and runtime "
            "lack the attention over the context (low at long contexts and large batch). Re-measure with "
            "today's code (docs/measurement.md, Errata).")
    return [ErratumHit(KV_CACHE_IGNORED, hit.height, tuple(sorted(set(hit["sweep_id"].to_list()))), tuple(tfs), text)]


def affected(trials: pl.DataFrame) -> pl.Series:
    """A boolean per trial: does any erratum affect it."""
    if trials.height == 0 or not {"backend", "versions"} <= set(trials.columns):
        return pl.Series("erratum", [False] * trials.height, dtype=pl.Boolean)
    return trials.select(kv_cache_ignored_expr().alias("erratum")).to_series()
