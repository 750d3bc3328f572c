"""Preparation of public datasets into U-SAM manifests (JSON Lines, one per official split).

Each dataset is one module here defining:
  NAME       the output folder (OUT/<NAME>/<split>.jsonl)
  TASK       the task of every clip (its fixed evaluation instruction is usam.tasks.EVAL_INSTRUCTIONS[TASK];
             manifests carry no instruction of their own, so the evaluation prompt stays fixed by task)
  SPLITS     the official split names;  HELP  one line;  NOTES  conventions (split rules, labels, keys)
  add_arguments(parser)           options of this dataset only
  find_splits(root, opts)         the splits present under root (a DataError if none)
  load_split(root, split, opts)   -> common.SplitSource (records with absolute audio Paths)
"""
from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path

from usam.errors import DataError

# name on the command line -> module (imported lazily, so `usam --help` stays fast)
DATASETS = {
    "librispeech": "usam.prepare.librispeech",
    "covost2": "usam.prepare.covost2",
    "clotho": "usam.prepare.clotho",
    "audiocaps": "usam.prepare.audiocaps",
    "musiccaps": "usam.prepare.musiccaps",
    "esc50": "usam.prepare.esc50",
    "gtzan": "usam.prepare.gtzan",
    "pocketsphinx_test": "usam.prepare.pocketsphinx_test",
}

log = logging.getLogger("usam.prepare")


def dataset_module(name: str):
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return importlib.import_module(DATASETS[name])


def default_options(name: str, **overrides) -> argparse.Namespace:
    """The dataset's own options at their defaults, with `overrides` applied (for use from Python)."""
    parser = argparse.ArgumentParser(add_help=False)
    dataset_module(name).add_arguments(parser)
    opts = parser.parse_args([])
    for key, value in overrides.items():
        if not hasattr(opts, key):
            raise ValueError(f"dataset {name!r} has no option {key!r}; options: {', '.join(vars(opts))}")
        setattr(opts, key, value)
    return opts


def prepare_dataset(name: str, root, out, splits=None, *, keep_missing: bool = False, relative: bool = False,
                    workers: int = 4, opts: argparse.Namespace | None = None, **overrides):
    """Write OUT/<NAME>/<split>.jsonl for each split (all present ones by default); return the summaries."""
    from usam.prepare.common import finish_split, forget_listings, write_info

    module = dataset_module(name)
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DataError("missing_file", f"dataset root {root} is not a folder", file=str(root))
    opts = opts if opts is not None else default_options(name, **overrides)
    if splits:
        unknown = [s for s in splits if s not in module.SPLITS]
        if unknown:
            raise ValueError(f"{name}: unknown split(s) {', '.join(unknown)}; official: {', '.join(module.SPLITS)}")
    else:
        splits = module.find_splits(root, opts)
    out_dir = Path(out).expanduser().absolute() / module.NAME
    summaries = []
    for split in splits:
        forget_listings()
        source = module.load_split(root, split, opts)
        summaries.append(finish_split(source, out_dir / f"{split}.jsonl", keep_missing=keep_missing,
                                      relative=relative, workers=workers))
    write_info(out_dir, name, module.TASK, summaries, module.NOTES)
    return summaries
