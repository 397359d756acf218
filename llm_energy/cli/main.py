"""The ``llm-energy`` command line.

Each area registers its own subcommands from a ``cli_<area>.py`` module exposing
``register(subparsers)``; every subcommand sets ``func(args) -> int``. A :class:`UserError` becomes
one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from llm_energy.errors import UserError

# Modules that add subcommands, in --help order.
COMMAND_MODULES = (
    "llm_energy.cli.profile",  # profile, show
    "llm_energy.cli.node",  # devices, models
    "llm_energy.cli.fit",  # import, fit, predict, report
    "llm_energy.cli.plan",  # plan, workload
    "llm_energy.cli.watch",  # watch
    "llm_energy.cli.route",  # route
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-energy",
        description="Profile, model and plan energy-optimal LLM serving on heterogeneous clusters.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # area not built yet
                continue
            raise
        mod.register(sub)
    return parser


def _version() -> str:
    from llm_energy import __version__

    return f"llm-energy {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"llm-energy {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llm-energy {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`llm-energy show --json | head`): not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
