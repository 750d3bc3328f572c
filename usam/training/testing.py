"""A tiny on-disk corpus (wav files + JSON Lines manifest) for tests and benchmarks of the training system."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WORDS = ("hello", "world", "dog", "barks", "music", "plays", "rain", "falls", "bird", "sings")
TASKS = ("asr", "aac", "mc")


def write_corpus(folder: str | Path, n: int, seed: int = 0, name: str = "train", min_s: float = 0.4,
                 max_s: float = 1.6, bad: int = 0, key_prefix: str = "") -> Path:
    """n clips of seeded tones and noise with short texts over three tasks; `bad` extra lines whose audio
    is broken (a non-audio file, an empty file, a NaN wav). Returns the manifest path."""
    import soundfile as sf

    folder = Path(folder)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        seconds = float(np.round(rng.uniform(min_s, max_s), 2))
        t = np.arange(int(seconds * 16000)) / 16000
        freq = float(rng.uniform(150, 1500))
        wav = (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)
        path = folder / "wav" / f"{name}_{i:04d}.wav"
        sf.write(path, wav, 16000)
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))))
        lines.append({"key": f"{key_prefix}{name}-{i:04d}", "audio": str(path), "task": TASKS[i % len(TASKS)],
                      "text": text, "duration": seconds})
    for j in range(bad):
        path = folder / "wav" / f"{name}_bad{j}.wav"
        kind = j % 3
        if kind == 0:
            path.write_bytes(b"this is not audio at all" * 10)
        elif kind == 1:
            path.write_bytes(b"")
        else:
            wav = np.zeros(8000, dtype=np.float32)
            wav[100] = np.nan
            sf.write(path, wav, 16000, subtype="FLOAT")
        lines.append({"key": f"{key_prefix}{name}-bad{j}", "audio": str(path), "task": "asr", "text": "bad",
                      "duration": 0.5})
    manifest = folder / f"{name}.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return manifest


def tiny_train_config(output_dir, train_manifest, valid_manifest=None, overrides=None):
    """The stage-1 tiny training config on a test corpus: small buckets, logs every step, no eval/saves
    unless overridden (`overrides`: {dotted key: value})."""
    from usam.training.config import load_train_config

    ov = {"output_dir": str(output_dir), "data.train": [str(train_manifest)],
          "data.valid": [str(valid_manifest)] if valid_manifest else [], "data.max_audio_seconds": 4.0,
          "logging.log_every": 1, "logging.eval_every": 0, "logging.save_every": 0, "logging.progress": False,
          "logging.tensorboard": False, "schedule.max_steps": 3, "optim.lr": 0.01}
    ov.update(overrides or {})
    return load_train_config("configs/train/stage1_tiny.yaml", ov)


def train_losses(run_dir) -> list[tuple[int, float, float]]:
    """(step, loss, lr) of every train record of a run's metrics.jsonl."""
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]
    return [(r["step"], r["loss"], r["lr"]) for r in records if r["kind"] == "train"]
