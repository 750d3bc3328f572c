"""`usam ablate`: the same benchmarks over the ablation model folders, in one table."""
from __future__ import annotations

import argparse

HELP = "evaluate the ablation model folders (configs/eval/ablations.yaml) into one table (report.md, report.csv)"
DESCRIPTION = """Evaluate every model folder of an ablation list (name -> folder: no MoE, no SACL, each single
encoder, ...) on the same benchmarks, each run into OUT/<name>/<benchmark>/ (predictions.jsonl, metrics.json,
metrics.md), then write OUT/report.md and OUT/report.csv (one row per model, benchmark and task) with bar
charts and expert-usage heatmaps (usam report). Works under torchrun like `usam eval`."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from usam.commands.eval import add_generation_arguments

    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", default=None, help="ablation list YAML (default configs/eval/ablations.yaml)")
    parser.add_argument("--runs", default="runs", help="value of ${runs} in the ablation list (default: runs)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="evaluate only these ablations")
    parser.add_argument("--benchmarks", nargs="+", default=None, metavar="NAME",
                        help="benchmark names (default: the list's `benchmarks`)")
    parser.add_argument("--data-root", default=None, help="root of the prepared data (${data_root} in the registry)")
    parser.add_argument("--synth-dir", default=None, help="synthetic corpus folder (default DATA_ROOT/synth)")
    parser.add_argument("--registry", default=None,
                        help="benchmark registry YAML (default configs/eval/benchmarks.yaml)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="reuse run folders that already hold a metrics.json (resume an interrupted study)")
    add_generation_arguments(parser)


def main(args: argparse.Namespace) -> int:
    import sys

    from usam.commands.eval import settings_from_args
    from usam.errors import DataError
    from usam.evaluation.ablation import load_ablations, run_ablations

    try:
        plan = load_ablations(args.config, runs=args.runs, only=args.only)
        if args.benchmarks:
            plan.benchmarks = list(args.benchmarks)
        result = run_ablations(plan, args.out, data_root=args.data_root, synth_dir=args.synth_dir,
                               registry_path=args.registry, settings=settings_from_args(args),
                               skip_existing=args.skip_existing, device=args.device, workers=args.workers,
                               progress=not args.no_progress, manifest_instructions=args.manifest_instructions,
                               limit=args.limit)
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"usam ablate: error: {err}", file=sys.stderr)
        return 1
    if result is not None:
        print(open(result["markdown"], encoding="utf-8").read(), end="")
        print(f"wrote {result['markdown']} and {result['csv']} ({len(result['rows'])} rows)")
    return 0
