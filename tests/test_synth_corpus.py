"""End-to-end `usam synth` on the tiny config: real synthesisers, manifests, audio, determinism, reuse."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from usam.cli import main as cli_main
from usam.synth import generate_corpus, load_config, music, sounds
from usam.synth.config import DOMAINS, SPLITS
from usam.synth.grammar import vocabulary, words
from usam.tasks import TASKS

from test_synth_units import burst_count

TINY = "configs/synth/tiny.yaml"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "corpus"
    meta = generate_corpus(out, load_config(TINY), jobs=2, progress=False)
    assert meta["reused"] is False
    return out, meta


def read_lines(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def all_lines(out: Path) -> list[dict]:
    return [line for split in SPLITS for line in read_lines(out / f"{split}.jsonl")]


def folder_digest(out: Path) -> dict[str, str]:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "metadata.json")
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_manifest_lines_have_the_contract_fields(corpus):
    out, meta = corpus
    keys = set()
    for split in SPLITS:
        lines = read_lines(out / f"{split}.jsonl")
        assert lines, split
        for line in lines:
            assert isinstance(line["key"], str) and line["key"] not in keys
            keys.add(line["key"])
            assert line["task"] in TASKS and line["split"] == split and line["domain"] in DOMAINS
            assert isinstance(line["text"], str) and line["text"].strip()
            assert isinstance(line["duration"], float) and line["duration"] > 0.3
            assert not Path(line["audio"]).is_absolute() and (out / line["audio"]).is_file()
            if line["task"] == "qa":
                assert line["instruction"].strip() and line["qtype"]
            if line["task"] == "s2tt":
                assert line["lang"] == "zh"
            if line["task"] == "cls":
                assert line["label"] == line["text"] and line["label"] in meta["labels"]["cls"]
        per_task = sum(len(read_lines(p)) for p in out.glob(f"{split}.*.jsonl"))
        assert per_task == len(lines)
    tasks = {line["task"] for line in all_lines(out)}
    assert tasks == set(TASKS)


def test_audio_is_16k_mono_nonsilent_and_as_long_as_the_manifest_says(corpus):
    out, _ = corpus
    checked = set()
    for line in all_lines(out):
        if line["audio"] in checked:
            continue
        checked.add(line["audio"])
        info = sf.info(str(out / line["audio"]))
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert abs(info.frames / 16000 - line["duration"]) < 1e-3
        x, _ = sf.read(str(out / line["audio"]), dtype="float32")
        assert np.abs(x).max() > 0.05, line["audio"]
        assert np.sqrt(np.mean(x ** 2)) > 1e-3, line["audio"]


def test_labels_are_correct_by_construction(corpus):
    out, _ = corpus
    vocab = vocabulary()
    for line in all_lines(out):
        if line["task"] == "asr" and line["text_source"] == "grammar":  # everyday text: test_synth_everyday
            assert line["text"] and set(words(line["text"])) <= vocab, line["text"]
        if line["domain"] == "sound" and line["task"] == "cls" and line["label"] in sounds.COUNTED:
            x, _ = sf.read(str(out / line["audio"]), dtype="float32")
            assert burst_count(x) == line["attributes"]["count"], line["key"]
        if line["domain"] == "sound" and line["task"] == "qa":
            assert line["text"] == str(line["attributes"]["count"])
        if line["domain"] == "music":
            attrs = line["attributes"]
            lo, hi = music.TEMPO_CLASSES[attrs["tempo"]]
            assert lo <= attrs["bpm"] <= hi
            if line["task"] == "qa":
                expected = {"instrument": attrs["instrument"], "tempo": attrs["tempo"], "mode": attrs["mode"],
                            "drums": "yes" if attrs["drums"] else "no"}[line["qtype"]]
                assert line["text"] == expected
            if line["task"] == "mc":
                assert attrs["instrument"] in line["text"] and f"{attrs['bpm']} bpm" in line["text"]
        if line.get("qtype") == "speech_and_music":
            said = line["text"].split(";")[0]
            assert ("yes, there is music" in line["text"]) == line["has_music"] == (line["background"] == "music")
            assert line["text_source"] != "grammar" or set(words(said)) <= vocab


def test_held_out_voices_only_in_test(corpus):
    out, meta = corpus
    held = set(load_config(TINY)["speech"]["held_out_voices"])
    voices = {split: {l["voice"] for l in read_lines(out / f"{split}.jsonl") if "voice" in l} for split in SPLITS}
    assert voices["train"] and not voices["train"] & held
    assert not voices["valid"] & held
    assert voices["test"] & held  # the tiny test split does use unseen voices
    assert set(meta["voices"]["held_out"]) == held
    assert set(meta["voices"]["per_split"]["test"]) == voices["test"]
    engines = {v.split(":")[0] for split in SPLITS for v in voices[split]}
    assert len(engines) >= 2


def test_metadata(corpus):
    out, meta = corpus
    saved = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert saved["seed"] == 0 and saved["generator_version"]
    assert saved["labels"]["sound_classes"] == list(sounds.SOUND_CLASSES)
    assert saved["labels"]["instruments"] == list(music.INSTRUMENTS)
    assert saved["labels"]["tempo_classes"] == ["slow", "medium", "fast"] and saved["labels"]["modes"] == ["major", "minor"]
    cfg = load_config(TINY)
    for split in SPLITS:
        for domain in DOMAINS:
            assert saved["sizes"][split]["domains"][domain]["clips"] == cfg["counts"][split][domain]
    assert saved["config"] == cfg


def test_deterministic_and_independent_of_jobs(corpus, tmp_path):
    out, _ = corpus
    again = tmp_path / "again"
    generate_corpus(again, load_config(TINY), jobs=1, progress=False)
    assert folder_digest(again) == folder_digest(out)


def test_rerun_reuses_a_complete_folder_and_redoes_a_changed_one(corpus, tmp_path):
    out, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*.wav")}
    assert generate_corpus(copy, load_config(TINY), jobs=1, progress=False)["reused"] is True
    assert before == {p: p.stat().st_mtime_ns for p in copy.rglob("*.wav")}
    next(iter(before)).unlink()  # an incomplete folder is regenerated
    assert generate_corpus(copy, load_config(TINY), jobs=1, progress=False)["reused"] is False
    assert folder_digest(copy) == folder_digest(out)
    cfg = load_config(TINY)
    cfg["counts"] = {"train": {"sound": 2}, "valid": {"sound": 1}, "test": {"sound": 1}}
    meta = generate_corpus(copy, cfg, seed=1, jobs=1, progress=False)
    assert meta["reused"] is False and meta["seed"] == 1
    # the earlier run's clips were removed (what is left: these 4 and test_timbre's held-out sound timbres)
    assert len(list(copy.rglob("*.wav"))) == 4 + cfg["sound"]["test_timbre_sounds"]


def test_cli_stops_with_the_apt_line_when_a_tool_is_missing(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("espeak-ng", "flite", "text2wave", "sox"):  # everything but fluidsynth
        os.symlink(shutil.which(program), bin_dir / program)
    monkeypatch.setenv("PATH", str(bin_dir))
    rc = cli_main(["synth", "--out", str(tmp_path / "c"), "--config", TINY, "--jobs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "`fluidsynth`" in err and "apt-get install -y fluidsynth" in err
    assert not (tmp_path / "c").exists()
    monkeypatch.setenv("PATH", "")
    rc = cli_main(["synth", "--out", str(tmp_path / "c"), "--config", TINY, "--no-progress"])
    assert rc == 2 and "apt-get install -y espeak-ng" in capsys.readouterr().err


def test_cli_generates(tmp_path, capsys):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(f"base: {Path(TINY).resolve()}\ncounts:\n  train: {{speech: 1, music: 0, mix: 0, sound: 1}}\n"
                   f"  valid: {{speech: 0, music: 0, mix: 0, sound: 1}}\n  test: {{speech: 1, music: 0, mix: 0, sound: 0}}\n")
    rc = cli_main(["synth", "--out", str(tmp_path / "c"), "--config", str(cfg), "--jobs", "1", "--no-progress"])
    assert rc == 0 and "generated" in capsys.readouterr().out
    tasks = {line["task"] for line in read_lines(tmp_path / "c" / "train.jsonl")}
    assert {"asr", "s2tt", "aac", "cls"} <= tasks <= {"asr", "s2tt", "aac", "cls", "qa"}


def test_default_config_scales_to_the_requested_hours(tmp_path):
    meta = generate_corpus(tmp_path / "c", load_config(), hours=0.02, jobs=2, progress=False)
    assert 0.6 * 0.02 < meta["hours"] < 1.6 * 0.02
    assert all(meta["sizes"][split]["domains"][d]["clips"] >= 1 for split in SPLITS for d in DOMAINS)
    lines = all_lines(tmp_path / "c")
    assert {line["task"] for line in lines} == set(TASKS)
    assert meta["hours"] == pytest.approx(sum({l["clip"]: l["duration"] for l in lines}.values()) / 3600, abs=1e-3)


def test_cli_corpus_of_0_05_hours_passes_data_check(tmp_path, capsys):
    out = tmp_path / "synth"
    assert cli_main(["synth", "--out", str(out), "--hours", "0.05", "--no-progress"]) == 0
    capsys.readouterr()
    manifests = [str(out / f"{split}.jsonl") for split in SPLITS]
    assert cli_main(["data", "check", *manifests]) == 0
    report = capsys.readouterr().out
    assert ", 0 problem(s)" in report, report
