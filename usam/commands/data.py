"""`usam data check|stats`: validate manifests and their audio, or summarise durations and batching."""
from __future__ import annotations

import argparse

HELP = "check manifests and their audio (usam data check), or print duration statistics (usam data stats)"
DESCRIPTION = """\
usam data check MANIFEST [MANIFEST ...]
    Reads every manifest line (JSON Lines, the official U-SAM format, or a local Hugging Face dataset),
    then opens and fully decodes every audio file, and reports ALL problems at once, one line each
    (file:line: key: field: reason: message), followed by a summary: entries ok, problems per reason,
    hours of usable audio. Exit status 0 when everything is usable, 1 when there is any problem.
usam data stats MANIFEST [MANIFEST ...]
    Hours per task, a text histogram of durations, and the padding fraction of the duration-bucketing
    batch sampler against plain fixed-size batches (same number of batches) at the given caps.
"""


def _add_manifest_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifests", nargs="+", metavar="MANIFEST",
                   help="manifest files (.jsonl / official .data) or Hugging Face dataset folders / parquet files")
    p.add_argument("--format", choices=("auto", "jsonl", "official", "hf"), default="auto",
                   help="manifest format (default: guess from the path and the first line)")
    p.add_argument("--task", default=None,
                   help="task for records without one (HF datasets without a task column, official files)")
    p.add_argument("--audio-column", default="audio", help="HF datasets: the audio column (default: audio)")
    p.add_argument("--text-column", default="text", help="HF datasets: the text column (default: text)")
    p.add_argument("--task-column", default="task", help="HF datasets: the task column (default: task)")
    p.add_argument("--key-column", default="key",
                   help="HF datasets: the key column (default: key; without it keys are <name>/<row>)")
    p.add_argument("--split", default=None, help="HF DatasetDict folders: the split to read")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    check = sub.add_parser("check", help="report every problem of the manifests and their audio; exit 1 if any",
                           description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_manifest_options(check)
    check.add_argument("--max-seconds", type=float, default=None,
                       help="report clips (or segments) longer than this many seconds as too_long")
    check.add_argument("--header-only", action="store_true",
                       help="read only the audio headers (fast; misses NaN/inf samples and broken streams)")
    check.add_argument("--duration-tolerance", type=float, default=0.1,
                       help="report a manifest duration that differs from the audio by more than this many "
                            "seconds (default: 0.1)")
    check.add_argument("--jobs", type=int, default=1, help="threads decoding audio in parallel (default: 1)")

    stats = sub.add_parser("stats", help="hours per task, duration histogram, padding of bucketed vs fixed batches",
                           description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_manifest_options(stats)
    stats.add_argument("--max-audio-seconds", type=float, default=120.0,
                       help="bucketing cap on padded audio seconds per batch (default: 120)")
    stats.add_argument("--max-samples", type=int, default=None, help="bucketing cap on samples per batch")
    stats.add_argument("--bin-seconds", type=float, default=2.0, help="histogram bin width in seconds (default: 2)")
    stats.add_argument("--seed", type=int, default=0, help="sampler seed (default: 0)")


def main(args: argparse.Namespace) -> int:
    if args.data_command == "check":
        return _check(args)
    return _stats(args)


def _read(args):
    from usam.data.manifest import read_manifests

    return read_manifests(args.manifests, strict=False, format=args.format, task=args.task,
                          audio_column=args.audio_column, text_column=args.text_column,
                          task_column=args.task_column, key_column=args.key_column, split=args.split)


def _hours_line(seconds_by_task: dict) -> str:
    return ", ".join(f"{t} {s / 3600:.3f} h" for t, s in sorted(seconds_by_task.items())) or "none"


def _check(args) -> int:
    from collections import Counter, defaultdict
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from usam.data.audio import audio_info, load_audio
    from usam.errors import DataError

    entries, problems = _read(args)

    def probe(e):
        """(seconds of usable audio, None) or (None, DataError) for one entry."""
        try:
            if args.header_only:
                total, _ = audio_info(e.audio)
                seconds = max(0.0, (total if e.end is None else min(e.end, total)) - e.offset)
                if seconds <= 0:
                    raise DataError("zero_length", f"{e.audio_name}: the segment holds no samples")
                if args.max_seconds is not None and seconds > args.max_seconds:
                    raise DataError("too_long", f"{e.audio_name}: {seconds:.2f} s is longer than the maximum "
                                    f"{args.max_seconds:g} s")
            else:
                _, sr = audio_info(e.audio)
                seconds = load_audio(e.audio, None, e.offset, e.end, args.max_seconds).shape[0] / sr
        except DataError as err:
            return None, e.error(err)
        if e.duration is not None and abs(e.duration - seconds) > args.duration_tolerance:
            return None, DataError("bad_value", f"the manifest says {e.duration:g} s, the audio holds {seconds:.3f} s",
                                   file=e.source, line=e.line, key=e.key, field="duration")
        return seconds, None

    seconds_by_task: dict[str, float] = defaultdict(float)
    ok = 0
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = pool.map(probe, entries)
        for e, (seconds, err) in tqdm(zip(entries, results), total=len(entries), desc="checking audio",
                                      unit="file", disable=None):
            if err is not None:
                problems.append(err)
            else:
                ok += 1
                seconds_by_task[e.task] += seconds
    problems.sort(key=lambda p: (p.file or "", p.line or 0))
    for p in problems:
        print(p)
    counts = Counter(p.reason for p in problems)
    print(f"checked {len(args.manifests)} manifest(s): {ok} entries ok, {len(problems)} problem(s)")
    for reason, n in sorted(counts.items()):
        print(f"  {reason}: {n}")
    total = sum(seconds_by_task.values())
    print(f"usable audio: {total / 3600:.3f} h ({_hours_line(seconds_by_task)})")
    return 1 if problems else 0


def _stats(args) -> int:
    from collections import defaultdict

    import numpy as np

    from usam.data.manifest import fill_durations
    from usam.data.sampler import DurationBucketSampler, FixedSizeBatchSampler, padding_fraction

    entries, problems = _read(args)
    problems += fill_durations(entries, progress=True)
    entries = [e for e in entries if e.duration is not None and e.duration > 0]
    if problems:
        print(f"{len(problems)} entries skipped (run `usam data check` for the list)")
    if not entries:
        print("no usable entries")
        return 1
    seconds_by_task: dict[str, float] = defaultdict(float)
    for e in entries:
        seconds_by_task[e.task] += e.duration
    d = np.array([e.duration for e in entries])
    print(f"{len(entries)} clips, {d.sum() / 3600:.3f} h ({_hours_line(seconds_by_task)})")
    print(f"duration: min {d.min():.2f} s, median {np.median(d):.2f} s, mean {d.mean():.2f} s, max {d.max():.2f} s")
    width = args.bin_seconds
    edges = np.arange(0.0, d.max() + width, width)
    counts, _ = np.histogram(d, bins=edges)
    scale = 50 / max(1, counts.max())
    for lo, n in zip(edges[:-1], counts):
        print(f"  {lo:7.1f}-{lo + width:<7.1f} s {n:7d} {'#' * int(round(n * scale))}")
    bucket = DurationBucketSampler(d, args.max_audio_seconds, args.max_samples, seed=args.seed,
                                   num_replicas=1, rank=0)
    b_batches = list(bucket)
    batch_size = max(1, round(len(d) / len(b_batches)))
    fixed = FixedSizeBatchSampler(len(d), batch_size, seed=args.seed, num_replicas=1, rank=0)
    f_batches = list(fixed)
    print(f"padding fraction, bucketed (cap {args.max_audio_seconds:g} s padded audio per batch): "
          f"{padding_fraction(d, b_batches):.4f} over {len(b_batches)} batches")
    print(f"padding fraction, fixed batches of {batch_size}: {padding_fraction(d, f_batches):.4f} "
          f"over {len(f_batches)} batches")
    return 0
