"""`ray job submit --working-dir . -- python jobs/fit.py --config configs/demo.yaml --out DIR`: the fit step alone."""

from _common import run_step

if __name__ == "__main__":
    run_step("fit")
