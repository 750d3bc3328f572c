"""Evaluation generation speed: generated tokens/s and samples/s at several batch sizes, on CPU by default.

    python scripts/bench_eval.py                          # the tiny random model (configs/model/tiny.yaml)
    python scripts/bench_eval.py --model runs/stage2/final --samples 32 --max-new-tokens 64

The clips (noise, durations drawn in [--min-seconds, --max-seconds], fixed seed) are batched exactly as
`usam eval` batches them (usam.evaluation.runner.plan_batches: duration-sorted, one task) with the batch
size capped at each value of --batch-sizes, and generated with the runner's BatchGenerator (greedy, left
padding, KV cache). Audio decoding is not timed. The first batch of each setting is a warm-up (not timed);
with --repeats N the fastest of N timings is kept.
tokens/s counts each sample's tokens up to and including its end-of-turn token. The plain tiny model never
emits one, so every sample runs to --max-new-tokens; --talking uses the tiny model of the evaluation tests,
whose answers stop at varied lengths (what batching costs when rows finish early).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[],
                   help="a model folder to benchmark as well (repeatable); the tiny model always runs first")
    p.add_argument("--no-tiny", action="store_true", help="skip the tiny model (needs --model)")
    p.add_argument("--talking", action="store_true", help="use the evaluation tests' talking tiny model")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32], help="batch size caps (default 1 8 32)")
    p.add_argument("--samples", type=int, default=64, help="clips per setting (default 64)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="shortest clip (default 1.0)")
    p.add_argument("--max-seconds", type=float, default=6.0, help="longest clip (default 6.0)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="token budget per sample (default 32)")
    p.add_argument("--task", default="asr", help="task of the prompts (its fixed evaluation prompt; default asr)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clips and the tiny model (default 0)")
    p.add_argument("--repeats", type=int, default=1,
                   help="time each setting this many times and keep the fastest (a shared machine is noisy)")
    p.add_argument("--prefill", action="store_true",
                   help="also time the same batches with max_new_tokens=1 (encoders + prompt pass + one token), "
                   "to show how much of the time is the audio side")
    return p.parse_args(argv)


def make_items(n: int, lo: float, hi: float, task: str, seed: int):
    import numpy as np

    from usam.data.manifest import ManifestEntry
    from usam.evaluation.runner import EvalItem
    from usam.tasks import EVAL_INSTRUCTIONS

    rng = np.random.default_rng(seed)
    durations = rng.uniform(lo, hi, size=n).round(3)
    waves = [(rng.standard_normal(int(d * 16000)) * 0.1).astype(np.float32) for d in durations]
    prompt = EVAL_INSTRUCTIONS[task].format(lang="Chinese", question="What is in the audio?")
    items = [EvalItem(i, ManifestEntry(key=f"b{i}", audio="", task=task, text=["x"], duration=float(d)), prompt, 0)
             for i, d in enumerate(durations)]
    return items, waves


def bench_model(model_dir: Path, args, items, waves) -> list[dict]:
    import torch

    from usam import USAMModel, USAMProcessor
    from usam.evaluation.generation import BatchGenerator, GenerationSettings
    from usam.evaluation.runner import plan_batches
    from usam.evaluation.sharding import DistContext

    model = USAMModel.from_pretrained(model_dir).to(args.device).eval()
    processor = USAMProcessor.from_pretrained(model_dir)
    results = []
    for bs in args.batch_sizes:
        settings = GenerationSettings(max_audio_seconds=1e9, max_batch_size=bs)
        batches = plan_batches(items, settings, DistContext())
        with BatchGenerator(model, processor, settings) as generate:
            warm = batches[0]
            generate([waves[i] for i in warm], [items[i].instruction for i in warm], args.max_new_tokens)
            seconds = float("inf")
            for _ in range(args.repeats):
                tokens = samples = 0
                start = time.perf_counter()
                for batch in batches:
                    out = generate([waves[i] for i in batch], [items[i].instruction for i in batch],
                                   args.max_new_tokens)
                    tokens += sum(out.new_tokens)
                    samples += len(batch)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                seconds = min(seconds, time.perf_counter() - start)
            prefill = None
            if args.prefill:
                start = time.perf_counter()
                for batch in batches:
                    generate([waves[i] for i in batch], [items[i].instruction for i in batch], 1)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                prefill = time.perf_counter() - start
        results.append({"batch_size": bs, "batches": len(batches), "samples": samples, "tokens": tokens,
                        "seconds": seconds, "prefill_seconds": prefill, "samples_per_s": samples / seconds,
                        "tokens_per_s": tokens / seconds})
    return results


def print_table(name: str, results: list[dict]) -> None:
    base = results[0]
    print(f"\n{name}")
    print(f"{'batch':>5} {'batches':>7} {'samples':>7} {'tokens':>7} {'seconds':>8} {'samples/s':>9} "
          f"{'tokens/s':>9} {'speed-up':>8}" + (f" {'prefill s':>9}" if base["prefill_seconds"] is not None else ""))
    for r in results:
        print(f"{r['batch_size']:>5} {r['batches']:>7} {r['samples']:>7} {r['tokens']:>7} {r['seconds']:>8.2f} "
              f"{r['samples_per_s']:>9.2f} {r['tokens_per_s']:>9.1f} "
              f"{r['samples_per_s'] / base['samples_per_s']:>7.2f}x"
              + (f" {r['prefill_seconds']:>9.2f}" if r["prefill_seconds"] is not None else ""))


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from usam.evaluation.tiny import build_talking_tiny_model

    items, waves = make_items(args.samples, args.min_seconds, args.max_seconds, args.task, args.seed)
    audio_s = sum(len(w) for w in waves) / 16000
    print(f"{args.samples} clips of {args.min_seconds:g}-{args.max_seconds:g} s ({audio_s:.0f} s "
          f"of audio), max_new_tokens {args.max_new_tokens}, greedy, device {args.device}, "
          f"{torch.get_num_threads()} CPU threads; speed-up = samples/s over batch size {args.batch_sizes[0]}")
    models = []
    with tempfile.TemporaryDirectory(prefix="usam-bench-eval-") as tmp:
        if not args.no_tiny:
            tiny = build_talking_tiny_model(Path(tmp) / "tiny", seed=args.seed, talk=args.talking)
            models.append(("tiny (talking)" if args.talking else "tiny (configs/model/tiny.yaml, random)", tiny))
        models += [(m, Path(m)) for m in args.model]
        if not models:
            raise SystemExit("nothing to benchmark: give --model or drop --no-tiny")
        for name, folder in models:
            print_table(name, bench_model(folder, args, items, waves))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
