"""`ray job submit --working-dir . -- python jobs/plan.py --config configs/demo.yaml --out DIR`: the plan step alone."""

from _common import run_step

if __name__ == "__main__":
    run_step("plan")
