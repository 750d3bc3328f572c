#!/usr/bin/env python
"""Training throughput of the recipe: steps/s, audio seconds/s and peak memory, for
live encoders vs the feature cache and duration-bucketed vs fixed-size batches.

    python scripts/bench_train.py                                  # tiny model, a generated corpus
    python scripts/bench_train.py --config configs/train/stage1.yaml --manifest data/x/train.jsonl --steps 50
    python scripts/bench_train.py --checkpointing        # stage 1 with and without LLM activation checkpointing

`--checkpointing` instead compares stage 1 with `llm.gradient_checkpointing` off and on (live encoders, bucketed):
peak memory (GPU: max allocated; CPU: peak RSS) and the activations saved for backward per micro-batch (summed
bytes of the tensors autograd keeps, counted with torch.autograd.graph.saved_tensors_hooks).

Each variant runs in its own process (peak RSS is per process) through the real trainer (DeepSpeed, world
size 1). Steps/s counts optimiser steps after the first (warm-up) step; audio s/s is the audio of those steps
over their wall time. Figures are printed as a table; nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class SavedActivations:
    """Bytes of the tensors autograd saves for backward, per forward pass (a checkpointed layer saves only its
    inputs; its recomputation in the backward pass saves under the checkpoint's own hooks, not these)."""

    def __init__(self):
        self.total, self.passes = 0, 0

    def pack(self, tensor):
        self.total += tensor.numel() * tensor.element_size()
        return tensor

    def per_pass_mb(self) -> float:
        return self.total / max(self.passes, 1) / 2**20


def run_variant(args, manifest: str, cache_dir: str | None, bucketing: bool, out: Path) -> dict:
    import torch

    from usam.training.config import load_train_config
    from usam.training.trainer import Trainer

    over = {"output_dir": str(out), "data.train": [manifest], "data.valid": [], "schedule.max_steps": args.steps,
            "logging.log_every": 1, "logging.eval_every": 0, "logging.save_every": 0, "logging.progress": False,
            "logging.tensorboard": False, "data.bucketing": bucketing, "data.batch_size": args.batch_size,
            "data.max_audio_seconds": args.max_audio_seconds, "data.max_samples": args.max_samples,
            "data.cache_dir": cache_dir, "data.num_workers": args.workers}
    extra = dict(kv.split("=", 1) for kv in args.override)
    cfg = load_train_config(args.config, {**over, **{k: yaml_value(v) for k, v in extra.items()}})
    trainer = Trainer(cfg)
    trainer.setup()
    saved = SavedActivations()
    forward = trainer.engine.forward

    def counted_forward(*a, **k):  # (the engine's own forward: DeepSpeed's hooks run inside it)
        saved.passes += 1
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            return forward(*a, **k)

    trainer.engine.forward = counted_forward
    times = []
    original_log = trainer.logger.log

    def log(kind, step, record):  # time stamp of each step's end
        if kind == "train":
            times.append((time.perf_counter(), record))
        original_log(kind, step, record)

    trainer.logger.log = log
    trainer._loop()
    trainer.logger.close()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    # steps after the first: wall time between the first and the last step's log
    wall = times[-1][0] - times[0][0]
    audio = sum(r["audio_s"] for r in train[1:])  # audio seconds of the timed steps, all ranks
    return {"steps_per_s": (len(times) - 1) / wall, "audio_s_per_s": audio / wall,
            "peak_mem_mb": max(r["peak_mem_mb"] for r in train), "final_loss": train[-1]["loss"],
            "saved_mb": saved.per_pass_mb()}


def yaml_value(text: str):
    import yaml

    return yaml.safe_load(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/train/stage1_tiny.yaml", help="training YAML")
    p.add_argument("--manifest", default=None, help="training manifest (default: a generated tiny corpus)")
    p.add_argument("--clips", type=int, default=96, help="clips of the generated corpus")
    p.add_argument("--steps", type=int, default=12, help="optimiser steps per variant")
    p.add_argument("--batch-size", type=int, default=8, help="fixed-size batches: clips per batch")
    p.add_argument("--max-audio-seconds", type=float, default=40.0, help="bucketed batches: padded seconds cap")
    p.add_argument("--max-samples", type=int, default=8, help="bucketed batches: clips per batch at most")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs per variant, interleaved; the fastest is reported (the machine may be shared)")
    p.add_argument("--override", nargs="*", default=[], help="extra key=value overrides of the training config")
    p.add_argument("--checkpointing", action="store_true",
                   help="compare stage 1 with LLM activation checkpointing off and on (peak memory, saved activations)")
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    p.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    os.chdir(REPO)
    if args.variant:
        cache, bucketing = args.variant.split(",")
        result = run_variant(args, args.manifest, args.cache_dir if cache == "cache" else None,
                             bucketing == "bucketed", Path(args.out))
        print("RESULT " + json.dumps(result))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    manifest = args.manifest
    if manifest is None:
        from usam.training.testing import write_corpus

        manifest = str(write_corpus(tmp / "data", args.clips, min_s=1.0, max_s=8.0))
    if args.checkpointing:
        return compare_checkpointing(args, manifest, tmp)
    cache_dir = tmp / "cache"
    from usam.training.config import load_train_config

    cfg = load_train_config(args.config, {"data.train": [manifest]})
    model_yaml = tmp / "model.yaml"
    import yaml

    model_yaml.write_text(yaml.safe_dump(cfg.model))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "usam.cli", "cache", "--model", str(model_yaml), "--manifest", manifest,
                    "--out", str(cache_dir), "--seed", str(cfg.seed), "--stage", str(cfg.stage), "--no-progress"],
                   check=True)
    cache_s = time.perf_counter() - t0
    print(f"config {args.config}, {args.steps} steps per variant, corpus {manifest}; cache built in {cache_s:.1f} s")
    print(f"best of {args.repeats} runs per variant")
    print(f"{'encoders':<10}{'batches':<10}{'steps/s':>9}{'audio s/s':>11}{'peak MB':>10}{'last loss':>11}")
    variants = ("live,bucketed", "cache,bucketed", "live,fixed", "cache,fixed")
    best: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for variant in variants:
            r = _run_one(args, variant, manifest, cache_dir, tmp / f"{variant.replace(',', '_')}_{repeat}")
            if r is not None and (variant not in best or r["steps_per_s"] > best[variant]["steps_per_s"]):
                best[variant] = r
    for variant in variants:
        r = best.get(variant)
        if r is None:
            continue
        enc, batches = variant.split(",")
        print(f"{enc:<10}{batches:<10}{r['steps_per_s']:>9.2f}{r['audio_s_per_s']:>11.1f}{r['peak_mem_mb']:>10.0f}"
              f"{r['final_loss']:>11.4f}")
    return 0


