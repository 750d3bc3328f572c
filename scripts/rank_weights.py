"""Classification by ranking the label set, at several CTC weights from one pass: each clip's LLM score and CTC
score of every label (model.score_answers at weights 0 and 1), then the accuracy of each mixture
(1 - w) * LLM + w * CTC. What `usam eval --cls-mode rank --ctc-weight w --ctc-tasks cls` scores, for many w.

    python scripts/rank_weights.py runs/demo/stage2/final runs/sound_eval/test_timbre.cls.jsonl \
        --weights 0 0.3 0.5 0.7 1 --out rank_weights.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a trained model folder with a CTC head")
    parser.add_argument("manifest", help="a manifest of classification items (task cls)")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7, 1.0],
                        help="CTC weights to score (default 0 0.3 0.5 0.7 1)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per batch (default 8)")
    parser.add_argument("--out", default=None, help="write the per-weight accuracies (and every score) as JSON")
    args = parser.parse_args(argv)

    from usam import USAMModel, USAMProcessor
    from usam.data import read_manifest
    from usam.evaluation.calibration import label_scores

    model = USAMModel.from_pretrained(args.model).eval()
    processor = USAMProcessor.from_pretrained(args.model)
    entries = [e for e in read_manifest(args.manifest, strict=True) if e.task == "cls"]
    if not entries:
        print(f"{args.manifest}: no cls items", file=sys.stderr)
        return 2
    labels = sorted({e.text[0] for e in entries})
    llm = label_scores(model, processor, entries, labels, 0.0, args.batch_size)
    ctc = label_scores(model, processor, entries, labels, 1.0, args.batch_size)
    truth = torch.tensor([labels.index(e.text[0]) for e in entries])
    accuracy = {}
    for w in args.weights:
        best = ((1 - w) * llm + w * ctc).argmax(-1)
        accuracy[f"{w:g}"] = round(100.0 * float((best == truth).float().mean()), 2)
        print(f"weight {w:g}: accuracy {accuracy[f'{w:g}']:.2f}% ({len(entries)} clips, {len(labels)} labels)")
    if args.out:
        Path(args.out).write_text(json.dumps({"model": args.model, "manifest": args.manifest, "labels": labels,
                                              "accuracy": accuracy, "keys": [e.key for e in entries],
                                              "llm": llm.tolist(), "ctc": ctc.tolist()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
