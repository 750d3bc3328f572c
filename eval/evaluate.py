"""Evaluate a model folder: the recipe form of `usam eval` (same options; see `python eval/evaluate.py --help`).

    python eval/evaluate.py runs/stage2/final --benchmark librispeech-test-clean --data-root data --out results/ls
    torchrun --nproc-per-node 4 eval/evaluate.py runs/stage2/final --benchmark synthetic-test --data-root data \
        --out results/synth
"""
import argparse
import sys

from usam.commands import eval as eval_command

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=eval_command.DESCRIPTION)
    eval_command.add_arguments(parser)
    sys.exit(eval_command.main(parser.parse_args()))
