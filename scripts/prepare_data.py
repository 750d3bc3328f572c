#!/usr/bin/env python
"""Prepare a public dataset into U-SAM manifests (same as `usam prepare`).

    python scripts/prepare_data.py DATASET --root LOCAL_COPY --out OUT_DIR [--splits ...]
    python scripts/prepare_data.py DATASET --help     # the layout it expects and its own options
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without `pip install -e .`

from usam.commands import prepare


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="prepare_data.py", description=prepare.DESCRIPTION)
    prepare.add_arguments(parser)
    return prepare.main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
