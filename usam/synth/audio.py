"""Small audio helpers shared by the generators: 16 kHz mono float32 in, 16-bit PCM wav out."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from usam import SAMPLE_RATE  # noqa: F401  (the project's reference rate)


def read_mono(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A wav written by a synthesiser as float32 mono at `sample_rate` (channels averaged, resampled)."""
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (n, channels)
    mono = data.mean(axis=1)
    if sr != sample_rate:
        mono = soxr.resample(mono, sr, sample_rate).astype(np.float32)
    return mono


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def peak_normalise(x: np.ndarray, peak_dbfs: float) -> np.ndarray:
    """Scale so that max |x| is `peak_dbfs` dB below full scale (silence stays silence)."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak <= 0.0:
        return x.astype(np.float32)
    return (x * (db_to_gain(peak_dbfs) / peak)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def fade(x: np.ndarray, fade_in: int, fade_out: int) -> np.ndarray:
    """Linear fades of the given lengths in samples (avoids clicks at cut edges)."""
    y = x.astype(np.float32, copy=True)
    if fade_in > 0:
        n = min(fade_in, y.size)
        y[:n] *= np.linspace(0.0, 1.0, n, dtype=np.float32)
    if fade_out > 0:
        n = min(fade_out, y.size)
        y[y.size - n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    return y


def write_wav(path: str | Path, x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> int:
    """Write 16-bit PCM mono atomically (temporary name in the same folder, then os.replace).

    Returns the number of samples written (the manifest's duration is samples / sample_rate).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    clipped = np.clip(x, -1.0, 1.0)
    sf.write(str(tmp), clipped, sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return int(clipped.size)