def compare_checkpointing(args, manifest: str, tmp: Path) -> int:
    print(f"config {args.config} (stage 1, live encoders, bucketed), {args.steps} steps per variant; "
          f"overrides {args.override or 'none'}")
    print(f"{'checkpointing':<15}{'steps/s':>9}{'peak MB':>10}{'saved MB/pass':>15}{'last loss':>11}")
    results = {}
    base = list(args.override)
    for on in (False, True):
        args.override = base + [f"model.llm.gradient_checkpointing={str(on).lower()}", "stage=1"]
        r = _run_one(args, "live,bucketed", manifest, tmp / "no_cache", tmp / f"ckpt_{on}")
        args.override = base
        if r is None:
            return 1
        results[on] = r
        print(f"{'on' if on else 'off':<15}{r['steps_per_s']:>9.2f}{r['peak_mem_mb']:>10.0f}{r['saved_mb']:>15.1f}"
              f"{r['final_loss']:>11.4f}")
    off, on = results[False], results[True]
    print(f"checkpointing: peak memory {on['peak_mem_mb'] - off['peak_mem_mb']:+.0f} MB, saved activations "
          f"{on['saved_mb'] / max(off['saved_mb'], 1e-9):.2f}x")
    return 0


def _run_one(args, variant: str, manifest: str, cache_dir: Path, out: Path) -> dict | None:
    cmd = [sys.executable, __file__, "--variant", variant, "--manifest", manifest, "--cache-dir", str(cache_dir),
           "--out", str(out), "--config", args.config, "--steps", str(args.steps), "--batch-size",
           str(args.batch_size), "--max-audio-seconds", str(args.max_audio_seconds), "--max-samples",
           str(args.max_samples), "--workers", str(args.workers)]
    if args.override:
        cmd += ["--override", *args.override]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        print(f"{variant}: failed\n{proc.stderr[-2000:]}")
        return None
    return json.loads(line[len("RESULT "):])


if __name__ == "__main__":
    sys.exit(main())
