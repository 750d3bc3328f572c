"""`usam plot RUN_DIR`: PNG plots of a training run (loss curves, expert usage per task)."""
from __future__ import annotations

import argparse

HELP = "plot a training run: loss curves and a heatmap of expert usage per task (PNG)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a training output_dir (holds metrics.jsonl)")
    parser.add_argument("--out", default=None, help="folder for the PNG files (default: RUN_DIR/plots)")


def main(args: argparse.Namespace) -> int:
    import sys

    from usam.training.plots import plot_run

    try:
        written = plot_run(args.run_dir, args.out)
    except FileNotFoundError as err:
        print(f"usam plot: error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0 if written else 1
