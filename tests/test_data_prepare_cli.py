"""The preparation command line: `scripts/prepare_data.py` and `usam prepare`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from usam.cli import main as usam_main
from usam.prepare import DATASETS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_data.py"


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_script_help_lists_every_dataset_and_option():
    top = run_script("--help")
    assert top.returncode == 0
    for name in DATASETS:
        assert name in top.stdout
    for name, options in [("gtzan", ["--split-lists", "--seed", "--valid-count", "--test-count"]),
                          ("audiocaps", ["--audio-dir", "--audio-pattern"]), ("esc50", ["--fold"]),
                          ("covost2", ["--tgt-lang", "--cv-dir"]), ("musiccaps", ["--full-audio"])]:
        sub = run_script(name, "--help")
        assert sub.returncode == 0
        for option in ["--root", "--out", "--splits", "--keep-missing", "--relative", "--workers"] + options:
            assert option in sub.stdout, (name, option)


def test_script_wrong_root_names_the_missing_file(tmp_path):
    result = run_script("esc50", "--root", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert str(tmp_path / "meta" / "esc50.csv") in result.stderr and "missing_file" in result.stderr
    result = run_script("librispeech", "--root", str(tmp_path / "absent"), "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and str(tmp_path / "absent") in result.stderr


def test_usam_prepare_writes_manifests_and_prints_counts(tmp_path, capsys):
    root = tmp_path / "clotho"
    (root / "validation").mkdir(parents=True)
    sf.write(str(root / "validation" / "a.wav"), np.zeros(32000), 16000)
    (root / "clotho_captions_validation.csv").write_text(
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
        "a.wav,one,two,three,four,five\nb.wav,1,2,3,4,5\n")
    assert usam_main(["prepare", "clotho", "--root", str(root), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "clotho/validation: 1 clips" in printed and "1 missing audio" in printed and "in total" in printed
    rows = [json.loads(x) for x in (tmp_path / "out" / "clotho" / "validation.jsonl").read_text().splitlines()]
    assert rows == [{"key": "a", "audio": str(root / "validation" / "a.wav"), "task": "aac",
                     "text": ["one", "two", "three", "four", "five"], "duration": 2.0}]


def test_unknown_split_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        usam_main(["prepare", "clotho", "--root", str(tmp_path), "--out", str(tmp_path), "--splits", "test"])
    assert "invalid choice" in capsys.readouterr().err


def test_manifest_is_world_readable_and_leaves_no_temp_file(tmp_path):
    root = tmp_path / "clotho"
    (root / "clotho_captions_validation.csv").parent.mkdir(parents=True)
    (root / "clotho_captions_validation.csv").write_text(
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\na.wav,1,2,3,4,5\n")
    assert usam_main(["prepare", "clotho", "--root", str(root), "--out", str(tmp_path / "out"), "--quiet",
                      "--keep-missing"]) == 0
    out_dir = tmp_path / "out" / "clotho"
    assert sorted(p.name for p in out_dir.iterdir()) == ["info.json", "validation.jsonl"]
    assert (out_dir / "validation.jsonl").stat().st_mode & 0o777 == 0o644
