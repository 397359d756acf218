"""The exact solver of a :class:`~llm_energy.plan.problem.PlanProblem`.

``planner.py`` the LP / MIP / column-generation loop and :class:`Planner` (start there: its docstring
has the steps and why they are exact); ``master.py`` the Pyomo master and the columns it holds;
``solvers.py`` GLPK / HiGHS through Pyomo and :class:`SolveSettings`; ``duals.py`` row duals and the
bounds and certificates they give; ``seeding.py`` the first master's columns; ``ties.py`` tied
deployments merged, solved and split.
"""
