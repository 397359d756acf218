"""The plan stage: which deployment serves which queries, at least predicted energy for the accuracy asked for.

Read in this order (each module only imports those before it, and the stage imports only fit/ and
below):

* ``workload.py`` the queries (files, synthetic kinds) and their (tin, tout) classes and bins;
  ``deployments.py`` the deployments file; ``context.py`` each deployment's context length and the
  queries beyond it;
* ``problem.py`` :class:`PlanProblem` (numpy only) and its constraint :class:`Row` s;
  ``costs.py`` a problem from the fits (predictions, negative policy);
* ``solve/`` the exact solver (its own docstring has the steps); ``binning.py`` solve on bins with a
  bounded error; ``baselines.py`` simple routings to compare with;
* ``summary.py`` :class:`PlanSummary`, the typed summary.json; ``outputs.py`` the plan's tables;
  ``run.py`` :func:`run` (a :class:`PlanRequest`), the whole pipeline that the CLI, jobs and
  benchmarks call.

Nothing is imported here, so ``import llm_energy.plan.workload`` stays light.
"""
