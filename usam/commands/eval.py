"""`usam eval`: evaluate a model folder on a registered benchmark or on a manifest."""
from __future__ import annotations

import argparse

from usam.tasks import CLS_MODES, EVAL_DTYPES

HELP = "evaluate a model folder on a benchmark (predictions.jsonl, metrics.json, metrics.md)"
DESCRIPTION = """Evaluate a U-SAM model folder on a registered benchmark (--benchmark NAME --data-root DIR, see
configs/eval/benchmarks.yaml) or on a manifest (--manifest FILE [--task TASK]). Batched, left-padded generation,
greedy by default, on full-length audio; batches are cut by padded audio seconds. Writes predictions.jsonl (one
line per item, with per-item metrics), metrics.json (per-task metrics, generation settings, expert usage per
task) and metrics.md into --out. A bad manifest line or audio file stops the run with file, line and reason.
Several processes: torchrun --nproc-per-node N -m usam.cli eval ... (or eval/evaluate.py): each rank generates
its share and rank 0 merges and scores."""


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared with `usam ablate`."""
    g = parser.add_argument_group("generation")
    g.add_argument("--max-audio-seconds", type=float, default=240.0,
                   help="cap on the padded audio seconds of a batch: len(batch) * longest clip (default 240)")
    g.add_argument("--batch-size", type=int, default=32,
                   help="cap on the samples of a batch (default 32); 1 generates one sample at a time")
    g.add_argument("--max-new-tokens", type=int, default=None,
                   help="one token budget for every task (default: each task's value from the registry)")
    g.add_argument("--num-beams", type=int, default=1, help="beam search width (default 1: greedy)")
    g.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="transformers' repetition_penalty (default 1.0)")
    g.add_argument("--ctc-weight", type=float, default=0.0,
                   help="joint CTC / LLM decoding: weight in [0, 1] of the CTC prefix probability of what the audio "
                   "tokens spell, against the LLM's next-token probability (default 0: the LLM alone; needs a model "
                   "with a CTC head, loss.lambda_ctc > 0)")
    g.add_argument("--ctc-candidates", type=int, default=16,
                   help="with --ctc-weight: the LLM's best next tokens rescored per step (default 16)")
    g.add_argument("--ctc-tasks", default="asr",
                   help="with --ctc-weight: comma-separated tasks decoded jointly, whose answers spell the audio "
                   "(default asr)")
    g.add_argument("--no-ctc-rescore", dest="ctc_rescore", action="store_false",
                   help="with --ctc-weight: keep each jointly decoded answer as the search left it. By default the "
                   "answer is compared, under the same joint score, with what the audio tokens spell on their best "
                   "CTC path, and the better of the two is kept")
    g.add_argument("--cls-mode", choices=CLS_MODES, default="generate",
                   help="classification: 'generate' writes an answer and maps it onto the label set (default); "
                   "'rank' scores every label of the set as the answer and takes the best (joint with the CTC head "
                   "at --ctc-weight when cls is among --ctc-tasks), so every answer is a label. The label set is the "
                   "benchmark's `labels` option, else the distinct references of its cls items")
    g.add_argument("--cls-ctc-weight", type=float, default=None,
                   help="with --cls-mode rank and cls among --ctc-tasks: the CTC weight of the ranked labels, in "
                   "[0, 1] (default: --ctc-weight). Choose it on validation clips (scripts/rank_weights.py, "
                   "scripts/pick_rank_weight.py), not on the test set")
    g.add_argument("--device", default=None,
                   help="torch device (default: cuda:LOCAL_RANK when a GPU is present, else cpu)")
    g.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes that decode audio beside the model (default: none on a CPU, "
                   "where they would take the model's cores; up to 4 on a GPU)")
    g.add_argument("--dtype", choices=EVAL_DTYPES, default="auto",
                   help="dtype of the whole model during evaluation (default auto: the LLM's own, llm.dtype, so the "
                   "encoders and connector do not run in fp32 beside a bf16 LLM; audio front ends stay fp32)")
    g.add_argument("--manifest-instructions", action="store_true",
                   help="use the manifest's own instruction where an item has one (default: the task's fixed "
                   "evaluation prompt; qa always takes the item's question)")
    g.add_argument("--limit", type=int, default=None,
                   help="evaluate only the first N items of the manifest (smoke tests)")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder (written by save_pretrained / training)")
    parser.add_argument("--out", required=True, help="output folder for predictions.jsonl, metrics.json, metrics.md")
    src = parser.add_argument_group("what to evaluate (a benchmark or a manifest)")
    src.add_argument("--benchmark", default=None, help="a benchmark name of the registry")
    src.add_argument("--data-root", default=None, help="root of the prepared data (${data_root} in the registry)")
    src.add_argument("--synth-dir", default=None, help="synthetic corpus folder (default DATA_ROOT/synth)")
    src.add_argument("--registry", default=None, help="benchmark registry YAML (default configs/eval/benchmarks.yaml)")
    src.add_argument("--manifest", default=None,
                     help="a manifest to evaluate (with --benchmark: replaces the registry's path)")
    src.add_argument("--task", default=None,
                     help="the manifest's task, or 'mixed' (each item scored by its own task's metric); default: "
                     "the manifest's one task, or mixed when it has several")
    parser.add_argument("--model-name", default=None,
                        help="the model's name in metrics.json (default: the folder path)")
    add_generation_arguments(parser)
    parser.add_argument("--label-calibration", default="auto", metavar="auto|none|FILE",
                        help="with --cls-mode rank: per-label biases added to the ranking scores, fitted on validation "
                        "clips by `usam calibrate` at the same ranking weight. auto (default): the model folder's "
                        "label_calibration.json when it has one; none: no biases; or a calibration file")


def settings_from_args(args):
    from usam.evaluation.generation import GenerationSettings

    return GenerationSettings(num_beams=args.num_beams, repetition_penalty=args.repetition_penalty,
                              max_audio_seconds=args.max_audio_seconds, max_batch_size=args.batch_size,
                              max_new_tokens=args.max_new_tokens, ctc_weight=args.ctc_weight,
                              ctc_candidates=args.ctc_candidates, cls_mode=args.cls_mode,
                              cls_ctc_weight=args.cls_ctc_weight, ctc_rescore=args.ctc_rescore,
                              ctc_tasks=tuple(t.strip() for t in args.ctc_tasks.split(",") if t.strip()))


def main(args: argparse.Namespace) -> int:
    import sys

    from usam.errors import DataError
    from usam.evaluation.calibration import apply_label_calibration
    from usam.evaluation.registry import load_registry
    from usam.evaluation.runner import evaluate

    if args.benchmark is None and args.manifest is None:
        print("usam eval: error: give --benchmark NAME --data-root DIR, or --manifest FILE", file=sys.stderr)
        return 2
    try:
        benchmark = None
        if args.benchmark is not None:
            registry = load_registry(args.registry)
            if args.benchmark not in registry:
                print(f"usam eval: error: unknown benchmark {args.benchmark!r}; known: {', '.join(registry)}",
                      file=sys.stderr)
                return 2
            benchmark = registry[args.benchmark]
        settings = settings_from_args(args)
        apply_label_calibration(settings, args.model, args.label_calibration)
        result = evaluate(args.model, benchmark, args.out, manifest=args.manifest, task=args.task,
                          data_root=args.data_root, synth_dir=args.synth_dir, settings=settings,
                          model_name=args.model_name, device=args.device, workers=args.workers, dtype=args.dtype,
                          progress=not args.no_progress, manifest_instructions=args.manifest_instructions,
                          limit=args.limit)
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"usam eval: error: {err}", file=sys.stderr)
        return 1
    if result is not None:
        print(open(f"{args.out}/metrics.md", encoding="utf-8").read(), end="")
        print(f"wrote {args.out}/predictions.jsonl, metrics.json, metrics.md ({result['n']} items, "
              f"{result['run']['seconds']:.1f} s)")
    return 0
