"""LibriSpeech (openslr.org/12): read speech, task asr.

Layout: LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt, each line
"<speaker>-<chapter>-<utterance> TRANSCRIPT", next to <speaker>-<chapter>-<utterance>.flac.
--root is the folder holding LibriSpeech/, or LibriSpeech/ itself.
"""
from __future__ import annotations

from pathlib import Path

from usam.errors import DataError
from usam.prepare.common import SplitSource, require_dir

NAME = "librispeech"
TASK = "asr"
SPLITS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other",
          "test-clean", "test-other")
HELP = "LibriSpeech read English speech (asr)"
NOTES = ("key = utterance id; text = the official transcript (upper case, unnormalised); "
         "extra fields speaker, chapter.")


def add_arguments(parser) -> None:
    pass  # only the common options


def _corpus_dir(root: Path) -> Path:
    return root / "LibriSpeech" if (root / "LibriSpeech").is_dir() else root


def find_splits(root: Path, opts) -> list[str]:
    corpus = _corpus_dir(root)
    found = [s for s in SPLITS if (corpus / s).is_dir()]
    if not found:
        raise DataError("missing_file", f"no LibriSpeech split folder ({', '.join(SPLITS)}) under {corpus}",
                        file=str(corpus))
    return found


def load_split(root: Path, split: str, opts) -> SplitSource:
    split_dir = require_dir(_corpus_dir(root) / split, f"LibriSpeech split {split}")
    transcripts = sorted(split_dir.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise DataError("missing_file", f"no <speaker>/<chapter>/*.trans.txt under {split_dir}", file=str(split_dir))
    records = []
    for trans in transcripts:
        speaker, chapter = trans.parent.parent.name, trans.parent.name
        for number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            key, _, text = line.strip().partition(" ")
            if not text.strip() or not key.startswith(f"{speaker}-{chapter}-"):
                raise DataError("bad_value", f"expected '{speaker}-{chapter}-NNNN TRANSCRIPT', got {line[:60]!r}",
                                file=str(trans), line=number)
            records.append({"key": key, "audio": trans.parent / f"{key}.flac", "task": TASK,
                            "text": text.strip(), "speaker": speaker, "chapter": chapter})
    return SplitSource(records)
