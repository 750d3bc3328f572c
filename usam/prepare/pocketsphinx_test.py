"""Real human speech that installs offline: the test recordings of PocketSphinx's source package on PyPI.

PyPI is reachable wherever pip is, so this is the one source of real English recordings with transcripts the
project can count on without a dataset hub. pocketsphinx 5.1.1's sdist (BSD licence, CMU) ships:
  test/data/librivox/*.wav + *.txt   5 sentences of LibriVox's "Sense and Sensibility" (public domain),
                                     read by one human speaker, 16 kHz, 3-7 s
  test/data/cards/NNN.wav            5 short commands ("ten of clubs"), transcripts in cards.transcription
About 35 s of speech in all: too little to train on, enough to see whether a model that learned on synthetic
voices hears a person. (The .raw files of the package have no header; they are left out.)

--root is the unpacked pocketsphinx-<version>/ folder, or a folder holding it. `fetch()` downloads the pinned
sdist (checked by sha256) and unpacks only these files.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from usam.errors import DataError
from usam.paths import cache_root
from usam.prepare.common import SplitSource, require_dir, require_file

NAME = "pocketsphinx_test"
TASK = "asr"
SPLITS = ("test",)
HELP = "PocketSphinx's real test recordings: LibriVox read speech and spoken commands (asr, 10 clips)"
NOTES = ("key = librivox-<file stem> or cards-<id>; text = the package's transcript (lower case, no "
         "punctuation); extra field source (librivox or cards).")

VERSION = "5.1.1"
SDIST_URL = ("https://files.pythonhosted.org/packages/61/e7/13e0e787ff467218de880310d79cba14424f13b87171ac44af0bde1e"
             "428c/pocketsphinx-5.1.1.tar.gz")
SDIST_SHA256 = "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355"
# members of the sdist that fetch() unpacks (relative to pocketsphinx-<version>/)
WANTED = re.compile(r"^(LICENSE|test/data/librivox/[^/]+\.(wav|txt)|test/data/cards/(\d+\.wav|cards\.transcription))$")
log = logging.getLogger("usam.prepare.pocketsphinx_test")


def default_dir() -> Path:
    """Where fetch() puts the files: <cache root>/real/pocketsphinx-<version> (usam.paths: $USAM_CACHE, else
    ~/.cache/usam)."""
    return cache_root() / "real" / f"pocketsphinx-{VERSION}"


def fetch(dest: Path | None = None, url: str = SDIST_URL, sha256: str = SDIST_SHA256) -> Path:
    """Download the pinned sdist, check its sha256 and unpack the recordings, transcripts and licence into dest.
    Returns dest (unchanged when it already holds the recordings)."""
    dest = Path(dest) if dest is not None else default_dir()
    if (dest / "test/data/librivox").is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        archive = Path(tmp) / "sdist.tar.gz"
        log.info("downloading %s", url)
        with urllib.request.urlopen(url, timeout=120) as response, open(archive, "wb") as f:
            digest = hashlib.sha256()
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                f.write(chunk)
        if digest.hexdigest() != sha256:
            raise DataError("bad_value", f"sha256 {digest.hexdigest()} of {url} is not the pinned {sha256}",
                            file=url)
        staging = Path(tmp) / "unpacked"
        with tarfile.open(archive) as tar:
            members = []
            for member in tar.getmembers():
                _, _, inner = member.name.partition("/")
                if member.isfile() and WANTED.match(inner):
                    member.name = inner
                    members.append(member)
            # only regular files whose names WANTED matches (no links, no '..'); the "data" filter checks again
            # where Python has it (3.11.4+, 3.12)
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(staging, members=members, **safe)
        os.replace(staging, dest)  # atomic: a half-unpacked folder is never taken for a finished one
    return dest


def add_arguments(parser) -> None:
    pass  # only the common options


def _data_dir(root: Path) -> Path:
    for candidate in (root, *sorted(root.glob("pocketsphinx-*"))):
        if (candidate / "test/data").is_dir():
            return candidate / "test/data"
    raise DataError("missing_file", f"no test/data folder of a pocketsphinx source package under {root}",
                    file=str(root))


def find_splits(root: Path, opts) -> list[str]:
    _data_dir(root)
    return list(SPLITS)


def _librivox(data: Path) -> list[dict]:
    folder = require_dir(data / "librivox", "PocketSphinx librivox recordings")
    records = []
    for wav in sorted(folder.glob("*.wav")):
        text = require_file(wav.with_suffix(".txt"), f"transcript of {wav.name}").read_text(encoding="utf-8")
        if not text.strip():
            raise DataError("bad_value", "empty transcript", file=str(wav.with_suffix(".txt")))
        records.append({"key": f"librivox-{wav.stem}", "audio": wav, "task": TASK, "text": " ".join(text.split()),
                        "source": "librivox"})
    return records


def _cards(data: Path) -> list[dict]:
    listing = require_file(data / "cards/cards.transcription", "PocketSphinx cards transcripts")
    records = []
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        match = re.fullmatch(r"\s*(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\((\w+)\)\s*", line)
        if not match or not match.group(1):
            raise DataError("bad_value", f"expected '<s> TRANSCRIPT </s> (ID)', got {line[:60]!r}",
                            file=str(listing), line=number)
        text, clip = match.groups()
        records.append({"key": f"cards-{clip}", "audio": listing.parent / f"{clip}.wav", "task": TASK,
                        "text": " ".join(text.split()), "source": "cards"})
    return records


def load_split(root: Path, split: str, opts) -> SplitSource:
    data = _data_dir(root)
    records = _librivox(data) + _cards(data)
    if not records:
        raise DataError("missing_file", f"no recordings under {data}", file=str(data))
    return SplitSource(records)
