"""ESC-50 (github.com/karolpiczak/ESC-50): environmental sound classification, task cls, 5 official folds.

Layout: meta/esc50.csv (filename, fold, target, category, esc10, src_file, take) and audio/<filename> (5 s wav).
Manifests: fold1 .. fold5 (one per official fold, for 5-fold cross-validation), and train / test for one
held-out fold (--fold, default 1): test = fold k, train = the other four folds.
"""
from __future__ import annotations

from pathlib import Path

from usam.errors import DataError
from usam.prepare.common import SplitSource, read_table, require_file

NAME = "esc50"
TASK = "cls"
FOLDS = (1, 2, 3, 4, 5)
SPLITS = tuple(f"fold{k}" for k in FOLDS) + ("train", "test")
HELP = "ESC-50 environmental sound classification (cls; 5 folds, --fold for train/test)"
NOTES = ("fold<k> = the clips of official fold k; test = fold --fold (default 1), train = the other folds; "
         "label = the official category (e.g. chirping_birds), text = the label with spaces (chirping birds), "
         "target = class index, esc10 = member of the ESC-10 subset.")
COLUMNS = ("filename", "fold", "target", "category")


def add_arguments(parser) -> None:
    parser.add_argument("--fold", type=int, default=1, choices=FOLDS,
                        help="the held-out fold written as test.jsonl; train.jsonl has the other folds (default: 1)")


def find_splits(root: Path, opts) -> list[str]:
    require_file(root / "meta" / "esc50.csv", "the ESC-50 metadata table")
    return list(SPLITS)


def _folds_of(split: str, held_out: int) -> set[int]:
    if split.startswith("fold"):
        return {int(split[4:])}
    return {held_out} if split == "test" else set(FOLDS) - {held_out}


def load_split(root: Path, split: str, opts) -> SplitSource:
    table = root / "meta" / "esc50.csv"
    wanted = _folds_of(split, opts.fold)
    records = []
    for line, row in read_table(table, COLUMNS):
        try:
            fold, target = int(row["fold"]), int(row["target"])
        except ValueError:
            raise DataError("bad_value", "fold and target must be integers", file=str(table), line=line,
                            field="fold") from None
        if fold not in FOLDS:
            raise DataError("bad_value", f"fold {fold} is not one of 1-5", file=str(table), line=line, field="fold")
        if fold not in wanted:
            continue
        category = row["category"].strip()
        records.append({"key": Path(row["filename"]).stem, "audio": root / "audio" / row["filename"].strip(),
                        "task": TASK, "text": category.replace("_", " "), "label": category, "target": target,
                        "fold": fold, "esc10": (row.get("esc10") or "").strip().lower() == "true"})
    return SplitSource(records)
