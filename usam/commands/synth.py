"""`usam synth`: generate the synthetic multi-domain corpus (speech, sound events, music, mixtures)."""
from __future__ import annotations

import argparse

HELP = "generate a synthetic speech/sound/music corpus with manifests (deterministic by seed)"
DESCRIPTION = """Generate a deterministic synthetic corpus: English sentences from a template grammar spoken by
espeak-ng, flite and festival voices (asr, s2tt to Chinese), procedural sound events (aac, cls, qa count),
music composed with pretty_midi and rendered by fluidsynth (mc, cls instrument, qa instrument/tempo/mode/drums)
and speech over music or noise (asr, qa). Writes audio/<split>/<domain>/*.wav (16 kHz mono), <split>.jsonl,
<split>.<task>.jsonl and metadata.json into --out. Whole voices are held out for the test split.
Re-running with the same config, seed and size reuses a complete output folder.
Needs: apt-get install -y espeak-ng flite festival festvox-kallpc16k festvox-us-slt-hts fluidsynth
fluid-soundfont-gm sox"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (created; a complete earlier run with the "
                        "same settings is reused, an incomplete or different one is replaced)")
    parser.add_argument("--hours", type=float, default=None,
                        help="total hours of audio, shared out by the config's domain and split fractions "
                        "(default: the config's explicit `counts`, else its `hours`)")
    parser.add_argument("--seed", type=int, default=None, help="corpus seed (default: the config's `seed`)")
    parser.add_argument("--config", default=None,
                        help="corpus config YAML (default: configs/synth/default.yaml)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="worker processes (default: number of CPU cores); the output does not depend on it")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    import sys
    import time

    from usam.synth import MissingToolError, SynthConfigError, generate_corpus, load_config

    start = time.perf_counter()
    try:
        cfg = load_config(args.config)
        meta = generate_corpus(args.out, cfg, hours=args.hours, seed=args.seed, jobs=args.jobs,
                               progress=not args.no_progress)
    except (MissingToolError, SynthConfigError) as err:
        print(f"usam synth: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # a synthesiser failed on a clip; the message names the clip and the command
        print(f"usam synth: error: {err}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    state = "reused" if meta["reused"] else "generated"
    sizes = ", ".join(f"{s}: {v['clips']} clips/{v['lines']} lines" for s, v in meta["sizes"].items())
    print(f"{state} {meta['hours']:.3f} h of audio in {args.out} "
          f"({sizes}) "
          f"in {elapsed:.1f} s")
    return 0
