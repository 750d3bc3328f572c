import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from usam.data.manifest import MixedManifest, fill_durations, mix_entries, read_manifest, read_manifests
from usam.errors import DataError


def write_wav(path, seconds=1.0, sr=16000, freq=440.0):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


def write_lines(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines), encoding="utf-8")
    return path


@pytest.fixture
def audio_dir(tmp_path):
    d = tmp_path / "wav"
    d.mkdir()
    write_wav(d / "a.wav", 1.0)
    write_wav(d / "b.wav", 2.5)
    return d


def test_jsonl_reader_fields(tmp_path, audio_dir):
    m = write_lines(tmp_path / "train.jsonl", [
        {"key": "a", "audio": "wav/a.wav", "task": "asr", "text": "hello", "lang": "en", "speaker": "s1"},
        "",
        {"key": "b", "audio": str(audio_dir / "b.wav"), "task": "aac", "text": ["a dog", "a dog barks"],
         "instruction": "What is it?", "offset": 0.5, "end": 2.0},
    ])
    a, b = read_manifest(m)
    assert a.audio == str(audio_dir / "a.wav") and a.text == ["hello"] and a.lang == "en"
    assert a.extra == {"speaker": "s1"} and a.line == 1 and a.source == str(m) and a.duration is None
    assert b.text == ["a dog", "a dog barks"] and b.target == "a dog" and b.instruction == "What is it?"
    assert (b.offset, b.end, b.duration, b.line) == (0.5, 2.0, 1.5, 3)
    assert fill_durations([a]) == [] and a.duration == pytest.approx(1.0)


BAD_LINES = [
    ("malformed_json", '{"key": "x1", "audio": "wav/a.wav",', None),
    ("malformed_json", '["not", "an", "object"]', None),
    ("missing_field", {"key": "x2", "task": "asr", "text": "t"}, "audio"),
    ("missing_field", {"key": "x3", "audio": "wav/a.wav", "task": "asr"}, "text"),
    ("bad_type", {"key": "x4", "audio": "wav/a.wav", "task": "asr", "text": 5}, "text"),
    ("missing_field", {"key": "x4b", "audio": "wav/a.wav", "task": "aac", "text": ["a dog", " "]}, "text"),
    ("bad_type", {"key": "x5", "audio": "wav/a.wav", "task": "asr", "text": "t", "duration": "long"}, "duration"),
    ("bad_type", {"key": 6, "audio": "wav/a.wav", "task": "asr", "text": "t"}, "key"),
    ("bad_value", {"key": "x7", "audio": "wav/a.wav", "task": "asr", "text": "t", "offset": 2, "end": 1}, "end"),
    ("unknown_task", {"key": "x8", "audio": "wav/a.wav", "task": "dance", "text": "t"}, "task"),
    ("duplicate_key", {"key": "good", "audio": "wav/b.wav", "task": "asr", "text": "again"}, "key"),
    ("missing_file", {"key": "x9", "audio": "wav/nope.wav", "task": "asr", "text": "t"}, "audio"),
]


@pytest.mark.parametrize("reason,line,field", BAD_LINES)
def test_bad_line_strict(tmp_path, audio_dir, reason, line, field):
    good = {"key": "good", "audio": "wav/a.wav", "task": "asr", "text": "fine"}
    m = write_lines(tmp_path / "m.jsonl", [good, line])
    with pytest.raises(DataError) as e:
        read_manifest(m, strict=True)
    err = e.value
    assert (err.reason, err.file, err.line, err.field) == (reason, str(m), 2, field)
    assert str(err).startswith(f"{m}:2: ") and reason in str(err)


def test_bad_lines_non_strict_reports_all(tmp_path, audio_dir):
    good = {"key": "good", "audio": "wav/a.wav", "task": "asr", "text": "fine"}
    m = write_lines(tmp_path / "m.jsonl", [good] + [line for _, line, _ in BAD_LINES])
    entries, problems = read_manifest(m, strict=False)
    assert [e.key for e in entries] == ["good"]
    assert Counter(p.reason for p in problems) == Counter(r for r, _, _ in BAD_LINES)
    assert sorted(p.line for p in problems) == list(range(2, 2 + len(BAD_LINES)))


def test_missing_manifest(tmp_path):
    with pytest.raises(DataError) as e:
        read_manifest(tmp_path / "none.jsonl")
    assert e.value.reason == "missing_file"


def test_duplicate_keys_across_manifests(tmp_path, audio_dir):
    one = write_lines(tmp_path / "one.jsonl", [{"key": "k", "audio": "wav/a.wav", "task": "asr", "text": "x"}])
    two = write_lines(tmp_path / "two.jsonl", [{"key": "k", "audio": "wav/b.wav", "task": "mc", "text": "y"}])
    entries, problems = read_manifests([one, two], strict=False)
    assert len(entries) == 1 and [(p.reason, p.file) for p in problems] == [("duplicate_key", str(two))]
    assert f"{one}:1" in problems[0].message


