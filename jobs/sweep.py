"""`ray job submit --working-dir . -- python jobs/sweep.py --config configs/demo.yaml`: the sweep step alone."""

from _common import config, guarded, parse


def main() -> int:
    args = parse("llm-energy pipeline step: sweep")
    import steps
    cfg = config(args)
    if "sweep" == "sweep":
        import ray

        ray.init(address=args.address or "auto")
        steps.sweep(cfg, live=False if args.no_live else None)
    else:
        steps.sweep(cfg)
    return 0


if __name__ == "__main__":
    guarded(main)
