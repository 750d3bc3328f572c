"""`usam probe`: cheap heads on cached encoder features (no LLM), as ceilings for what the LLM path can learn."""
from __future__ import annotations

import argparse

HELP = "probe cached encoder features with cheap heads (no LLM): classifiers and a CTC transcriber"
DESCRIPTION = """Measure what the frozen encoder features of a corpus carry, and how fast a cheap head reads it,
without the LLM. Classification probes: a linear classifier on a summary of each clip's frames (their mean and
standard deviation, and the autocorrelation of their flux, which keeps the beat), for the sound-event class, the
instrument and the tempo answer of the synthetic corpus (`usam synth`), scored on the in-domain test split and on
held-out timbres (test_timbre). CTC probe: Linear-GELU-Linear on
stacked frames into the LLM's width, scored through the LLM's own frozen input embeddings and a learned blank
(the loss behind loss.lambda_ctc), decoded greedily and scored by WER on the test split's ASR lines and on
test_general. Features come from --cache; when that folder does not exist it is built first for every split read
(the frozen encoders of --model). Prints a table per probe and writes the curves to --out as JSON."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="corpus folder with train.jsonl, test.jsonl and optionally "
                        "test_general.jsonl and test_timbre.jsonl (usam synth, usam demo's data/)")
    parser.add_argument("--cache", required=True, help="feature cache folder (built here if it does not exist)")
    parser.add_argument("--model", default="configs/model/demo.yaml",
                        help="model YAML: its frozen encoders build a missing cache, its LLM gives the "
                        "tokenizer and input embeddings for the CTC probe")
    parser.add_argument("--encoder", nargs="+", default=["whisper"],
                        help="which cached encoders' features to probe; with several, each classifier reads their "
                        "clip summaries side by side (what the encoders carry together) and the CTC probe is "
                        "skipped (their frame rates differ)")
    parser.add_argument("--classify", nargs="*", default=["sound", "instrument", "tempo"],
                        help="label families for the classification probe (none: skip it)")
    parser.add_argument("--pooling", nargs="+", choices=("meanstd", "rhythm"), default=["meanstd", "rhythm"],
                        help="clip summaries the classifiers read, one probe each: meanstd (mean and standard "
                        "deviation of the frames over time: content) and rhythm (autocorrelation of the frames' "
                        "flux over lags up to 2 s: periodicity, such as the beat)")
    parser.add_argument("--classify-steps", type=int, default=200, help="full-batch steps of each classifier")
    parser.add_argument("--ctc-steps", type=int, default=500, help="steps of the CTC probe (0: skip it)")
    parser.add_argument("--ctc-eval", type=int, nargs="+", default=[100, 200, 300, 500],
                        help="steps at which the CTC probe is scored (its last step always is)")
    parser.add_argument("--ctc-vocab", choices=("corpus", "full"), default="corpus",
                        help="CTC softmax over the training transcripts' tokens, or over the LLM's whole vocabulary "
                        "(4,096 sampled rows a step, as loss.ctc_vocab_rows in training)")
    parser.add_argument("--batch-size", type=int, default=16, help="CTC probe batch size")
    parser.add_argument("--lr", type=float, default=3e-3, help="CTC probe learning rate")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="use at most this many training ASR lines (to measure the effect of data size)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the heads and of randomly initialised encoders")
    parser.add_argument("--out", default=None, help="JSON file for the curves (default: <cache>/probe.json)")


def _entries(data, name):
    from usam.data import read_manifest

    path = data / name
    return read_manifest(path, strict=True) if path.exists() else []


def _ensure_cache(args, splits: dict) -> None:
    from pathlib import Path

    from usam.commands.cache import load_model_for_cache
    from usam.training.cache import build_cache

    cache = Path(args.cache)
    if (cache / "meta.json").exists():
        return
    model = load_model_for_cache(args.model, args.seed, 1)
    seen, entries = set(), []
    for rows in splits.values():
        for e in rows:
            if e.key not in seen:
                seen.add(e.key)
                entries.append(e)
    print(f"building the feature cache {cache} for {len(entries)} samples")
    build_cache(model, entries, cache)


def main(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from usam.probes import CachedFeatures, probe_labels
    from usam.probes.heads import POOLINGS, classification_probe, ctc_probe

    data = Path(args.data)
    splits = {"train": _entries(data, "train.jsonl"), "valid": _entries(data, "valid.jsonl"),
              "test": _entries(data, "test.jsonl"),
              "general": _entries(data, "test_general.jsonl"), "timbre": _entries(data, "test_timbre.jsonl")}
    if not splits["train"]:
        print(f"usam probe: error: {data / 'train.jsonl'} is missing or empty", file=sys.stderr)
        return 2
    _ensure_cache(args, splits)
    features = CachedFeatures(args.cache)
    missing = {name: sum(not features.has(e.key) for e in rows) for name, rows in splits.items()}
    if any(missing.values()):
        print(f"usam probe: error: {args.cache} lacks features of {missing} samples per split; remove the folder "
              "to rebuild it for these manifests", file=sys.stderr)
        return 2
    import torch

    encoders = list(args.encoder)
    unknown = [name for name in encoders if name not in features.encoders]
    if unknown:
        print(f"usam probe: error: {args.cache} holds no {unknown} features (cached: {features.encoders})",
              file=sys.stderr)
        return 2
    named = " + ".join(encoders)
    report: dict = {"encoder": named, "classify": {}, "ctc": None}
    for family in args.classify:
        labelled = {name: probe_labels(splits[name], family) for name in ("train", "test", "timbre")}
        if not labelled["train"]:
            print(f"probe {family}: no training labels, skipped")
            continue
        for pooling in args.pooling:
            summary, described = POOLINGS[pooling]
            rows = {name: [(torch.cat([summary(features.get(k, enc)) for enc in encoders]), y) for k, y in pairs]
                    for name, pairs in labelled.items()}
            result = classification_probe(rows.pop("train"), rows, steps=args.classify_steps, seed=args.seed)
            report["classify"].setdefault(family, {})[pooling] = result
            print(f"\nprobe {family}: linear on {described} of {named} frames, "
                  f"{result['train_size']} training clips, {len(result['labels'])} labels; accuracy % "
                  "(test = in-domain, timbre = held-out timbres)")
            for point in result["curve"]:
                print("  " + "  ".join(f"{k}={v}" for k, v in point.items()))
    if args.ctc_steps > 0 and len(encoders) > 1:
        print(f"\nprobe ctc: skipped (one encoder at a time; --encoder names {named})")
    elif args.ctc_steps > 0:
        report["ctc"] = _run_ctc(args, splits, features, ctc_probe)
    out = Path(args.out) if args.out else Path(args.cache) / "probe.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwrote {out}")
    return 0


def _run_ctc(args, splits, features, ctc_probe):
    import time

    import torch

    from usam.config import USAMConfig
    from usam.llm import load_llm, load_tokenizer
    from usam.training.config import _model_sections, find_file

    config = USAMConfig(**_model_sections(str(find_file(args.model)), find_file(".")))
    tokenizer = load_tokenizer(config.llm)
    llm, _ = load_llm(config.llm)
    embeddings = llm.get_input_embeddings().weight.detach().float()
    del llm
    asr = [e for e in splits["train"] if e.task == "asr"][: args.train_limit]
    train = [(features.get(e.key, args.encoder[0]), tokenizer(e.target, add_special_tokens=False).input_ids)
             for e in asr]
    tests = {name: [(features.get(e.key, args.encoder[0]), e.target) for e in splits[name] if e.task == "asr"]
             for name in ("test", "general")}
    distinct = len({e.target for e in asr})
    start = time.time()
    result = ctc_probe(train, {k: v for k, v in tests.items() if v}, embeddings,
                       lambda ids: tokenizer.decode(ids, skip_special_tokens=True), steps=args.ctc_steps,
                       eval_at=tuple(args.ctc_eval), batch_size=args.batch_size, lr=args.lr, vocab=args.ctc_vocab,
                       seed=args.seed)
    result.update(distinct_sentences=distinct, seconds=round(time.time() - start, 1))
    print(f"\nprobe ctc: {len(train)} training ASR clips ({distinct} distinct sentences), {args.encoder[0]} frames "
          f"stacked by 5, {args.ctc_vocab} vocabulary ({result['vocab_size']} tokens), "
          f"{result['seconds']} s; WER % (test = in-domain, general = unseen voices and sentences)")
    for point in result["curve"]:
        print("  " + "  ".join(f"{k}={v}" for k, v in point.items()))
    for split, rows in result["examples"].items():
        for row in rows[:2]:
            print(f"  [{split}] ref: {row['reference']}\n  {'':{len(split) + 2}} hyp: {row['hypothesis']}")
    return result
