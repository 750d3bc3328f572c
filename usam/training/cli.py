"""Arguments and entry point shared by `train/train.py` and `usam train`."""
from __future__ import annotations

import argparse

DESCRIPTION = """Train U-SAM (stage 1 or 2) with DeepSpeed from a YAML config, with key=value overrides.

Launch one process (CPU or one GPU, no environment needed):
    python train/train.py --config configs/train/stage1_tiny.yaml schedule.max_steps=100
Several GPUs / nodes:
    deepspeed --num_gpus 8 train/train.py --config configs/train/stage1.yaml
    torchrun --nproc_per_node 8 train/train.py --config configs/train/stage1.yaml
    scripts/launch_multinode.sh scripts/hostfile --config configs/train/stage1.yaml
Resume a killed run exactly: add --resume (the newest checkpoint of output_dir) or --resume PATH; on another
number of ranks, restart from a checkpoint's weights: --resume-weights PATH.
DeepSpeed JIT-builds C++/CUDA ops (fused Adam on GPU, CPU Adam for ZeRO-Offload) into TORCH_EXTENSIONS_DIR
(default ~/.cache/torch_extensions); point it at a shared, writable folder on clusters. CPU configs use
torch's AdamW (optim.torch_adam: true), so nothing is built."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training YAML (configs/train/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides with dotted keys, values in YAML (optim.lr=1e-4 "
                        "data.train=[a.jsonl] model.llm.gradient_checkpointing=true)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="PATH",
                        help="continue a run: no value = the newest checkpoint in output_dir; or a checkpoint "
                        "folder or a run folder (write --resume=PATH, or put --resume after the overrides)")
    parser.add_argument("--resume-weights", default=None, metavar="PATH",
                        help="restart from a checkpoint's trained weights and step on any number of ranks (an exact "
                        "--resume needs the number that wrote it): a checkpoint folder, a run folder or 'latest'; "
                        "the learning-rate schedule goes on from its step, with a new optimiser state and the data "
                        "order from the start of its epoch")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    import logging
    import sys

    from usam.training.config import load_train_config
    from usam.training.trainer import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_train_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    from usam.training.checkpoint import ResumeError

    try:
        summary = train(cfg, resume=args.resume, progress=not args.no_progress, resume_weights=args.resume_weights)
    except ResumeError as err:  # the resume options' own errors: a message, not a traceback
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    from usam.training import distributed

    if distributed.is_main():
        print(f"done: step {summary['step']}, model in {summary.get('final')}")
    # The trainer, its DeepSpeed engine and the handles of their collectives form reference cycles; freed here, while
    # the process group and the interpreter are whole, rather than during the interpreter's exit after the group is
    # gone, where a gloo work object's teardown can abort the process ("terminate called without an active
    # exception", once in a 2-rank ZeRO-3 test run under the full suite)
    import gc

    gc.collect()
    distributed.destroy()
    return 0
