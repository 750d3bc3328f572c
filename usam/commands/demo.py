"""`usam demo`: the whole product on a CPU, offline."""
from __future__ import annotations

import argparse

HELP = "train a real U-SAM offline on this CPU, evaluate it, plot it and answer questions"
DESCRIPTION = """Generate the synthetic speech/sound/music corpus, cache the frozen Whisper features, train stage 1
(connector) then stage 2 (LLM LoRA) within the time budget, evaluate every task of the test split, write the
plots, and answer one question each about a speech, a sound and a music clip. Uses Whisper tiny.en and
SmolLM2-135M-Instruct from their pip packages (converted once into ~/.cache/usam). Re-running reuses every
finished step in --out."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (corpus, cache, runs, plots; default %(default)s)")
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="time budget for the whole demo in minutes; training gets what is left after the "
                        "corpus and the cache, minus the evaluation's share (default %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="plumbing check in about 3 minutes: a tiny corpus, a few steps, a partial evaluation")
    parser.add_argument("--hours", type=float, default=None,
                        help="corpus size in hours of audio (default: 0.5 per 10 budget minutes, at least 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the corpus and training (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=None, help="processes for corpus generation (default: all cores)")
    parser.add_argument("--model-config", default=None, help="model YAML (default configs/model/demo.yaml)")
    parser.add_argument("--eval-points", type=int, default=2,
                        help="validations per training stage, evenly spaced; each logs the loss and per-task scores "
                        "(ASR WER, accuracy, ...) of generated answers, so more points give a finer quality-against-"
                        "minutes curve at about 20 s each (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    import logging

    from usam.demo import DemoPlan, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plan = DemoPlan.make(args.out, args.minutes, args.quick, hours=args.hours, seed=args.seed, jobs=args.jobs,
                         model_yaml=args.model_config, eval_points=args.eval_points)
    run(plan)
    return 0
