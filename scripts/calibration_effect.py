"""What label calibration does to ranked classification, from scores already computed: fit the per-label biases on
one scores file (validation clips) and score test files with and without them, per model.

Every file is the JSON of scripts/rank_weights.py (labels, each clip's LLM and CTC score of every label). The
score at weight w is (1 - w) * LLM + w * CTC, what `usam eval --cls-mode rank` ranks; the biases are those `usam
calibrate` fits (usam/evaluation/calibration.py). Give one --calibration file per model and, per test set, one
file per model in the same order:

    python scripts/calibration_effect.py --weight 0.8 --calibration cal_s0.json cal_s1.json cal_s2.json \
        --test in-domain=test_s0.json,test_s1.json,test_s2.json --test held-out=timbre_s0.json,... --out effect.json

Prints, per test set (and per domain when --domains maps labels to one), each model's accuracy before and after
and their mean and range.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def _scores(data: dict, weight: float) -> torch.Tensor:
    return (1 - weight) * torch.tensor(data["llm"]) + weight * torch.tensor(data["ctc"])


def _references(data: dict) -> list[str]:
    from usam.data import read_manifest

    by_key = {e.key: e.text[0] for e in read_manifest(data["manifest"], strict=True) if e.task == "cls"}
    return [by_key[k] for k in data["keys"]]


def _summary(values: list[float]) -> dict:
    return {"values": [round(v, 2) for v in values], "mean": round(sum(values) / len(values), 2),
            "range": round(max(values) - min(values), 2)}


def main(argv=None) -> int:
    from usam.evaluation.calibration import DEFAULT_L2, fit_label_bias

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weight", type=float, required=True, help="the ranking CTC weight")
    parser.add_argument("--calibration", nargs="+", required=True, help="one rank_weights JSON per model to fit on")
    parser.add_argument("--test", action="append", default=[], metavar="NAME=F0,F1,...",
                        help="a test set: one rank_weights JSON per model, in --calibration's order (repeatable)")
    parser.add_argument("--domains", default=None,
                        help="JSON file mapping a label to its domain (sound, music...): accuracy per domain too")
    parser.add_argument("--l2", type=float, default=DEFAULT_L2, help=f"as usam calibrate (default {DEFAULT_L2:g})")
    parser.add_argument("--out", default=None, help="write the figures as JSON")
    args = parser.parse_args(argv)

    domains = json.loads(Path(args.domains).read_text()) if args.domains else {}
    biases = []
    for path in args.calibration:
        data = json.loads(Path(path).read_text())
        refs = _references(data)
        labels = data["labels"]
        bias = fit_label_bias(_scores(data, args.weight), torch.tensor([labels.index(r) for r in refs]), args.l2)
        biases.append(dict(zip(labels, bias.tolist())))
    report = {"weight": args.weight, "l2": args.l2, "bias": biases, "test": {}}
    for spec in args.test:
        name, _, files = spec.partition("=")
        files = [f for f in files.split(",") if f]
        if len(files) != len(biases):
            parser.error(f"--test {name}: {len(files)} files for {len(biases)} models")
        cells: dict[str, dict[str, list[float]]] = {}
        for path, bias in zip(files, biases):
            data = json.loads(Path(path).read_text())
            labels, refs = data["labels"], _references(data)
            scores = _scores(data, args.weight)
            truth = torch.tensor([labels.index(r) for r in refs])
            offsets = torch.tensor([bias.get(label, 0.0) for label in labels])
            for kind, s in (("before", scores), ("after", scores + offsets)):
                right = s.argmax(-1) == truth
                groups = {"all": torch.ones_like(right)}
                for domain in sorted(set(domains.get(r) for r in refs) - {None}):
                    groups[domain] = torch.tensor([domains.get(r) == domain for r in refs])
                for group, mask in groups.items():
                    if mask.any():
                        value = 100.0 * float(right[mask].float().mean())
                        cells.setdefault(group, {}).setdefault(kind, []).append(value)
        report["test"][name] = {g: {k: _summary(v) for k, v in kinds.items()} for g, kinds in cells.items()}
        for group, kinds in report["test"][name].items():
            b, a = kinds["before"], kinds["after"]
            print(f"{name} [{group}]: before {' / '.join(f'{v:.1f}' for v in b['values'])} (mean {b['mean']:.1f}, "
                  f"range {b['range']:.1f}); after {' / '.join(f'{v:.1f}' for v in a['values'])} "
                  f"(mean {a['mean']:.1f}, range {a['range']:.1f})")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
