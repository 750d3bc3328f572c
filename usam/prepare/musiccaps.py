"""MusicCaps (Google, kaggle/HF "google/MusicCaps"): music captioning on AudioSet clips, task mc.

Layout: musiccaps-public.csv (ytid, start_s, end_s, audioset_positive_labels, aspect_list, caption, author_id,
is_balanced_subset, is_audioset_eval) and audio downloaded by each user, one file per ytid.
Split convention (MusicCaps has no official train/test split): is_audioset_eval True -> test (2,858 clips),
False -> train (2,663 clips), as in the papers that train on MusicCaps.
Audio files are either the 10 s clips (default) or whole YouTube tracks (--full-audio: each record then
carries offset = start_s and end = end_s). Clips whose audio is absent are counted and left out.
"""
from __future__ import annotations

import ast
from pathlib import Path

from usam.errors import DataError
from usam.prepare.common import SplitSource, fill_pattern, first_existing, read_table, require_file

NAME = "musiccaps"
TASK = "mc"
SPLITS = ("train", "test")
HELP = "MusicCaps music captioning (mc; is_audioset_eval -> test)"
NOTES = ("split: is_audioset_eval True -> test, False -> train; key = ytid; text = the caption (one per clip); "
         "aspects = the aspect_list; offset/end = start_s/end_s only with --full-audio.")
TABLE = "musiccaps-public.csv"
DEFAULT_PATTERNS = ("{ytid}.wav", "audio/{ytid}.wav", "wav/{ytid}.wav")


def add_arguments(parser) -> None:
    parser.add_argument("--audio-dir", type=Path, default=None, help="folder of the downloaded audio (default: --root)")
    parser.add_argument("--audio-pattern", action="append", default=None, metavar="PATTERN",
                        help="audio file name under --audio-dir, with placeholders {ytid} {start_s} {end_s}; "
                             "repeat to try several in order (default: " + ", ".join(DEFAULT_PATTERNS) + ")")
    parser.add_argument("--full-audio", action="store_true",
                        help="the files are whole YouTube tracks: write offset=start_s, end=end_s per clip")


def find_splits(root: Path, opts) -> list[str]:
    require_file(root / TABLE, "the MusicCaps metadata table")
    return list(SPLITS)


def _parse_bool(value: str, table: Path, line: int) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise DataError("bad_value", f"is_audioset_eval must be True or False, got {value!r}", file=str(table),
                    line=line, field="is_audioset_eval")


def _parse_aspects(value: str, table: Path, line: int) -> list[str]:
    # The column holds a Python list literal, e.g. "['low quality', 'sustained strings melody']".
    try:
        aspects = ast.literal_eval(value) if value.strip() else []
    except (ValueError, SyntaxError):
        raise DataError("bad_value", f"aspect_list is not a list literal: {value[:60]!r}", file=str(table),
                        line=line, field="aspect_list") from None
    if not isinstance(aspects, list):
        raise DataError("bad_type", "aspect_list is not a list", file=str(table), line=line, field="aspect_list")
    return [str(a) for a in aspects]


def load_split(root: Path, split: str, opts) -> SplitSource:
    table = root / TABLE
    audio_dir = opts.audio_dir or root
    patterns = opts.audio_pattern or list(DEFAULT_PATTERNS)
    records = []
    for line, row in read_table(table, ("ytid", "start_s", "end_s", "caption", "is_audioset_eval")):
        if _parse_bool(row["is_audioset_eval"], table, line) != (split == "test"):
            continue
        try:
            start, end = float(row["start_s"]), float(row["end_s"])
        except ValueError:
            raise DataError("bad_value", "start_s/end_s are not numbers", file=str(table), line=line,
                            field="start_s") from None
        if end <= start:
            raise DataError("bad_value", f"end_s {end} <= start_s {start}", file=str(table), line=line, field="end_s")
        ytid = row["ytid"].strip()
        candidates = [audio_dir / fill_pattern(p, "--audio-pattern", ytid=ytid, start_s=row["start_s"],
                                               end_s=row["end_s"]) for p in patterns]
        record = {"key": ytid, "audio": first_existing(candidates), "task": TASK,
                  "text": row["caption"].strip(), "aspects": _parse_aspects(row.get("aspect_list") or "", table, line),
                  "ytid": ytid, "start_s": start, "end_s": end}
        if opts.full_audio:
            record.update(offset=start, end=end)
        records.append(record)
    return SplitSource(records)
