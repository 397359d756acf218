"""`ray job submit --working-dir . -- python jobs/sweep.py --config configs/demo.yaml --out DIR`: the sweep step alone."""

from _common import run_step

if __name__ == "__main__":
    run_step("sweep")
