"""Choose the CTC weight of ranked classification on validation clips, then report the test sets at that weight.

Reads the JSON files that scripts/rank_weights.py writes (one per model, e.g. one per training seed). The weight is
the one with the best mean validation accuracy over the models (ties: the smaller weight, which leans more on the
LLM); the test sets are then reported per model with their mean and range, at that weight and at every weight.

    python scripts/pick_rank_weight.py --valid valid_s0.json valid_s1.json valid_s2.json \
        --test in-domain=test_s0.json,test_s1.json,test_s2.json \
        --test held-out=timbre_s0.json,timbre_s1.json,timbre_s2.json --out pick.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _accuracies(paths: list[str]) -> list[dict[str, float]]:
    return [json.loads(Path(p).read_text())["accuracy"] for p in paths]


def summary(values: list[float]) -> dict:
    return {"values": values, "mean": round(sum(values) / len(values), 2), "range": round(max(values) - min(values), 2)}


def pick(valid: list[dict[str, float]]) -> str:
    """The weight (as written in the files) with the best mean accuracy over the models; ties go to the smaller."""
    weights = sorted(set.intersection(*(set(v) for v in valid)), key=float)
    if not weights:
        raise ValueError("the validation files share no weight")
    # means rounded before comparing, so that equal accuracies summed in another order still tie
    return max(weights, key=lambda w: (round(sum(v[w] for v in valid) / len(valid), 6), -float(w)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--valid", nargs="+", required=True, help="rank_weights.py outputs on validation clips")
    parser.add_argument("--test", action="append", default=[],
                        help="NAME=a.json,b.json,...: a test set's rank_weights.py outputs, one per model, in the "
                        "same model order as --valid (repeatable)")
    parser.add_argument("--out", default=None, help="write the choice and every figure as JSON")
    args = parser.parse_args(argv)

    valid = _accuracies(args.valid)
    chosen = pick(valid)
    report = {"chosen_weight": float(chosen), "valid": {w: summary([v[w] for v in valid]) for w in valid[0]},
              "test": {}}
    print(f"chosen on validation ({len(valid)} models): weight {chosen}, "
          f"mean {report['valid'][chosen]['mean']} range {report['valid'][chosen]['range']}")
    for spec in args.test:
        name, _, files = spec.partition("=")
        if not files:
            parser.error(f"--test {spec!r}: expected NAME=a.json,b.json")
        tests = _accuracies(files.split(","))
        if len(tests) != len(valid):
            parser.error(f"--test {name}: {len(tests)} files for {len(valid)} validation models")
        report["test"][name] = {w: summary([t[w] for t in tests]) for w in tests[0]}
        at = report["test"][name][chosen]
        print(f"{name} at weight {chosen}: {' / '.join(f'{x:.1f}' for x in at['values'])}, mean {at['mean']}, "
              f"range {at['range']}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
