"""Clotho v2 (zenodo 4783391): audio captioning, task aac, five references per clip.

Layout: clotho_captions_<split>.csv (file_name, caption_1 .. caption_5) and the audio folders
<split>/<file_name> (wav), for split in development, validation, evaluation.
"""
from __future__ import annotations

from pathlib import Path

from usam.errors import DataError
from usam.prepare.common import SplitSource, read_table

NAME = "clotho"
TASK = "aac"
SPLITS = ("development", "validation", "evaluation")
HELP = "Clotho v2 audio captioning (aac, 5 captions per clip)"
NOTES = "key = file name without extension; text = the 5 captions in the order caption_1..caption_5."
CAPTIONS = tuple(f"caption_{i}" for i in range(1, 6))


def add_arguments(parser) -> None:
    parser.add_argument("--audio-dir", type=Path, default=None,
                        help="folder holding development/, validation/, evaluation/ (default: --root)")


def _table(root: Path, split: str) -> Path:
    return root / f"clotho_captions_{split}.csv"


def find_splits(root: Path, opts) -> list[str]:
    found = [s for s in SPLITS if _table(root, s).is_file()]
    if not found:
        raise DataError("missing_file", f"no clotho_captions_<split>.csv ({', '.join(SPLITS)}) in {root}",
                        file=str(_table(root, SPLITS[0])))
    return found


def load_split(root: Path, split: str, opts) -> SplitSource:
    audio_dir = (opts.audio_dir or root) / split
    records = []
    for _, row in read_table(_table(root, split), ("file_name",) + CAPTIONS):
        name = row["file_name"].strip()
        records.append({"key": Path(name).stem, "audio": audio_dir / name, "task": TASK,
                        "text": [row[c].strip() for c in CAPTIONS]})
    return SplitSource(records)
