"""Run the ablation study: the recipe form of `usam ablate` (same options; `python eval/ablations.py --help`).

    python eval/ablations.py --runs runs --data-root data --out results/ablations
"""
import argparse
import sys

from usam.commands import ablate

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=ablate.DESCRIPTION)
    ablate.add_arguments(parser)
    sys.exit(ablate.main(parser.parse_args()))
