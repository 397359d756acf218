"""`ray job submit --working-dir . -- python jobs/route.py --config configs/demo.yaml --out DIR`: the route step
alone (the online comparison on the pipeline's own fits: ``steps.route``, which calls
``llm_energy.route.run(RouteRequest(...))``)."""

from _common import run_step

if __name__ == "__main__":
    run_step("route")
