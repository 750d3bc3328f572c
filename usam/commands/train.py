"""`usam train`: the training recipe (same as `python train/train.py`)."""
from __future__ import annotations

import argparse

from usam.training.cli import DESCRIPTION, add_arguments  # light: argparse only

HELP = "train U-SAM (stage 1 or 2) with DeepSpeed from a YAML config"
__all__ = ["HELP", "DESCRIPTION", "add_arguments", "main"]


def main(args: argparse.Namespace) -> int:
    from usam.training.cli import main as run

    return run(args)
