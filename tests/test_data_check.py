import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from usam.cli import main


def tone(path, seconds, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), sr)


def good_manifest(tmp_path):
    tone(tmp_path / "a.wav", 1.0)
    tone(tmp_path / "b.wav", 2.0, sr=22050)
    m = tmp_path / "good.jsonl"
    m.write_text("\n".join(json.dumps(r) for r in [
        {"key": "a", "audio": "a.wav", "task": "asr", "text": "x", "duration": 1.0},
        {"key": "b", "audio": "b.wav", "task": "mc", "text": "y"},
    ]) + "\n")
    return m


def test_check_ok_exit_zero(tmp_path, capsys):
    m = good_manifest(tmp_path)
    assert main(["data", "check", str(m)]) == 0
    out = capsys.readouterr().out
    assert "2 entries ok, 0 problem(s)" in out and "usable audio: 0.001 h" in out


def test_check_reports_every_problem(tmp_path, capsys):
    good = good_manifest(tmp_path)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"\x00\x01junk" * 100)
    bad_samples = np.zeros(16000, np.float32)
    bad_samples[10] = np.inf
    sf.write(tmp_path / "inf.wav", bad_samples, 16000, subtype="FLOAT")
    tone(tmp_path / "long.wav", 4.0)
    tone(tmp_path / "full.wav", 3.0)
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    rows = [
        {"key": "e", "audio": "empty.wav", "task": "asr", "text": "x"},
        {"key": "j", "audio": "junk.wav", "task": "asr", "text": "x"},
        {"key": "i", "audio": "inf.wav", "task": "asr", "text": "x"},
        {"key": "l", "audio": "long.wav", "task": "asr", "text": "x"},
        {"key": "c", "audio": "cut.wav", "task": "asr", "text": "x"},
        {"key": "w", "audio": "a.wav", "task": "asr", "text": "x", "duration": 9.0},
        {"key": "m", "audio": "missing.wav", "task": "asr", "text": "x"},
        {"key": "t", "audio": "a.wav", "task": "karaoke", "text": "x"},
        {"key": "a", "audio": "a.wav", "task": "asr", "text": "dup of good.jsonl"},
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    code = main(["data", "check", str(good), str(bad), "--max-seconds", "3"])
    out = capsys.readouterr().out
    assert code == 1
    expected = {1: "empty_audio", 2: "not_audio", 3: "nan_inf", 4: "too_long", 5: "truncated", 6: "bad_value",
                7: "missing_file", 8: "unknown_task", 9: "duplicate_key", 10: "malformed_json"}
    lines = [l for l in out.splitlines() if l.startswith(f"{bad}:")]
    assert len(lines) == len(expected)
    for line_no, reason in expected.items():
        assert any(l.startswith(f"{bad}:{line_no}: ") and f": {reason}: " in l for l in lines), (line_no, out)
    assert "2 entries ok, 10 problem(s)" in out
    for reason in expected.values():
        assert f"  {reason}: 1" in out


def test_official_and_stats_via_subprocess(tmp_path):
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    tone(tmp_path / "a.wav", 1.5)
    m = tmp_path / "eg.data"
    m.write_text(json.dumps({"key": "k", "wav": str(tmp_path / "a.wav"), "label": "cap one\tcap two",
                             "dur": "1.5", "task": "AAC"}) + "\n")
    run = subprocess.run([sys.executable, "-m", "usam.cli", "data", "check", str(m)], capture_output=True,
                         text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 entries ok" in run.stdout
    run = subprocess.run([sys.executable, "-m", "usam.cli", "data", "stats", str(good_manifest(tmp_path)),
                          "--max-audio-seconds", "10"], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "2 clips" in run.stdout and "padding fraction, bucketed" in run.stdout
    assert "asr 0.000 h" in run.stdout and "mc 0.001 h" in run.stdout


def test_header_only_still_finds_truncated_wav_and_length(tmp_path, capsys):
    tone(tmp_path / "full.wav", 3.0)
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"key": "c", "audio": "cut.wav", "task": "asr", "text": "x"}) + "\n"
                 + json.dumps({"key": "f", "audio": "full.wav", "task": "asr", "text": "x"}) + "\n")
    assert main(["data", "check", "--header-only", "--max-seconds", "2", str(m)]) == 1
    out = capsys.readouterr().out
    assert f"{m}:1: key 'c': field 'audio': truncated: " in out
    assert f"{m}:2: key 'f': field 'audio': too_long: " in out
