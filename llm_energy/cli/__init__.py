"""The ``llm-energy`` command line: one module per command area, ``main`` the entry point."""

from llm_energy.cli.main import main

__all__ = ["main"]
