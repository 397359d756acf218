"""Shared by the job entrypoints: config loading and clean one-line errors."""

from __future__ import annotations

import argparse
import os
import sys



def _code_root() -> str:
    """Where ``llm_energy`` and ``cluster`` are imported from.

    A submitted job runs in Ray's unpacked copy of its working dir, and Ray may replace or delete that
    copy while the job runs (once the sweep's actors exit, and around ``ray.init``): a module first
    imported after that is not found. So the job copies the two packages, about 1 MB, to a private
    directory once at start and imports from there; run from a checkout, it imports in place."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if "runtime_resources" not in repo:
        return repo
    import shutil
    import tempfile

    private = tempfile.mkdtemp(prefix="llm-energy-job-")
    for pkg in ("llm_energy", "cluster"):
        shutil.copytree(os.path.join(repo, pkg), os.path.join(private, pkg),
                        ignore=shutil.ignore_patterns("__pycache__"))
    return private


sys.path.insert(0, _code_root())


def parse(description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--config", required=True, help="pipeline config YAML (see cluster/config.py)")
    ap.add_argument("--address", default=None, help="Ray address (default: the cluster this job runs on)")
    ap.add_argument("--no-live", action="store_true", help="plain log lines instead of the live view")
    ap.add_argument("--out", default=None,
                    help="output directory (overrides the config's out:); use shared storage on a real cluster, "
                         "since a job runs in a temporary copy of its working dir")
    return ap.parse_args()


def config(args):
    """The validated config with absolute paths, and the process moved into its output directory.

    Ray deletes a job's unpacked working directory once no actor uses it any more (the actors of the
    sweep exit before fit/plan run), so the job must not keep its working directory as cwd."""
    import dataclasses
    from pathlib import Path

    from cluster.config import load_config

    cfg = load_config(args.config)
    out = Path(args.out or cfg.out)
    if not out.is_absolute() and "runtime_resources" in str(Path.cwd()):
        # a submitted job runs in a temporary copy of its working dir that Ray deletes: a relative out
        # there would lose the store, so it goes under the home directory of the node the job runs on
        out = Path.home() / "llm-energy" / out
        print(f"out: {out} (relative paths in a Ray job resolve under ~/llm-energy; pass an absolute --out, "
              f"ideally on shared storage)", flush=True)
    out = out.resolve()
    wl = cfg.workload
    if wl.path:
        wl = dataclasses.replace(wl, path=str(Path(wl.path).resolve()))
    cfg = dataclasses.replace(cfg, out=str(out), workload=wl)
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)
    return cfg


def guarded(main) -> None:
    from llm_energy.errors import UserError

    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run_step(step: str) -> None:
    """Entry point of jobs/<step>.py: one pipeline step (sweep, fit, plan or report) on its own."""

    def main() -> int:
        args = parse(f"llm-energy pipeline step: {step}")
        import steps  # before config() moves the process out of the job's working dir

        cfg = config(args)

        if step == "sweep":
            from cluster.connect import connect

            connect(args.address)
            steps.sweep(cfg, live=False if args.no_live else None)
        else:
            getattr(steps, step)(cfg)
        return 0

    guarded(main)
