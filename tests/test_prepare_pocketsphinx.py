"""PocketSphinx's real test recordings: the preparer on a fake copy with the sdist's layout, the pinned download
(sha256 check, only the wanted members unpacked, atomic), and the real files that scripts/setup.sh fetched."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from usam.errors import DataError
from usam.prepare import prepare_dataset
from usam.prepare import pocketsphinx_test as ps


def wav_bytes(seconds: float) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(buf, 0.1 * np.sin(2 * np.pi * 300 * t), 16000, format="WAV")
    return buf.getvalue()


FILES = {
    "LICENSE": b"Copyright (c) CMU\n",
    "test/data/librivox/book-0001.wav": wav_bytes(1.0),
    "test/data/librivox/book-0001.txt": b"he was not an ill disposed\n young man\n",
    "test/data/librivox/book-0002.wav": wav_bytes(0.5),
    "test/data/librivox/book-0002.txt": b"he might even have been made amiable himself\n",
    "test/data/cards/001.wav": wav_bytes(0.4),
    "test/data/cards/002.wav": wav_bytes(0.6),
    "test/data/cards/cards.transcription": b"<s> ten of clubs  </s> (001)\n<s> five five  </s> (002)\n",
    "test/data/goforward.raw": b"\x00\x01" * 100,  # headerless: left out
    "src/decoder.c": b"int main;",
}


def make_sdist(path: Path, files: dict[str, bytes] = FILES) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"pocketsphinx-{ps.VERSION}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_tree(root: Path, files: dict[str, bytes] = FILES) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def read_rows(path: Path) -> dict[str, dict]:
    return {r["key"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def test_prepare_librivox_and_cards(tmp_path):
    root = make_tree(tmp_path / f"pocketsphinx-{ps.VERSION}")
    (summary,) = prepare_dataset("pocketsphinx_test", tmp_path, tmp_path / "out")  # the folder holding it
    assert summary.count == 4 and summary.missing_audio == 0
    rows = read_rows(tmp_path / "out/pocketsphinx_test/test.jsonl")
    assert set(rows) == {"librivox-book-0001", "librivox-book-0002", "cards-001", "cards-002"}
    assert rows["librivox-book-0001"]["text"] == "he was not an ill disposed young man"  # lines joined
    assert rows["cards-001"]["text"] == "ten of clubs" and rows["cards-002"]["source"] == "cards"
    assert rows["cards-002"]["audio"] == str(root / "test/data/cards/002.wav")
    assert rows["librivox-book-0002"]["duration"] == pytest.approx(0.5)
    assert all(r["task"] == "asr" for r in rows.values())


def test_bad_cards_line_and_missing_transcript_are_named(tmp_path):
    files = dict(FILES)
    files["test/data/cards/cards.transcription"] = b"<s> ten of clubs </s> (001)\nten of clubs\n"
    make_tree(tmp_path / "a", files)
    with pytest.raises(DataError, match=r"cards\.transcription:2: bad_value"):
        prepare_dataset("pocketsphinx_test", tmp_path / "a", tmp_path / "out")
    files = {k: v for k, v in FILES.items() if k != "test/data/librivox/book-0002.txt"}
    make_tree(tmp_path / "b", files)
    with pytest.raises(DataError, match="book-0002.txt"):
        prepare_dataset("pocketsphinx_test", tmp_path / "b", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no test/data folder"):
        prepare_dataset("pocketsphinx_test", tmp_path / "empty", tmp_path / "out")


def test_fetch_checks_sha256_and_unpacks_only_recordings(tmp_path):
    sdist = make_sdist(tmp_path / "sdist.tar.gz")
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="sha256"):
        ps.fetch(tmp_path / "bad", url=sdist.as_uri(), sha256="0" * 64)
    assert not (tmp_path / "bad").exists()  # nothing half-unpacked is left behind
    dest = ps.fetch(tmp_path / "good", url=sdist.as_uri(), sha256=digest)
    unpacked = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert unpacked == sorted(k for k in FILES if k not in ("test/data/goforward.raw", "src/decoder.c"))
    sdist.unlink()  # a second call finds the files and downloads nothing
    assert ps.fetch(dest, url=sdist.as_uri(), sha256=digest) == dest
    (summary,) = prepare_dataset("pocketsphinx_test", dest, tmp_path / "out")
    assert summary.count == 4


def test_the_real_recordings():
    """The files scripts/setup.sh fetched (fetched here if absent: PyPI is reachable wherever pip is)."""
    dest = ps.fetch()
    source = ps.load_split(dest, "test", None)
    rows = {r["key"]: r for r in source.records}
    assert len(rows) == 10 and sum(r["source"] == "librivox" for r in rows.values()) == 5
    assert rows["cards-001"]["text"] == "ten of clubs"
    seconds = sum(sf.info(str(r["audio"])).duration for r in rows.values())
    assert 30 < seconds < 40
    assert all(sf.info(str(r["audio"])).samplerate == 16000 for r in rows.values())
    assert "Carnegie Mellon" in (dest / "LICENSE").read_text()
