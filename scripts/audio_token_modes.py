"""What the LLM keeps of what its audio tokens spell, for each way of reading them (no retraining).

    python scripts/audio_token_modes.py --model runs/demo/stage2/final --manifest runs/demo/data/test_general.jsonl
    python scripts/audio_token_modes.py --model M --manifest F --reading top1=posterior,top_k=1 \\
        --reading soft_t05=posterior,top_k=8,temperature=0.5 --reading hybrid=hybrid,top_k=1

Prints, for the first --limit ASR clips: the WER of the greedy CTC spelling (no LLM), then for each reading the
generated WER against the reference and the copy WER against the spelling, and the oracle (one-hot posteriors of
the reference transcript through the same interface). The model's own reading always runs first ("own").
"""
from __future__ import annotations

import argparse
import json

import yaml


def parse_reading(text: str) -> tuple[str, dict]:
    """"name=mode,key=value,..." -> (name, audio_tokens settings)."""
    name, _, spec = text.partition("=")
    parts = [p for p in spec.split(",") if p]
    if not name or not parts:
        raise argparse.ArgumentTypeError(f"--reading {text!r}: expected NAME=MODE[,key=value...]")
    settings = {"mode": parts[0]}
    for part in parts[1:]:
        key, _, value = part.partition("=")
        if key not in ("top_k", "temperature", "blank_threshold", "merge_runs"):
            raise argparse.ArgumentTypeError(f"--reading {text!r}: unknown setting {key!r}")
        settings[key] = yaml.safe_load(value)
    return name, settings


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a trained U-SAM folder with a CTC head (e.g. runs/demo/stage2/final)")
    p.add_argument("--manifest", required=True, help="a manifest with asr entries (e.g. runs/demo/data/test_general.jsonl)")
    p.add_argument("--reading", action="append", type=parse_reading, default=[],
                   help="NAME=MODE[,top_k=K][,temperature=T][,blank_threshold=P][,merge_runs=false]: a reading of the "
                   "audio tokens to score (repeatable); MODE is continuous, posterior or hybrid")
    p.add_argument("--limit", type=int, default=80, help="ASR clips scored, from the top of the manifest (default 80)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per generation batch (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="token budget per answer (default 48)")
    p.add_argument("--no-oracle", action="store_true", help="skip the oracle (one-hot posteriors of the reference)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)

    from usam.probes.copy import score_token_modes

    readings = {"own": {}, **dict(args.reading)}
    results = score_token_modes(args.model, args.manifest, readings, limit=args.limit, batch_size=args.batch_size,
                                max_new_tokens=args.max_new_tokens, oracle=not args.no_oracle)
    print(f"{'reading':<16}{'WER':>8}{'copy WER':>10}   (n = {results['ctc']['n']} clips)")
    for name, r in results.items():
        copy = r.get("copy_wer")
        print(f"{name:<16}{r['wer']:>8.1f}{copy if copy is None else round(copy, 1)!s:>10}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
