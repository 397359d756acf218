"""llm-energy: profile, model and plan energy-optimal LLM serving on heterogeneous clusters.

This package never imports Ray; the Ray layer lives in the top-level ``cluster`` package.
"""

__version__ = "0.1.0"
