"""`usam prepare DATASET --root LOCAL_COPY --out OUT_DIR`: public dataset -> U-SAM manifests."""
from __future__ import annotations

import argparse
import importlib

HELP = "prepare a public dataset (LibriSpeech, CoVoST 2, Clotho, AudioCaps, MusicCaps, ESC-50, GTZAN) into manifests"
DESCRIPTION = (
    "Write OUT/<dataset>/<split>.jsonl (one JSON object per clip: key, audio, task, text with every reference, "
    "duration from the audio header, and dataset fields) plus OUT/<dataset>/info.json. Run "
    "`%(prog)s DATASET --help` for the layout each dataset expects and its own options."
)


def _add_common(parser: argparse.ArgumentParser, splits: tuple[str, ...]) -> None:
    parser.add_argument("--root", required=True, help="the local copy of the dataset (its official folder layout)")
    parser.add_argument("--out", required=True, help="output folder; manifests go to OUT/<dataset>/<split>.jsonl")
    parser.add_argument("--splits", nargs="+", choices=splits, metavar="SPLIT",
                        help=f"splits to write (default: all present); one of: {', '.join(splits)}")
    parser.add_argument("--keep-missing", action="store_true",
                        help="keep clips whose audio file is absent (without duration); default: count and skip them")
    parser.add_argument("--relative", action="store_true",
                        help="write audio paths relative to the manifest's folder (default: absolute paths)")
    parser.add_argument("--workers", type=int, default=4,
                        help="threads reading audio headers for durations (default: 4)")
    parser.add_argument("--quiet", action="store_true", help="show only warnings and the final counts")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from usam.prepare import DATASETS  # light: the dataset modules import only the standard library

    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for name, module_name in DATASETS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__ + "\nManifest notes: " + module.NOTES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(p, module.SPLITS)
        module.add_arguments(p)


def main(args: argparse.Namespace) -> int:
    import logging
    import sys

    from usam.errors import DataError
    from usam.prepare import prepare_dataset

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    try:
        summaries = prepare_dataset(args.dataset, args.root, args.out, args.splits, keep_missing=args.keep_missing,
                                    relative=args.relative, workers=args.workers, opts=args)
    except (DataError, ValueError) as err:
        print(f"error: {args.dataset}: {err}", file=sys.stderr)
        return 1
    for s in summaries:
        extra = "".join(f", {n} {what}" for n, what in ((s.missing_audio, "missing audio"),
                        (s.no_duration, "without duration"), (s.skipped, "skipped")) if n)
        print(f"{args.dataset}/{s.name}: {s.count} clips, {s.hours:.2f} h{extra} -> {s.path}")
    print(f"{args.dataset}: {sum(s.count for s in summaries)} clips, {sum(s.hours for s in summaries):.2f} h in total")
    return 0
