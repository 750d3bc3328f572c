"""Music rendering speed: seconds per clip with one fluidsynth call per clip (usam.synth.music.render, what the corpus
does) against several pieces per call (render_many, what fresh-audio training needs).

    python scripts/bench_render.py                       # 16 pieces of 2 s at 24 kHz
    python scripts/bench_render.py --pieces 15 --seconds 4 --per-call 15
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pieces", type=int, default=16, help="pieces rendered each way (default 16)")
    p.add_argument("--seconds", type=float, default=2.0, help="length of each piece in seconds (default 2)")
    p.add_argument("--per-call", type=int, default=8, help="pieces per fluidsynth call for render_many (default 8, "
                   "at most usam.synth.music.MAX_PIECES_PER_CALL)")
    p.add_argument("--rate", type=int, default=24000, help="sample rate of the batched rendering (default 24000, "
                   "MERT's); the one-by-one path renders at the corpus's 16 kHz")
    p.add_argument("--seed", type=int, default=0, help="seed of the drawn pieces (default 0)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    from usam.synth import music
    from usam.synth.tools import find_soundfont

    args = parse_args(argv)
    soundfont = find_soundfont(None)
    cfg = {"seconds": (args.seconds, args.seconds)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rng = random.Random(args.seed)
        pieces = [music.sample_piece(rng, cfg) for _ in range(args.pieces)]
        start = time.perf_counter()
        for piece in pieces:
            music.render(piece, rng, soundfont, work)
        one_by_one = (time.perf_counter() - start) / len(pieces)
        start = time.perf_counter()
        for i in range(0, len(pieces), args.per_call):
            music.render_many(pieces[i: i + args.per_call], rng, soundfont, work, args.rate)
        batched = (time.perf_counter() - start) / len(pieces)
    print(f"{args.pieces} pieces drawn at {args.seconds:g} s (whole bars): one call each {one_by_one * 1000:.0f} ms/clip (16 kHz); "
          f"{args.per_call} per call {batched * 1000:.0f} ms/clip ({args.rate} Hz); {one_by_one / batched:.1f}x")


if __name__ == "__main__":
    main()
