"""Online routing: replay a trace (or synthetic arrivals) through a fleet of deployments with replicas,
under a routing policy, and measure energy, accuracy and latency against the offline optimum.

``from llm_energy.route import RouteRequest, run`` (see :mod:`llm_energy.route.run`); the CLI is
``llm-energy route``; docs/route.md. No Ray.
"""

from llm_energy.route.run import RouteOutcome, RouteRequest, run

__all__ = ["RouteOutcome", "RouteRequest", "run"]
