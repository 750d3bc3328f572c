"""CoVoST 2 English -> X (default Chinese, zh-CN): speech translation, task s2tt.

Either the per-split tables made by CoVoST's get_covost_splits.py, covost_v2.en_<tgt>.<split>.tsv
(columns path, sentence, translation, client_id), or the released covost_v2.en_<tgt>.tsv (path, translation,
split) joined here by path with Common Voice English's validated.tsv (path, sentence, client_id), as that
script does. Audio: Common Voice English clips/<path>.mp3 (decoded by libsndfile >= 1.1).
"""
from __future__ import annotations

import csv
from pathlib import Path

from usam.errors import DataError
from usam.prepare.common import SplitSource, log, read_table, require_file

NAME = "covost2"
TASK = "s2tt"
SPLITS = ("train", "dev", "test")
HELP = "CoVoST 2 English speech -> text translation (s2tt, default target zh-CN)"
NOTES = ("key = Common Voice clip name without .mp3; text = the translation; transcript = the English "
         "sentence; lang = target language code without region (zh); src_lang = en; speaker = client_id. "
         "train includes rows marked train_covost in the released table.")

# Common Voice tables hold unbalanced quotes inside sentences: CoVoST reads and writes every table with
# quoting off and backslash escapes (get_covost_splits.py), so read them the same way.
_TSV = {"delimiter": "\t", "quoting": csv.QUOTE_NONE, "escapechar": "\\"}


def add_arguments(parser) -> None:
    parser.add_argument("--tgt-lang", default="zh-CN",
                        help="CoVoST target language code as in the table names (default: zh-CN)")
    parser.add_argument("--cv-dir", type=Path, default=None,
                        help="Common Voice English folder holding clips/ and validated.tsv (default: --root)")


def _split_table(root: Path, opts, split: str) -> Path:
    return root / f"covost_v2.en_{opts.tgt_lang}.{split}.tsv"


def _released_table(root: Path, opts) -> Path:
    return root / f"covost_v2.en_{opts.tgt_lang}.tsv"


def find_splits(root: Path, opts) -> list[str]:
    found = [s for s in SPLITS if _split_table(root, opts, s).is_file()]
    if found:
        return found
    if _released_table(root, opts).is_file():
        return list(SPLITS)
    raise DataError("missing_file", f"neither {_split_table(root, opts, '<split>').name} nor "
                    f"{_released_table(root, opts).name} found in {root}", file=str(_released_table(root, opts)))


def _rows_from_released(root: Path, opts, split: str) -> tuple[list[tuple[str, int, dict]], dict[str, str]]:
    """Rows (table, line, row with path/sentence/translation/client_id) of the released table joined with
    validated.tsv, and the clips left out because validated.tsv lacks them (the join is inner, as in
    get_covost_splits.py: a newer Common Voice release may have dropped some clips)."""
    table = _released_table(root, opts)
    cv_dir = opts.cv_dir or root
    validated_path = require_file(cv_dir / "validated.tsv", "Common Voice English validated.tsv, needed to join "
                                  "the released CoVoST table (or pass --cv-dir)")
    validated = {row["path"]: row for _, row in read_table(validated_path, ("path", "sentence"), **_TSV)}
    wanted = {"train", "train_covost"} if split == "train" else {split}  # CoVoST 2's rule for en->X
    rows, skipped = [], {}
    for line, row in read_table(table, ("path", "translation", "split"), **_TSV):
        if row["split"] not in wanted:
            continue
        source = validated.get(row["path"])
        if source is None:
            skipped[row["path"]] = f"not in {validated_path}"
            continue
        rows.append((str(table), line, {**row, "sentence": source["sentence"],
                                        "client_id": source.get("client_id", "")}))
    if skipped:
        log.warning("covost2 %s: %d clip(s) of %s are not in %s and are left out, e.g. %s", split, len(skipped),
                    table.name, validated_path, next(iter(skipped)))
    return rows, skipped


def load_split(root: Path, split: str, opts) -> SplitSource:
    table = _split_table(root, opts, split)
    skipped = {}
    if table.is_file():
        rows = [(str(table), line, row)
                for line, row in read_table(table, ("path", "sentence", "translation"), **_TSV)]
    elif _released_table(root, opts).is_file():
        rows, skipped = _rows_from_released(root, opts, split)
    else:
        raise DataError("missing_file", f"{table} not found (nor {_released_table(root, opts).name})", file=str(table))
    clips = (opts.cv_dir or root) / "clips"
    lang = opts.tgt_lang.split("-")[0]
    records = []
    for _, _, row in rows:
        name = row["path"] if row["path"].endswith(".mp3") else row["path"] + ".mp3"
        records.append({"key": Path(name).stem, "audio": clips / name, "task": TASK, "text": row["translation"],
                        "lang": lang, "src_lang": "en", "transcript": row["sentence"],
                        "speaker": row.get("client_id") or ""})
    return SplitSource(records, skipped)