def test_official_format(tmp_path, audio_dir):
    m = write_lines(tmp_path / "eg_test.data", [
        {"key": "0edb", "wav": str(audio_dir / "a.wav"), "label": "a machine whines\tsomeone trims bushes",
         "dur": "1.0", "task": "AAC"},
        {"key": "0edc", "wav": "wav/b.wav", "label": "hello", "dur": 2.5},
    ])
    with pytest.raises(DataError) as e:  # the second line has no task and no default was given
        read_manifest(m)
    assert (e.value.reason, e.value.line, e.value.field) == ("missing_field", 2, "task")
    a, b = read_manifest(m, task="ASR")
    assert a.task == "aac" and a.text == ["a machine whines", "someone trims bushes"] and a.duration == 1.0
    assert b.task == "asr" and b.audio == str(audio_dir / "b.wav") and b.duration == 2.5
    bad = write_lines(tmp_path / "bad.data", [{"key": "z", "wav": "wav/a.wav", "label": "x", "dur": "1.0s",
                                                "task": "ASR"}])
    with pytest.raises(DataError) as e:
        read_manifest(bad, format="official")
    assert (e.value.reason, e.value.field) == ("bad_type", "dur")


def _hf_dataset(audio_dir):
    from datasets import Audio, Dataset

    wav_bytes = (audio_dir / "a.wav").read_bytes()
    ds = Dataset.from_dict({
        "audio": [{"bytes": wav_bytes, "path": "a.wav"}, {"bytes": None, "path": str(audio_dir / "b.wav")},
                  None],
        "sentence": ["one", "two", "three"],
        "id": ["u1", "u2", "u3"],
        "speaker": [7, 8, 9],
    })
    return ds.cast_column("audio", Audio(decode=False))


def test_hf_save_to_disk_and_parquet(tmp_path, audio_dir):
    from usam.data.audio import load_audio

    ds = _hf_dataset(audio_dir)
    ds.save_to_disk(str(tmp_path / "hf_disk"))
    ds.to_parquet(str(tmp_path / "hf.parquet"))
    for path in (tmp_path / "hf_disk", tmp_path / "hf.parquet"):
        entries, problems = read_manifest(path, strict=False, text_column="sentence", key_column="id", task="asr",
                                          cache_dir=str(tmp_path / "cache"))
        assert [e.key for e in entries] == ["u1", "u2"]
        assert [(p.reason, p.line, p.field) for p in problems] == [("missing_field", 3, "audio")]
        assert entries[0].text == ["one"] and entries[0].extra == {"speaker": 7} and entries[0].task == "asr"
        assert len(load_audio(entries[0].audio)) == 16000
        assert len(load_audio(entries[1].audio)) == 40000
        assert fill_durations(entries) == [] and entries[1].duration == pytest.approx(2.5)
    with pytest.raises(DataError) as e:  # no task column and no fixed task
        read_manifest(tmp_path / "hf.parquet", text_column="sentence", cache_dir=str(tmp_path / "cache"))
    assert e.value.reason == "missing_field"
    with pytest.raises(DataError) as e:
        read_manifest(tmp_path / "hf_disk", text_column="transcript", task="asr")
    assert (e.value.reason, e.value.field) == ("missing_field", "transcript")


def _entries(tmp_path, n, prefix):
    write_wav(tmp_path / "x.wav", 0.1)
    lines = [{"key": f"{prefix}{i}", "audio": "x.wav", "task": "asr", "text": "t", "duration": 0.1} for i in range(n)]
    return read_manifest(write_lines(tmp_path / f"{prefix}.jsonl", lines))


def test_mix_entries_weights(tmp_path):
    a, b = _entries(tmp_path, 10, "a"), _entries(tmp_path, 20, "b")
    mixed = mix_entries([(a, 2.0), (b, 0.25)], seed=3, epoch=0)
    counts = Counter(e.key for e in mixed)
    assert all(counts[f"a{i}"] == 2 for i in range(10))
    assert sum(counts[f"b{i}"] for i in range(20)) == 5 and max(counts[f"b{i}"] for i in range(20)) == 1
    again = mix_entries([(a, 2.0), (b, 0.25)], seed=3, epoch=0)
    assert [e.key for e in again] == [e.key for e in mixed]
    other = mix_entries([(a, 2.0), (b, 0.25)], seed=3, epoch=1)
    assert len(other) == len(mixed) and [e.key for e in other] != [e.key for e in mixed]
    mm = MixedManifest([(a, 1.5), (b, 1.0)], seed=0)
    assert len(mm) == len(mm.epoch_entries(4)) == 35
    with pytest.raises(ValueError):
        mix_entries([(a, -1.0)], seed=0)
