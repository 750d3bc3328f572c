"""AudioCaps (github.com/cdjkim/audiocaps): audio captioning on AudioSet clips, task aac.

Layout: train.csv, val.csv, test.csv (audiocap_id, youtube_id, start_time, caption), in --root or
--root/dataset/ as in the AudioCaps repository. Audio is fetched from YouTube by each user, so file names
vary: --audio-pattern says how they are named. One row is one caption: rows of the same clip (youtube_id,
start_time) are grouped into one record holding every caption (5 per clip in val and test).
Clips whose audio is absent are reported with a count and left out.
"""
from __future__ import annotations

from pathlib import Path

from usam.errors import DataError
from usam.prepare.common import SplitSource, fill_pattern, first_existing, read_table

NAME = "audiocaps"
TASK = "aac"
SPLITS = ("train", "val", "test")
HELP = "AudioCaps audio captioning (aac; all captions of a clip grouped)"
NOTES = ("key = <youtube_id>_<start_time>; text = every caption of the clip (sorted by audiocap_id); "
         "audiocap_ids lists the source rows; offset is absent: the audio files are taken to be the 10 s clips.")
DEFAULT_PATTERNS = ("{split}/{youtube_id}.wav", "{split}/Y{youtube_id}.wav", "{split}/{audiocap_id}.wav",
                    "{youtube_id}.wav", "Y{youtube_id}.wav", "{audiocap_id}.wav")


def add_arguments(parser) -> None:
    parser.add_argument("--audio-dir", type=Path, default=None, help="folder of the downloaded audio (default: --root)")
    parser.add_argument("--audio-pattern", action="append", default=None, metavar="PATTERN",
                        help="audio file name under --audio-dir, with placeholders {split} {youtube_id} "
                             "{audiocap_id} {start_time}; repeat to try several in order (default: "
                             + ", ".join(DEFAULT_PATTERNS) + ")")


def _table(root: Path, split: str) -> Path:
    for folder in (root, root / "dataset"):
        if (folder / f"{split}.csv").is_file():
            return folder / f"{split}.csv"
    return root / f"{split}.csv"


def find_splits(root: Path, opts) -> list[str]:
    found = [s for s in SPLITS if _table(root, s).is_file()]
    if not found:
        raise DataError("missing_file", f"none of train.csv, val.csv, test.csv in {root} or {root / 'dataset'}",
                        file=str(root / "train.csv"))
    return found


def _start_label(value: str) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else str(number)


def load_split(root: Path, split: str, opts) -> SplitSource:
    table = _table(root, split)
    clips: dict[tuple[str, str], list[dict]] = {}
    for line, row in read_table(table, ("audiocap_id", "youtube_id", "start_time", "caption")):
        try:
            start = _start_label(row["start_time"])
        except ValueError:
            raise DataError("bad_value", f"start_time {row['start_time']!r} is not a number", file=str(table),
                            line=line, field="start_time") from None
        clips.setdefault((row["youtube_id"].strip(), start), []).append(row)
    audio_dir = opts.audio_dir or root
    patterns = opts.audio_pattern or list(DEFAULT_PATTERNS)
    records = []
    for (youtube_id, start), rows in clips.items():
        rows.sort(key=lambda r: int(r["audiocap_id"]) if r["audiocap_id"].isdigit() else r["audiocap_id"])
        candidates = [audio_dir / fill_pattern(p, "--audio-pattern", split=split, youtube_id=youtube_id,
                                               audiocap_id=r["audiocap_id"], start_time=start)
                      for p in patterns for r in rows]
        audio = first_existing(candidates)
        records.append({"key": f"{youtube_id}_{start}", "audio": audio, "task": TASK,
                        "text": [r["caption"].strip() for r in rows], "youtube_id": youtube_id,
                        "start_time": float(start), "audiocap_ids": [r["audiocap_id"] for r in rows]})
    return SplitSource(records)
