"""`usam warmup`: train a small BEATs or MERT offline on fresh synthetic audio, cached."""
from __future__ import annotations

import argparse

HELP = "warm up a small BEATs (sound) or MERT (music) on fresh synthetic audio, offline and cached"
DESCRIPTION = """Train the library's own BEATs or MERT module, at the size the config gives, on audio the synthesiser
renders fresh for every step, with the targets it knows exactly: for MERT (music, rendered at 24 kHz) the
instrument, the tempo class, and per frame the sounding pitch classes, note onsets and beats; for BEATs (sound
events) the class, high or low pitch, and per frame whether the sound is active and where an event starts.
Programs and timbres held out for the test_timbre split never play in training; they are scored apart. Writes the
encoder into --out (MERT: a HuBERT-shaped folder for mert.name_or_path; BEATs: an official-format BEATs.pt for
beats.name_or_path) with curve.json and curve.png (the figures on fixed fresh clips, every eval_every steps,
against minutes).
A folder holding a finished warm-up of the same settings is reused (--force trains again). Needs fluidsynth and
a General MIDI soundfont for music, as `usam synth` does."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="warm-up YAML (configs/warmup/*.yaml): encoder (mert | beats), "
                        "architecture, and the settings of usam/warmup/music.py or usam/warmup/sound.py")
    parser.add_argument("--out", required=True,
                        help="folder for the warmed encoder, curve.json, curve.png and settings.json")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the config's)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the weights and the clips (default: the "
                        "config's)")
    parser.add_argument("--force", action="store_true", help="train even when --out holds a finished warm-up "
                        "of the same settings")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    import sys

    from usam.warmup.run import run_warmup

    overrides = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    try:
        path, curve, reused = run_warmup(args.config, args.out, overrides, force=args.force,
                                         progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as err:
        print(f"usam warmup: error: {err}", file=sys.stderr)
        return 1
    names = [k for k in curve[-1] if "/" in k]
    print("step  minutes  " + "  ".join(names))
    for row in curve:
        print(f"{row['step']:>4}  {row['minutes']:>7.2f}  "
              + "  ".join(f"{row[k]:>{len(k)}.1f}" for k in names))
    print(f"{'reused' if reused else 'wrote'} {path} (name_or_path of the model YAML's encoder section)")
    return 0
