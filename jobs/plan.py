"""`ray job submit --working-dir . -- python jobs/plan.py --config configs/demo.yaml`: the plan step alone."""

from _common import config, guarded, parse


def main() -> int:
    args = parse("llm-energy pipeline step: plan")
    import steps
    cfg = config(args)
    if "plan" == "sweep":
        import ray

        ray.init(address=args.address or "auto")
        steps.sweep(cfg, live=False if args.no_live else None)
    else:
        steps.plan(cfg)
    return 0


if __name__ == "__main__":
    guarded(main)
