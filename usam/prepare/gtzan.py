"""GTZAN (Tzanetakis & Cook 2002): music genre classification, task cls, 10 genres x 100 tracks of 30 s.

Layout: genres_original/<genre>/<genre>.000NN.wav (the Kaggle copy) or genres/<genre>/<genre>.000NN.au (the
original archive); --root may also be that genres folder itself.
Splits train / valid / test:
  * --split-lists DIR: read the split from list files, e.g. the fault-filtered split of Kereliuk et al. 2015
    (train_filtered.txt, valid_filtered.txt, test_filtered.txt from github.com/coreyker/dnn-mgr, not shipped
    here). Accepted file names per split: <split>.txt or <split>_filtered.txt (valid also val.txt);
    one track a line, as blues/blues.00012.au, blues.00012.wav or blues.00012.
  * otherwise a deterministic split: per genre, the 100 track numbers are shuffled by random.Random(--seed)
    and the first --test-count go to test, the next --valid-count to valid, the rest to train. The shuffle
    covers every track number, so the split is the same for the .wav and the .au copy.
jazz.00054.wav (the Kaggle copy) cannot be decoded: it is left out with a logged reason, as is any other
track whose header libsndfile cannot read.
"""
from __future__ import annotations

import random
from pathlib import Path

from usam.errors import DataError
from usam.prepare.common import SplitSource, audio_seconds, log, require_file

NAME = "gtzan"
TASK = "cls"
SPLITS = ("train", "valid", "test")
GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
HELP = "GTZAN music genre classification (cls; split lists or a seeded split)"
NOTES = ("key = <genre>.000NN; text = label = the genre; split from --split-lists when given, else seeded "
         "per-genre split (see usam/prepare/gtzan.py); jazz.00054.wav skipped as corrupt.")
KNOWN_CORRUPT = {"jazz.00054.wav": "known corrupt file in the Kaggle copy of GTZAN (libsndfile cannot decode it)"}
_LIST_NAMES = {"train": ("train.txt", "train_filtered.txt"),
               "valid": ("valid.txt", "valid_filtered.txt", "val.txt", "validation.txt"),
               "test": ("test.txt", "test_filtered.txt")}


def add_arguments(parser) -> None:
    parser.add_argument("--split-lists", type=Path, default=None, metavar="DIR",
                        help="folder of split list files (train[_filtered].txt, valid[_filtered].txt, "
                             "test[_filtered].txt), e.g. the fault-filtered split; default: a seeded split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-genre shuffle (default: 0)")
    parser.add_argument("--valid-count", type=int, default=10, help="tracks per genre in valid (default: 10)")
    parser.add_argument("--test-count", type=int, default=10, help="tracks per genre in test (default: 10)")


def _genres_dir(root: Path) -> Path:
    for name in ("genres_original", "genres"):
        if (root / name).is_dir():
            return root / name
    if any((root / g).is_dir() for g in GENRES):
        return root
    raise DataError("missing_file", f"no genres_original/ or genres/ folder (nor genre folders) in {root}",
                    file=str(root / "genres_original"))


def _tracks(root: Path) -> dict[str, Path]:
    """Track stem (blues.00012) -> audio file, over every genre folder."""
    genres = _genres_dir(root)
    tracks = {}
    for genre in GENRES:
        for path in sorted((genres / genre).glob(f"{genre}.*")):
            if path.suffix.lower() in (".wav", ".au"):
                tracks[path.stem] = path
    if not tracks:
        raise DataError("missing_file", f"no <genre>/<genre>.NNNNN.wav or .au files under {genres}", file=str(genres))
    return tracks


def find_splits(root: Path, opts) -> list[str]:
    _tracks(root)
    return list(SPLITS)


def _stems_from_list(folder: Path, split: str) -> list[str]:
    path = next((folder / n for n in _LIST_NAMES[split] if (folder / n).is_file()), None)
    if path is None:
        require_file(folder / _LIST_NAMES[split][0], f"GTZAN {split} list (or {', '.join(_LIST_NAMES[split][1:])})")
    stems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        name = Path(entry).name
        stem = name.rsplit(".", 1)[0] if name.lower().endswith((".wav", ".au")) else name
        genre = stem.split(".")[0]
        if genre not in GENRES or len(stem.split(".")) != 2:
            raise DataError("bad_value", f"{entry!r} does not name a GTZAN track like blues.00012", file=str(path),
                            line=number)
        stems.append(stem)
    return stems


def _seeded_stems(split: str, opts) -> list[str]:
    if opts.valid_count < 0 or opts.test_count < 0 or opts.valid_count + opts.test_count > 100:
        raise ValueError("--valid-count and --test-count must be >= 0 and sum to at most 100")
    stems = []
    for genre in GENRES:
        numbers = list(range(100))
        random.Random(f"{opts.seed}-{genre}").shuffle(numbers)
        test, valid = numbers[:opts.test_count], numbers[opts.test_count:opts.test_count + opts.valid_count]
        chosen = {"test": test, "valid": valid, "train": numbers[opts.test_count + opts.valid_count:]}[split]
        stems += [f"{genre}.{n:05d}" for n in sorted(chosen)]
    return stems


def load_split(root: Path, split: str, opts) -> SplitSource:
    tracks = _tracks(root)
    stems = _stems_from_list(opts.split_lists, split) if opts.split_lists else _seeded_stems(split, opts)
    genres = _genres_dir(root)
    suffix = next(iter(tracks.values())).suffix  # .wav or .au, for naming absent tracks
    records, skipped = [], {}
    for stem in stems:
        genre = stem.split(".")[0]
        audio = tracks.get(stem)
        if audio is None:  # absent from this copy: counted (and by default left out) as missing audio
            audio = genres / genre / f"{stem}{suffix}"
        elif audio.name in KNOWN_CORRUPT:
            skipped[audio.name] = KNOWN_CORRUPT[audio.name]
            log.warning("gtzan %s: skipping %s: %s", split, audio, KNOWN_CORRUPT[audio.name])
            continue
        elif audio_seconds(audio) is None:
            skipped[audio.name] = "libsndfile cannot read its header"
            log.warning("gtzan %s: skipping %s: unreadable audio", split, audio)
            continue
        records.append({"key": stem, "audio": audio, "task": TASK, "text": genre, "label": genre})
    return SplitSource(records, skipped)
