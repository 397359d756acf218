"""``python -m llm_energy.cli``: the same as the ``llm-energy`` command."""

import sys

from llm_energy.cli.main import main

sys.exit(main())
