"""`usam demo`: the whole product on a CPU, offline."""
from __future__ import annotations

import argparse

from usam.tasks import CLS_MODES

HELP = "train a real U-SAM offline on this CPU, evaluate it, plot it and answer questions"
DESCRIPTION = """Generate the synthetic speech/sound/music corpus (configs/synth/demo.yaml), cache the frozen
Whisper features, train the alignment stage (the connector learns by CTC to spell each answer in the LLM's input
embeddings, without running the LLM) and stage 2 (the connector and the LLM's LoRA, every task), evaluate every
task of the test splits, write the plots, and answer one question each about a speech, a sound and a music clip.
The work is fixed (corpus hours, and each stage's steps in configs/train/demo_*.yaml), so a slower machine does
the same work, only later; the ETA is printed after a timing of each stage's step. The figures differ across
CPU instruction sets (fp32 sums in another order) and move by up to ~15 points with the seed: --seeds 3 gives
their mean and range. Uses Whisper tiny.en and SmolLM2-135M-Instruct from their pip packages (converted once into
~/.cache/usam). Re-running reuses every finished step in --out."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (corpus, cache, runs, plots; default %(default)s)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="cap on the whole demo's wall time in minutes (on each run's, with --seeds): when the "
                        "printed ETA exceeds it, every stage's steps are cut in proportion (and the figures differ "
                        "from the full recipe's). Default: no cap, the full recipe")
    parser.add_argument("--steps", nargs="+", default=None, metavar="STAGE=N",
                        help="optimiser steps of a stage instead of its training YAML's (stages: align, stage2), "
                        "e.g. --steps align=2000 stage2=450 for a longer run of the same recipe")
    parser.add_argument("--set", nargs="+", default=None, metavar="SCOPE:KEY=VALUE", dest="settings",
                        help="a training-config key of one stage (SCOPE align or stage2, e.g. "
                        "stage2:data.reading.per_batch=8) or a model key for every stage (SCOPE model, e.g. "
                        "model:audio_tokens.mode=hybrid), set over the recipe's YAML; values are read as YAML. For "
                        "ablations: the figures then differ from the recipe's")
    parser.add_argument("--quick", action="store_true",
                        help="plumbing check in a few minutes: a tiny corpus, a few steps, a partial evaluation")
    parser.add_argument("--hours", type=float, default=None,
                        help="corpus size in hours of audio (default: configs/synth/demo.yaml's, 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the corpus and training (default %(default)s)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="runs of the same recipe, with seeds --seed, --seed+1, ...; above 1 each run goes to "
                        "OUT/seed<k> (k its seed; it reuses its finished work as a single run does, and a seed whose "
                        "OUT/seed<k>/demo_summary.json exists is read, not run: seeds run as separate --seed runs "
                        "into those folders are then only aggregated), and "
                        "OUT/seeds_summary.json holds each headline figure's mean, min, max, range and per-seed "
                        "values, with the machine and the date. Default %(default)s: one run in OUT")
    parser.add_argument("--jobs", type=int, default=None, help="processes for corpus generation (default: all cores)")
    parser.add_argument("--model-config", default=None, help="model YAML (default configs/model/demo.yaml)")
    parser.add_argument("--encoders", nargs="+", default=None, choices=("whisper", "beats", "mert"),
                        help="the encoders the model runs (default: those the model YAML enables: Whisper). BEATs "
                        "and MERT have no offline weights: the demo first warms up small ones on fresh synthetic "
                        "sound and music (configs/warmup/demo_*.yaml, a few minutes, cached in OUT/warmup)")
    parser.add_argument("--ctc-weight", type=float, default=None,
                        help="joint CTC / LLM decoding of the evaluation's transcripts and class labels: weight in [0, 1] of the "
                        "CTC prefix probability of what the audio tokens spell (default 0.5; --llm-alone scores the "
                        "LLM alone beside it). 0: the LLM alone")
    parser.add_argument("--cls-mode", choices=CLS_MODES, default=None,
                        help="classification in the evaluation: 'rank' scores every label of the set as the answer "
                        "(jointly with the CTC head at --ctc-weight) and takes the best (default); 'generate' writes "
                        "an answer and maps it onto the label set")
    parser.add_argument("--cls-ctc-weight", type=float, default=None,
                        help="with --cls-mode rank: the CTC weight of the ranked labels, in [0, 1] (default 0.8, "
                        "chosen on fresh in-domain validation clips over three seeds; 0 when --ctc-weight is 0)")
    parser.add_argument("--no-label-calibration", action="store_false", dest="label_calibration",
                        help="with --cls-mode rank: rank the labels on the model's scores alone. By default a bias per "
                        "label is fitted after training on about 200 fresh in-domain clips of every sound class and "
                        "instrument (configs/synth/demo_calibration.yaml; `usam calibrate`), which removes the label "
                        "prior a seed's model learned (one of two similar classes named for every clip)")
    parser.add_argument("--llm-alone", action="store_true",
                        help="with joint decoding (--ctc-weight > 0): also transcribe the unseen-voices and real-speech "
                        "splits by the LLM alone (weight 0) and report that WER (asr_llm_wer) beside the joint one: "
                        "what the LLM keeps of its audio tokens without the CTC head's help (about 1.5 more minutes)")
    parser.add_argument("--whisper-reference", action="store_true",
                        help="also transcribe the unseen-voices and real-speech splits with Whisper tiny.en's own "
                        "decoder (whisper_reference_wer): how hard the voices are for an ASR model trained on real "
                        "speech (about 80 s: Whisper decodes 30 s windows)")
    parser.add_argument("--eval-points", type=int, default=2,
                        help="validations per training stage, evenly spaced; each logs the loss and per-task scores "
                        "(ASR WER, accuracy, ...) of generated answers, so more points give a finer quality-against-"
                        "minutes curve at about 20 s each (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    import logging
    import sys

    from usam.demo import DemoPlan, run, run_seeds

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        plan = DemoPlan.make(args.out, args.quick, minutes=args.minutes, hours=args.hours, seed=args.seed,
                             jobs=args.jobs, model_yaml=args.model_config, eval_points=args.eval_points,
                             steps=args.steps, seeds=args.seeds, settings=args.settings,
                             ctc_weight=args.ctc_weight, cls_mode=args.cls_mode,
                             cls_ctc_weight=args.cls_ctc_weight, label_calibration=args.label_calibration,
                             llm_alone=args.llm_alone, whisper_reference=args.whisper_reference,
                             encoders=args.encoders)
    except ValueError as error:
        print(f"usam demo: error: {error}", file=sys.stderr)
        return 2
    if plan.seeds > 1:
        run_seeds(plan)
    else:
        run(plan)
    return 0
