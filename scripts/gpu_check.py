#!/usr/bin/env python
"""One-GPU check of the GPU path, printing figures (run by scripts/gpu_check.sh).

A random-initialised U-SAM at usam-8b's real dimensions (configs/model/usam-8b.yaml built without weights:
Whisper-small, BEATs, MERT-95M, Llama-3.1-8B shapes, LoRA r 8 on q and v), trained a few steps under DeepSpeed
bf16 ZeRO-2 in stage 1 and stage 2, then batched greedy generation at batch 1 and 32. Per stage: step time,
tokens/s (LLM tokens: text and audio positions), peak memory and MFU = 6 x trained-through parameters x tokens /
step time / the GPU's bf16 peak. Trained-through parameters are those the backward pass goes through: the LLM
(frozen in stage 1, yet backpropagated to the audio tokens) and the connector (Q-Former, projector, SACL heads);
the frozen encoders run forward only and are left out, so MFU is slightly understated.

`--cpu`: the same steps on the CPU with the scaled-down model (configs/model/usam-8b_scaled.yaml) and DeepSpeed's
bf16 engine on the CPU accelerator: a dry run of this script (tests/test_gpu_check.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# dense bf16 tensor-core peaks (FLOP/s) of common training GPUs, by a substring of torch.cuda.get_device_name()
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12,
             "RTX 4090": 165e12, "A6000": 155e12}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="dry run on the CPU with the scaled-down model")
    p.add_argument("--batch", type=int, default=None, help="clips per training micro-batch (default 16; --cpu 4)")
    p.add_argument("--seconds", type=float, default=None, help="seconds per clip (default 10; --cpu 1)")
    p.add_argument("--answer-words", type=int, default=None, help="words per answer (default 60; --cpu 5)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per stage (default 5; --cpu 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before them (default 2; --cpu 1)")
    p.add_argument("--gen-batches", default=None, help="generation batch sizes (default 1,32; --cpu 1,4)")
    p.add_argument("--new-tokens", type=int, default=None, help="generated tokens per sample (default 64; --cpu 4)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, if not in the table")
    args = p.parse_args()
    gpu = dict(batch=16, seconds=10.0, answer_words=60, steps=5, warmup=2, new_tokens=64, gen_batches="1,32")
    cpu = dict(batch=2, seconds=0.5, answer_words=5, steps=1, warmup=1, new_tokens=4, gen_batches="1,4")
    for key, value in (cpu if args.cpu else gpu).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def build_model(args, stage: int):
    """The model at its real dimensions, its parameters created on the accelerator (no weights are read)."""
    import torch

    from usam.config import USAMConfig
    from usam.modeling import USAMModel

    if args.cpu:
        config = USAMConfig.from_yaml(REPO / "configs/model/usam-8b_scaled.yaml")
        device = torch.device("cpu")
    else:
        config = USAMConfig.from_yaml(REPO / "configs/model/usam-8b.yaml").without_weights()
        device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(0)
    with device:  # factory functions allocate on the device: an 8B random init takes seconds, not minutes
        model = USAMModel(config)
    model.to(device)
    model.set_stage(stage)
    return model


def train_config(args, stage: int):
    from usam.training.config import load_train_config

    over = {"stage": stage, "deepspeed": "configs/deepspeed/zero2.json", "bf16_on_cpu": args.cpu,
            "schedule.grad_accum": 1, "optim.torch_adam": None}
    return load_train_config(REPO / "configs/train/stage1.yaml", over)


def make_batch(args, processor, batch: int, with_answers: bool):
    import numpy as np

    rng = np.random.default_rng(0)
    n = int(args.seconds * processor.sampling_rate)  # the model's input rate (24 kHz with MERT)
    audios = [(0.1 * rng.standard_normal(n)).astype(np.float32) for _ in range(batch)]
    words = ("the", "dog", "barks", "music", "plays", "softly", "rain", "falls", "on", "a", "tin", "roof")
    answers = [" ".join(rng.choice(words, args.answer_words)) for _ in range(batch)] if with_answers else None
    return processor(audios, ["Describe the audio in detail."] * batch, answers)


def trained_through(model) -> int:
    """Parameters the backward pass goes through: the LLM and the connector (not the frozen encoders)."""
    parts = [model.llm, model.qformer, model.projector] + ([model.sacl] if model.sacl is not None else [])
    return sum(p.numel() for part in parts for p in part.parameters())


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mb(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_stage(args, stage: int, peak_flops: float | None):
    import torch

    from usam.processing import USAMProcessor
    from usam.training.trainer import build_engine, model_inputs

    model = build_model(args, stage)
    processor = USAMProcessor.from_model(model)
    engine, _, _, _ = build_engine(model, train_config(args, stage), steps=args.steps + args.warmup, world=1)
    device = engine.device
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    inputs = model_inputs(model, dict(make_batch(args, processor, args.batch, True)), device)
    tokens = int(inputs["attention_mask"].sum())
    engine.train()
    times, losses = [], []
    for step in range(args.steps + args.warmup):
        sync(device)
        t0 = time.perf_counter()
        out = engine(**inputs)
        engine.backward(out.loss)
        engine.step()
        sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
        losses.append(float(out.loss.detach()))
    step_s = sum(times) / len(times)
    through = trained_through(model)
    mfu = 6 * through * tokens / step_s / peak_flops if peak_flops else None
    row = {"stage": stage, "step_s": step_s, "tokens_per_step": tokens, "tokens_per_s": tokens / step_s,
           "trained_through_params": through, "mfu": mfu, "peak_mem_mb": peak_mb(device),
           "loss_first": losses[0], "loss_last": losses[-1]}
    return row, engine, processor


def generation(args, model, processor, batch: int) -> dict:
    import torch

    from usam.training.trainer import model_inputs

    model.eval()
    device = next(model.parameters()).device
    inputs = model_inputs(model, dict(make_batch(args, processor, batch, False)), device)
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=2, min_new_tokens=2)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        out = model.generate(**inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
        sync(device)
    seconds = time.perf_counter() - t0
    return {"batch": batch, "new_tokens": int(out.shape[1]), "seconds": seconds,
            "tokens_per_s": batch * out.shape[1] / seconds}


def main() -> int:
    args = parse_args()
    os.chdir(REPO)
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    from usam.training import distributed as dist_utils

    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --cpu for the dry run)", file=sys.stderr)
        return 2
    dist_utils.init_distributed()
    name = "CPU" if args.cpu else torch.cuda.get_device_name()
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((v for k, v in BF16_PEAK.items() if k in name), None)
    print(f"device: {name}; bf16 peak: {f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown (MFU not computed)'}")
    print(f"micro-batch: {args.batch} clips of {args.seconds:g} s, {args.answer_words}-word answers; "
          f"{args.steps} timed steps after {args.warmup} warm-up; DeepSpeed bf16 ZeRO-2, world size 1")
    results = {"device": name, "train": [], "generate": []}
    for stage in (1, 2):
        row, engine, processor = run_stage(args, stage, peak)
        results["train"].append(row)
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "n/a"
        print(f"stage {stage}: step {row['step_s']:.3f} s, {row['tokens_per_step']} tokens/step, "
              f"{row['tokens_per_s']:.0f} tokens/s, MFU {mfu} ({row['trained_through_params'] / 1e6:.1f} M trained-"
              f"through params), peak memory {row['peak_mem_mb']:.0f} MB, loss {row['loss_first']:.3f} -> "
              f"{row['loss_last']:.3f}")
        if stage == 2:
            for batch in map(int, args.gen_batches.split(",")):
                g = generation(args, engine.module, processor, batch)
                results["generate"].append(g)
                print(f"generation batch {batch}: {g['new_tokens']} new tokens in {g['seconds']:.2f} s, "
                      f"{g['tokens_per_s']:.1f} tokens/s")
        del engine
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print("RESULT " + json.dumps(results))
    dist_utils.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
