"""Dataset preparers on tiny fake copies with the real folder layouts, file formats and real audio."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from usam.errors import DataError
from usam.prepare import prepare_dataset
from usam.prepare.gtzan import GENRES, _seeded_stems
from usam.prepare import default_options


def tone(path: Path, seconds: float, sr: int = 16000, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sr))) / sr
    sf.write(str(path), 0.1 * np.sin(2 * np.pi * 440 * t), sr, format=fmt)
    return path


def write_table(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        # TSVs as CoVoST's get_covost_splits.py writes them: no quoting, backslash escapes (He said \"hi.)
        tsv = {"quoting": csv.QUOTE_NONE, "escapechar": "\\"} if delimiter == "\t" else {}
        writer = csv.writer(f, delimiter=delimiter, **tsv)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def manifest(out: Path, dataset: str, split: str) -> dict[str, dict]:
    path = out / dataset / f"{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), f"duplicate keys in {path}"
    for r in rows:
        assert Path(r["audio"]).is_absolute() and Path(r["audio"]).is_file(), r
    return {r["key"]: r for r in rows}


# ---------------------------------------------------------------- LibriSpeech (flac)
def make_librispeech(root: Path) -> None:
    chapter = root / "LibriSpeech" / "test-clean" / "1089" / "134686"
    chapter.mkdir(parents=True)
    (chapter / "1089-134686.trans.txt").write_text(
        "1089-134686-0000 HE HOPED THERE WOULD BE STEW FOR DINNER\n1089-134686-0001 STUFF IT INTO YOU\n"
        "1089-134686-0002 THIS ONE HAS NO AUDIO\n")
    tone(chapter / "1089-134686-0000.flac", 1.0)
    tone(chapter / "1089-134686-0001.flac", 1.5)
    dev = root / "LibriSpeech" / "dev-clean" / "84" / "121123"
    dev.mkdir(parents=True)
    (dev / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n")
    tone(dev / "84-121123-0000.flac", 0.5)


def test_librispeech(tmp_path):
    make_librispeech(tmp_path / "data")
    summaries = prepare_dataset("librispeech", tmp_path / "data", tmp_path / "out", workers=2)
    assert [s.name for s in summaries] == ["dev-clean", "test-clean"]
    test = manifest(tmp_path / "out", "librispeech", "test-clean")
    assert sorted(test) == ["1089-134686-0000", "1089-134686-0001"]
    assert test["1089-134686-0000"]["text"] == "HE HOPED THERE WOULD BE STEW FOR DINNER"
    assert test["1089-134686-0001"]["duration"] == pytest.approx(1.5)
    assert test["1089-134686-0001"]["task"] == "asr" and test["1089-134686-0001"]["speaker"] == "1089"
    assert summaries[1].missing_audio == 1 and summaries[1].hours == pytest.approx(2.5 / 3600)
    info = json.loads((tmp_path / "out" / "librispeech" / "info.json").read_text())
    assert info["task"] == "asr" and info["eval_instruction"] == "Transcribe the speech."
    assert info["splits"]["test-clean"]["clips"] == 2 and info["splits"]["test-clean"]["missing_audio"] == 1


def test_librispeech_keep_missing_relative_and_one_split(tmp_path):
    make_librispeech(tmp_path / "data")
    prepare_dataset("librispeech", tmp_path / "data", tmp_path / "out", ["test-clean"], keep_missing=True,
                    relative=True)
    out_dir = tmp_path / "out" / "librispeech"
    assert not (out_dir / "dev-clean.jsonl").exists()
    rows = {json.loads(x)["key"]: json.loads(x) for x in (out_dir / "test-clean.jsonl").read_text().splitlines()}
    assert "duration" not in rows["1089-134686-0002"] and len(rows) == 3
    assert not Path(rows["1089-134686-0000"]["audio"]).is_absolute()
    assert (out_dir / rows["1089-134686-0000"]["audio"]).resolve().is_file()


def test_librispeech_bad_transcript_line(tmp_path):
    make_librispeech(tmp_path / "data")
    trans = tmp_path / "data" / "LibriSpeech" / "dev-clean" / "84" / "121123" / "84-121123.trans.txt"
    trans.write_text("84-121123-0000 GO DO YOU HEAR\n84-121123-0001\n")
    with pytest.raises(DataError, match=r"84-121123.trans.txt:2"):
        prepare_dataset("librispeech", tmp_path / "data", tmp_path / "out", ["dev-clean"])


# ---------------------------------------------------------------- CoVoST 2 en->zh (mp3)
def make_common_voice(cv: Path) -> None:
    tone(cv / "clips" / "common_voice_en_1.mp3", 2.0, sr=16000, fmt="MP3")
    tone(cv / "clips" / "common_voice_en_2.mp3", 3.0, sr=16000, fmt="MP3")
    tone(cv / "clips" / "common_voice_en_3.mp3", 1.0, sr=16000, fmt="MP3")
    write_table(cv / "validated.tsv", ["client_id", "path", "sentence", "up_votes"], [
        ["spk1", "common_voice_en_1.mp3", 'He said "hello.', "2"],
        ["spk2", "common_voice_en_2.mp3", "Good morning.", "3"],
        ["spk1", "common_voice_en_3.mp3", "Thank you.", "2"]], delimiter="\t")


def test_covost2_split_tables(tmp_path):
    root = tmp_path / "covost"
    make_common_voice(root)
    header = ["path", "sentence", "translation", "client_id"]
    write_table(root / "covost_v2.en_zh-CN.test.tsv", header, [
        ["common_voice_en_1.mp3", 'He said "hello.', "他说\u201c你好。", "spk1"],
        ["common_voice_en_2.mp3", "Good morning.", "早上好。", "spk2"]], delimiter="\t")
    write_table(root / "covost_v2.en_zh-CN.dev.tsv", header, [
        ["common_voice_en_3.mp3", "Thank you.", "谢谢。", "spk1"]], delimiter="\t")
    summaries = prepare_dataset("covost2", root, tmp_path / "out")
    assert [s.name for s in summaries] == ["dev", "test"]
    test = manifest(tmp_path / "out", "covost2", "test")
    first = test["common_voice_en_1"]
    assert first["text"] == "他说\u201c你好。" and first["transcript"] == 'He said "hello.'
    assert first["lang"] == "zh" and first["task"] == "s2tt" and first["speaker"] == "spk1"
    # mp3 frames include encoder padding: the header length is within a few frames of the written length
    assert first["duration"] == pytest.approx(2.0, abs=0.1)
    assert test["common_voice_en_2"]["duration"] == pytest.approx(3.0, abs=0.1)
    assert "他说" in (tmp_path / "out" / "covost2" / "test.jsonl").read_text(encoding="utf-8")


def test_covost2_released_table_joined_with_validated(tmp_path):
    root = tmp_path / "covost"
    make_common_voice(root)
    write_table(root / "covost_v2.en_zh-CN.tsv", ["path", "translation", "split"], [
        ["common_voice_en_1.mp3", "他说你好。", "train"], ["common_voice_en_2.mp3", "早上好。", "train_covost"],
        ["common_voice_en_3.mp3", "谢谢。", "test"], ["common_voice_en_9.mp3", "不见了。", "test"]], delimiter="\t")
    summaries = {s.name: s for s in prepare_dataset("covost2", root, tmp_path / "out")}
    assert summaries["test"].skipped == 1  # not in validated.tsv: left out, as get_covost_splits.py's inner join
    train = manifest(tmp_path / "out", "covost2", "train")
    assert sorted(train) == ["common_voice_en_1", "common_voice_en_2"]
    assert train["common_voice_en_2"]["transcript"] == "Good morning." and train["common_voice_en_2"]["speaker"] == "spk2"
    assert list(manifest(tmp_path / "out", "covost2", "test")) == ["common_voice_en_3"]
    assert manifest(tmp_path / "out", "covost2", "dev") == {}
    (root / "validated.tsv").unlink()
    with pytest.raises(DataError, match="validated.tsv"):
        prepare_dataset("covost2", root, tmp_path / "out2")


# ---------------------------------------------------------------- Clotho v2
def test_clotho_five_references(tmp_path):
    root = tmp_path / "clotho"
    header = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
    write_table(root / "clotho_captions_evaluation.csv", header, [
        ["Santa Motor.wav", "A motor hums, then stops.", "an engine, idling", 'a "loud" motor runs', "d", "e"],
        ["rain.wav", "rain falls", "rain on a roof", "water drips", "steady rain", "it rains hard"]])
    write_table(root / "clotho_captions_development.csv", header, [["x.wav", "a", "b", "c", "d", "e"]])
    tone(root / "evaluation" / "Santa Motor.wav", 2.0, sr=44100)
    tone(root / "evaluation" / "rain.wav", 1.25, sr=44100)
    tone(root / "development" / "x.wav", 0.5, sr=44100)
    summaries = prepare_dataset("clotho", root, tmp_path / "out")
    assert {s.name for s in summaries} == {"development", "evaluation"}
    evaluation = manifest(tmp_path / "out", "clotho", "evaluation")
    assert evaluation["Santa Motor"]["text"] == ["A motor hums, then stops.", "an engine, idling", 'a "loud" motor runs',
                                                 "d", "e"]
    assert evaluation["rain"]["duration"] == pytest.approx(1.25) and evaluation["rain"]["task"] == "aac"


def test_clotho_empty_caption_is_named(tmp_path):
    root = tmp_path / "clotho"
    write_table(root / "clotho_captions_validation.csv", ["file_name"] + [f"caption_{i}" for i in range(1, 6)],
                [["a.wav", "x", "y", "", "z", "w"]])
    with pytest.raises(DataError, match=r"clotho_captions_validation.csv:2: field 'caption_3'"):
        prepare_dataset("clotho", root, tmp_path / "out")


# ---------------------------------------------------------------- AudioCaps
def test_audiocaps_groups_captions_and_counts_missing(tmp_path):
    root = tmp_path / "audiocaps"
    header = ["audiocap_id", "youtube_id", "start_time", "caption"]
    # test rows of two clips, interleaved, 5 captions each
    rows = []
    for i in range(5):
        rows.append([str(100 + i), "abcdefghijk", "30", f"dog barks {i}"])
        rows.append([str(200 + i), "zyxwvutsrqp", "0", f"car passes {i}"])
    write_table(root / "dataset" / "test.csv", header, rows)
    write_table(root / "dataset" / "train.csv", header, [
        ["1", "trainclip01", "10", "birds sing"], ["2", "trainclip02", "20", "a man speaks"],
        ["3", "nodownload1", "0", "lost clip"]])
    tone(root / "test" / "Yabcdefghijk.wav", 10.0, sr=8000)
    tone(root / "test" / "Yzyxwvutsrqp.wav", 9.5, sr=8000)
    tone(root / "train" / "Ytrainclip01.wav", 10.0, sr=8000)
    tone(root / "train" / "Ytrainclip02.wav", 4.0, sr=8000)
    summaries = {s.name: s for s in prepare_dataset("audiocaps", root, tmp_path / "out")}
    assert set(summaries) == {"train", "test"}
    test = manifest(tmp_path / "out", "audiocaps", "test")
    assert sorted(test) == ["abcdefghijk_30", "zyxwvutsrqp_0"]
    assert test["abcdefghijk_30"]["text"] == [f"dog barks {i}" for i in range(5)]
    assert test["zyxwvutsrqp_0"]["audiocap_ids"] == [str(200 + i) for i in range(5)]
    assert test["zyxwvutsrqp_0"]["duration"] == pytest.approx(9.5)
    train = manifest(tmp_path / "out", "audiocaps", "train")
    assert sorted(train) == ["trainclip01_10", "trainclip02_20"] and summaries["train"].missing_audio == 1


def test_audiocaps_audio_pattern_by_audiocap_id(tmp_path):
    root = tmp_path / "audiocaps"
    write_table(root / "val.csv", ["audiocap_id", "youtube_id", "start_time", "caption"],
                [["7", "vvvvvvvvvvv", "5", "wind"], ["8", "vvvvvvvvvvv", "5", "wind blows"]])
    tone(tmp_path / "wavs" / "8.flac", 3.0)
    prepare_dataset("audiocaps", root, tmp_path / "out", audio_dir=tmp_path / "wavs",
                    audio_pattern=["{audiocap_id}.flac"])
    val = manifest(tmp_path / "out", "audiocaps", "val")
    assert val["vvvvvvvvvvv_5"]["audio"].endswith("8.flac") and val["vvvvvvvvvvv_5"]["text"] == ["wind", "wind blows"]
    with pytest.raises(DataError, match="unknown placeholder 'ytid'"):
        prepare_dataset("audiocaps", root, tmp_path / "out", audio_pattern=["{ytid}.wav"])


# ---------------------------------------------------------------- MusicCaps
MUSICCAPS_HEADER = ["ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption", "author_id",
                    "is_balanced_subset", "is_audioset_eval"]


def make_musiccaps(root: Path) -> None:
    write_table(root / "musiccaps-public.csv", MUSICCAPS_HEADER, [
        ["-0Gj8-vB1q4", "30", "40", "/m/0140xf", "['low quality', 'sustained strings melody']",
         "The low quality recording features a string melody.", "9", "False", "True"],
        ["-0SdAVK79lg", "30", "40", "/m/0155w", "['guitar song', 'piano']", "A guitar, then piano.", "4", "True",
         "False"],
        ["-0vPFx-wRRI", "0", "10", "/m/025_jnm", "['pop']", "Pop music.", "6", "False", "True"]])


def test_musiccaps_split_by_audioset_eval(tmp_path):
    root = tmp_path / "musiccaps"
    make_musiccaps(root)
    tone(root / "audio" / "-0Gj8-vB1q4.wav", 10.0, sr=8000)
    tone(root / "audio" / "-0SdAVK79lg.wav", 10.0, sr=8000)
    summaries = {s.name: s for s in prepare_dataset("musiccaps", root, tmp_path / "out")}
    test = manifest(tmp_path / "out", "musiccaps", "test")
    assert list(test) == ["-0Gj8-vB1q4"] and summaries["test"].missing_audio == 1
    clip = test["-0Gj8-vB1q4"]
    assert clip["task"] == "mc" and clip["text"] == "The low quality recording features a string melody."
    assert clip["aspects"] == ["low quality", "sustained strings melody"] and "offset" not in clip
    assert clip["duration"] == pytest.approx(10.0)
    assert list(manifest(tmp_path / "out", "musiccaps", "train")) == ["-0SdAVK79lg"]


def test_musiccaps_full_audio_segments(tmp_path):
    root = tmp_path / "musiccaps"
    make_musiccaps(root)
    for ytid in ("-0Gj8-vB1q4", "-0SdAVK79lg", "-0vPFx-wRRI"):
        tone(tmp_path / "full" / f"{ytid}.wav", 45.0, sr=4000)
    prepare_dataset("musiccaps", root, tmp_path / "out", audio_dir=tmp_path / "full", full_audio=True)
    test = manifest(tmp_path / "out", "musiccaps", "test")
    assert (test["-0Gj8-vB1q4"]["offset"], test["-0Gj8-vB1q4"]["end"]) == (30.0, 40.0)
    assert test["-0Gj8-vB1q4"]["duration"] == pytest.approx(10.0) and test["-0vPFx-wRRI"]["offset"] == 0.0


# ---------------------------------------------------------------- ESC-50
def make_esc50(root: Path, duplicate: bool = False) -> None:
    rows = []
    for fold in range(1, 6):
        for take, (target, category) in enumerate([(0, "dog"), (9, "crow"), (14, "chirping_birds")][:2 + fold % 2]):
            name = f"{fold}-1000{take}-A-{target}.wav"
            rows.append([name, str(fold), str(target), category, str(target == 0), f"1000{take}", "A"])
            tone(root / "audio" / name, 5.0, sr=8000)
    if duplicate:
        rows.append(rows[0])
    write_table(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
                rows)


def test_esc50_folds_and_held_out_split(tmp_path):
    root = tmp_path / "ESC-50-master"
    make_esc50(root)
    prepare_dataset("esc50", root, tmp_path / "out", fold=3)
    folds = {k: manifest(tmp_path / "out", "esc50", f"fold{k}") for k in range(1, 6)}
    assert [len(folds[k]) for k in range(1, 6)] == [3, 2, 3, 2, 3]
    test, train = manifest(tmp_path / "out", "esc50", "test"), manifest(tmp_path / "out", "esc50", "train")
    assert set(test) == set(folds[3]) and set(train) == set().union(*(folds[k] for k in (1, 2, 4, 5)))
    clip = test["3-10002-A-14"]
    assert (clip["label"], clip["text"], clip["target"], clip["fold"], clip["task"]) == (
        "chirping_birds", "chirping birds", 14, 3, "cls")
    assert clip["duration"] == pytest.approx(5.0) and folds[1]["1-10000-A-0"]["esc10"] is True


def test_esc50_duplicate_filename_is_named(tmp_path):
    root = tmp_path / "esc"
    make_esc50(root, duplicate=True)
    with pytest.raises(DataError, match=r"duplicate_key.*1-10000-A-0"):
        prepare_dataset("esc50", root, tmp_path / "out", ["fold1"])


# ---------------------------------------------------------------- GTZAN
def make_gtzan(root: Path, tracks: list[str], fmt: str = "wav") -> None:
    folder = root / ("genres_original" if fmt == "wav" else "genres")
    for stem in tracks:
        tone(folder / stem.split(".")[0] / f"{stem}.{fmt}", 1.0, sr=8000, fmt=fmt.upper())
    if fmt == "wav":
        (folder / "jazz" / "jazz.00054.wav").write_bytes(b"\x00" * 1000)  # corrupt, as in the Kaggle copy


def test_gtzan_split_lists_and_corrupt_file(tmp_path, caplog):
    root = tmp_path / "gtzan"
    make_gtzan(root, ["blues.00000", "blues.00001", "jazz.00053", "rock.00099", "pop.00010"])
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train_filtered.txt").write_text("blues/blues.00000.au\njazz/jazz.00053.au\njazz/jazz.00054.au\n")
    (lists / "valid_filtered.txt").write_text("pop.00010\n")
    (lists / "test_filtered.txt").write_text("blues.00001.wav\nrock/rock.00099.au\nmetal/metal.00003.au\n")
    with caplog.at_level(logging.WARNING, logger="usam.prepare"):
        summaries = {s.name: s for s in prepare_dataset("gtzan", root, tmp_path / "out", split_lists=lists)}
    train = manifest(tmp_path / "out", "gtzan", "train")
    assert sorted(train) == ["blues.00000", "jazz.00053"] and summaries["train"].skipped == 1
    assert "jazz.00054.wav" in caplog.text and "corrupt" in caplog.text
    assert train["jazz.00053"]["label"] == "jazz" and train["jazz.00053"]["duration"] == pytest.approx(1.0)
    assert sorted(manifest(tmp_path / "out", "gtzan", "test")) == ["blues.00001", "rock.00099"]
    assert summaries["test"].missing_audio == 1  # metal.00003 is listed but absent
    assert list(manifest(tmp_path / "out", "gtzan", "valid")) == ["pop.00010"]


def test_gtzan_seeded_split_is_deterministic_and_covers_all():
    opts = default_options("gtzan", seed=3)
    splits = {s: _seeded_stems(s, opts) for s in ("train", "valid", "test")}
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [800, 100, 100]
    union = set().union(*splits.values())
    assert len(union) == 1000 and union == {f"{g}.{n:05d}" for g in GENRES for n in range(100)}
    assert splits["test"] == _seeded_stems("test", default_options("gtzan", seed=3))
    assert splits["test"] != _seeded_stems("test", default_options("gtzan", seed=4))
    assert sum(s.startswith("jazz.") for s in splits["test"]) == 10


def test_gtzan_seeded_split_on_au_copy(tmp_path):
    root = tmp_path / "gtzan"
    opts = default_options("gtzan", test_count=2, valid_count=2)
    test_stems = [s for s in _seeded_stems("test", opts) if s.startswith(("blues", "rock"))]
    train_stem = next(s for s in _seeded_stems("train", opts) if s.startswith("blues"))
    make_gtzan(root, test_stems + [train_stem], fmt="au")
    summaries = {s.name: s for s in prepare_dataset("gtzan", root, tmp_path / "out", ["test", "train"], opts=opts)}
    test = manifest(tmp_path / "out", "gtzan", "test")
    assert sorted(test) == sorted(test_stems) and test[test_stems[0]]["audio"].endswith(".au")
    assert summaries["test"].missing_audio == 20 - 4 and list(manifest(tmp_path / "out", "gtzan", "train")) == [train_stem]


# ---------------------------------------------------------------- the project's manifest reader accepts the output
def test_manifests_load_with_the_project_reader(tmp_path):
    from usam.data.manifest import read_manifest

    make_librispeech(tmp_path / "ls")
    prepare_dataset("librispeech", tmp_path / "ls", tmp_path / "out", ["test-clean"], relative=True)
    entries = read_manifest(tmp_path / "out" / "librispeech" / "test-clean.jsonl", strict=True, check_files=True)
    assert [(e.key, e.task, e.duration) for e in entries] == [("1089-134686-0000", "asr", 1.0),
                                                              ("1089-134686-0001", "asr", 1.5)]
    root = tmp_path / "mc"
    make_musiccaps(root)
    tone(root / "-0Gj8-vB1q4.wav", 45.0, sr=4000)
    prepare_dataset("musiccaps", root, tmp_path / "out", ["test"], full_audio=True)
    (entry,) = read_manifest(tmp_path / "out" / "musiccaps" / "test.jsonl", strict=True, check_files=True)
    assert (entry.offset, entry.end, entry.duration, entry.task) == (30.0, 40.0, 10.0, "mc")
    assert entry.extra["aspects"] == ["low quality", "sustained strings melody"]
