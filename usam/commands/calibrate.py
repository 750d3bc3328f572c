"""`usam calibrate`: fit the per-label biases of ranked classification on labelled validation clips."""
from __future__ import annotations

import argparse

HELP = "fit per-label biases for ranked classification on validation clips (label_calibration.json)"
DESCRIPTION = """Score every cls item of --manifest (labelled, in-domain validation clips: never the test set)
against the label set by ranking, as `usam eval --cls-mode rank` does, then fit one additive bias per label that
minimises the cross-entropy of the scores plus biases (usam/evaluation/calibration.py). The biases remove a label
prior the model learned (it favours one of two similar classes on every clip) without touching the model. Writes
label_calibration.json into the model folder (or --out), where `usam eval --cls-mode rank` uses it by default
(--label-calibration auto), and prints the calibration clips' accuracy before and after (an in-sample figure:
score the test set with `usam eval`)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from usam.evaluation.calibration import DEFAULT_L2

    parser.add_argument("model", help="a trained model folder")
    parser.add_argument("--manifest", required=True, help="manifest with the labelled cls clips to fit on")
    parser.add_argument("--ctc-weight", type=float, default=0.0,
                        help="the ranking CTC weight the biases are for: the --cls-ctc-weight (or --ctc-weight) "
                        "that `usam eval` will rank with (default 0: the LLM alone)")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="the label set (default: the manifest's distinct cls references; give the "
                        "benchmark's full set when the validation clips do not cover it)")
    parser.add_argument("--l2", type=float, default=DEFAULT_L2,
                        help=f"weight of the biases' squared norm (default {DEFAULT_L2:g}: just enough to fix their "
                        "free common shift and keep labels with few clips near 0)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per scoring batch (default 8)")
    parser.add_argument("--out", default=None,
                        help="where to write the calibration (default: MODEL/label_calibration.json)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from usam.errors import DataError
    from usam.evaluation.calibration import CALIBRATION_FILE, calibrate

    try:
        result = calibrate(args.model, args.manifest, args.ctc_weight, labels=args.labels, l2=args.l2,
                           batch_size=args.batch_size, progress=not args.no_progress)
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"usam calibrate: error: {err}", file=sys.stderr)
        return 1
    out = result.save(Path(args.out) if args.out else Path(args.model, CALIBRATION_FILE))
    for label, bias in zip(result.labels, result.bias):
        print(f"  {label:<24} {bias:+.3f}")
    print(f"{result.items} clips, {len(result.labels)} labels, ranking weight {result.ctc_weight:g}: accuracy "
          f"{result.accuracy:.2f}% -> {result.calibrated_accuracy:.2f}% with the biases (on these clips)")
    print(f"wrote {out}")
    return 0
