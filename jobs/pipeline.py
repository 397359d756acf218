"""`ray job submit --working-dir . -- python jobs/pipeline.py --config configs/demo.yaml`:
sweep (pinned profiler actors on every node) -> fit -> plan -> route -> report."""

from _common import config, guarded, parse


def main() -> int:
    args = parse("llm-energy pipeline: sweep -> fit -> plan -> route -> report on a Ray cluster")
    cfg = config(args)  # validated before any work starts
    import steps
    from cluster.connect import connect

    connect(args.address)
    steps.sweep(cfg, live=False if args.no_live else None)
    steps.fit(cfg)
    steps.plan(cfg)
    steps.route(cfg)
    steps.report(cfg)
    print(f"pipeline done: outputs in {cfg.out}")
    return 0


if __name__ == "__main__":
    guarded(main)
