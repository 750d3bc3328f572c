"""How the bucketing sampler's `sort_chunk` trades padding against task mixing, on the usam-8b stage-2 mixture.

A whole-epoch duration sort (sort_chunk null) packs clips of one length together; the stage-2 tasks differ in
clip length (CoVoST2 ~5 s, LibriSpeech ~12 s, AudioCaps/MusicCaps 10 s, Clotho 15-30 s), so most micro-batches
then hold one task. Sorting within chunks of shuffled clips mixes tasks at the cost of some padding.

Without manifests the clip durations are drawn from a stated profile of each dataset (sizes of their training
splits, times the recipe's weights); with `--manifest PATH` (repeatable) the manifests' own durations and tasks
are used instead, weighted as the training config would (`--weight` per manifest, default 1).

    python scripts/sampler_mix.py                       # the built-in stage-2 profile
    python scripts/sampler_mix.py --manifest data/librispeech/train.jsonl --manifest data/clotho/train.jsonl
"""
from __future__ import annotations

import argparse

import numpy as np

from usam.data.sampler import DurationBucketSampler, padding_fraction, task_mix

# (dataset, task, training clips, recipe weight (configs/train/stage2.yaml), duration draw) — the durations are a
# profile of each corpus (published length statistics), not read from the data
PROFILE = [
    ("librispeech", "asr", 281_241, 1.0, lambda rng, n: np.clip(rng.normal(12.3, 3.6, n), 1.3, 30.0)),
    ("audiocaps", "aac", 49_838, 1.0, lambda rng, n: np.where(rng.random(n) < 0.9, 10.0, rng.uniform(2.0, 10.0, n))),
    ("clotho", "aac", 3_839, 2.0, lambda rng, n: rng.uniform(15.0, 30.0, n)),
    ("musiccaps", "mc", 5_521, 3.0, lambda rng, n: np.full(n, 10.0)),
    ("covost2", "s2tt", 289_430, 0.5, lambda rng, n: np.clip(rng.normal(5.6, 1.9, n), 1.0, 15.0)),
]


def profile_mixture(scale: float, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    durations, tasks = [], []
    for _, task, clips, weight, draw in PROFILE:
        n = max(1, int(round(clips * weight * scale)))
        durations.append(draw(rng, n))
        tasks += [task] * n
    return np.concatenate(durations), tasks


def manifest_mixture(paths: list[str], weights: list[float]) -> tuple[np.ndarray, list[str]]:
    from usam.data.manifest import fill_durations, read_manifest

    durations, tasks = [], []
    for path, weight in zip(paths, weights):
        entries, _ = read_manifest(path, strict=False)
        fill_durations(entries, progress=True)
        entries = [e for e in entries if e.duration]
        repeat = max(1, int(round(weight)))
        durations += [e.duration for e in entries] * repeat
        tasks += [e.task for e in entries] * repeat
    return np.asarray(durations), tasks


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", action="append", default=[], help="a training manifest (repeatable); none: "
                        "the built-in stage-2 profile")
    parser.add_argument("--weight", action="append", type=float, default=[],
                        help="the weight of each --manifest, in order (rounded to whole repeats; default 1)")
    parser.add_argument("--scale", type=float, default=0.1,
                        help="share of the profile's clips to draw (default %(default)s: ~60k clips, seconds to run)")
    parser.add_argument("--max-audio-seconds", type=float, default=160.0,
                        help="padded audio seconds per micro-batch (default %(default)s, stage2.yaml's)")
    parser.add_argument("--max-samples", type=int, default=16, help="clips per micro-batch (default %(default)s)")
    parser.add_argument("--sort-chunk", type=int, nargs="*", default=[64, 256, 1024, 4096],
                        help="chunk sizes to compare with the whole-epoch sort (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw and the sampler (default 0)")
    args = parser.parse_args(argv)
    if args.manifest:
        weights = args.weight + [1.0] * (len(args.manifest) - len(args.weight))
        durations, tasks = manifest_mixture(args.manifest, weights)
    else:
        durations, tasks = profile_mixture(args.scale, args.seed)
    print(f"{len(durations)} clips, {durations.sum() / 3600:.1f} h; micro-batches of at most "
          f"{args.max_audio_seconds:g} padded seconds and {args.max_samples} clips")
    print(f"{'sort_chunk':>10} {'padding':>8} {'single-task batches':>20} {'tasks per batch':>16} {'batches':>8}")
    for chunk in [None, *args.sort_chunk]:
        sampler = DurationBucketSampler(durations, args.max_audio_seconds, args.max_samples, seed=args.seed,
                                        num_replicas=1, rank=0, sort_chunk=chunk)
        batches = list(sampler)
        mix = task_mix(tasks, batches)
        print(f"{'epoch' if chunk is None else chunk:>10} {padding_fraction(durations, batches):8.3f} "
              f"{mix['single_task_share']:20.3f} {mix['mean_tasks']:16.2f} {len(batches):8d}")


if __name__ == "__main__":
    main()
