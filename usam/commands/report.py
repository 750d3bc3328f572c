"""`usam report`: compare evaluation runs (table, bar charts, expert-usage heatmaps)."""
from __future__ import annotations

import argparse

HELP = "compare evaluation runs: Markdown/CSV table, a bar chart per metric, expert-usage heatmaps"
DESCRIPTION = (
    "Read the metrics.json of each RUN_DIR (a folder without one is searched recursively) and write into "
    "--out: report.md and report.csv (one row per run and task, one column per score), bar_<metric>.png "
    "(one bar per run) and expert_usage_<model>.png (router weight per task and expert). The metrics.json "
    "schema is documented in usam/evaluation/report.py."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="evaluation output folder holding metrics.json (or a metrics.json file, or a folder "
                             "of run folders)")
    parser.add_argument("--out", required=True, help="output folder for the report (created if missing)")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated score columns to show, in this order (default: every score found)")
    parser.add_argument("--title", default="U-SAM evaluation report", help="title of report.md")


def main(args: argparse.Namespace) -> int:
    import sys

    from usam.errors import DataError
    from usam.evaluation.report import write_report

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        out = write_report(args.run_dirs, args.out, metrics=metrics, title=args.title)
    except DataError as err:
        print(f"usam report: {err}", file=sys.stderr)
        return 2
    print(f"{len(out['runs'])} run(s), {len(out['rows'])} row(s) -> {out['markdown']}, {out['csv']}, "
          f"{len(out['bar_charts'])} bar chart(s), {len(out['heatmaps'])} heatmap(s)")
    return 0
