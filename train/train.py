#!/usr/bin/env python
"""Thin recipe: `python train/train.py --config configs/train/stage1_tiny.yaml [key=value ...] [--resume]`.
Also runs under `deepspeed train/train.py ...` and `torchrun ... train/train.py ...`. See usam/training/."""
import argparse
import sys

from usam.training.cli import DESCRIPTION, add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
