"""Speech from real synthesisers: espeak-ng (voices x variants), flite (built-in voices), festival.

A voice id is "<engine>:<voice>", e.g. "espeak-ng:en-gb+f3", "flite:slt", "festival:kal_diphone".
Speed (a factor, 1 = the engine's default rate) and pitch (semitones) vary per clip: espeak-ng takes
both natively; flite takes the speed natively; pitch shifts for flite and festival, and festival's speed,
are sox effects, as is an optional room reverb. Every engine's output goes through sox to 16 kHz mono float.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usam.synth.audio import SAMPLE_RATE, read_mono
from usam.synth.tools import run_tool

ENGINES = ("espeak-ng", "flite", "festival")
_ESPEAK_DEFAULT_WPM = 175
_ESPEAK_DEFAULT_PITCH = 50  # espeak-ng -p, 0..99


@dataclass(frozen=True)
class SpeechStyle:
    speed: float   # >1 is faster
    pitch: float   # semitones relative to the voice's own pitch
    reverb: int = 0  # sox reverberance 0..100 (0: dry)


def voice_pool(cfg: dict) -> list[str]:
    """All voice ids the config enables (`speech.voices`), in a fixed order."""
    voices = cfg["voices"]
    pool = [f"espeak-ng:{base}+{variant}" for base in voices.get("espeak-ng", {}).get("languages", [])
            for variant in voices.get("espeak-ng", {}).get("variants", [])]
    pool += [f"flite:{v}" for v in voices.get("flite", [])]
    pool += [f"festival:{v}" for v in voices.get("festival", [])]
    return pool


def engine_of(voice: str) -> str:
    engine, _, name = voice.partition(":")
    if engine not in ENGINES or not name:
        raise ValueError(f"bad voice id {voice!r}: expected '<engine>:<voice>' with engine in {ENGINES}")
    return engine


def sample_style(rng: random.Random, cfg: dict) -> SpeechStyle:
    lo, hi = cfg["speed_range"]
    plo, phi = cfg["pitch_semitones"]
    reverb = 0
    if rng.random() < float(cfg.get("reverb_probability", 0.0)):
        reverb = rng.randint(*cfg.get("reverb_range", (20, 60)))
    return SpeechStyle(speed=round(rng.uniform(lo, hi), 3), pitch=round(rng.uniform(plo, phi), 2), reverb=reverb)


def _sox_to_16k(src: Path, dst: Path, *, pitch: float = 0.0, tempo: float = 1.0, reverb: int = 0) -> np.ndarray:
    # -R: repeatable (no random dither); float output so there is no second quantisation before our wav.
    effects = []
    if abs(pitch) > 1e-3:
        effects += ["pitch", f"{pitch * 100:.0f}"]
    if abs(tempo - 1.0) > 1e-3:
        effects += ["tempo", "-s", f"{tempo:.3f}"]
    if reverb > 0:
        # A room: headroom first (the reverb adds energy), 0.3 s of silence so the tail is not cut off.
        effects += ["gain", "-6", "pad", "0", "0.3", "reverb", str(reverb)]
    run_tool(["sox", "-R", str(src), "-c", "1", "-e", "floating-point", "-b", "32", str(dst), *effects,
              "rate", "-h", str(SAMPLE_RATE)])
    return read_mono(dst)


def synthesise(voice: str, text: str, style: SpeechStyle, workdir: Path) -> np.ndarray:
    """Speak `text` with `voice`; returns float32 mono at 16 kHz."""
    engine = engine_of(voice)
    name = voice.split(":", 1)[1]
    raw, out = workdir / "tts_raw.wav", workdir / "tts_16k.wav"
    if engine == "espeak-ng":
        pitch = int(np.clip(_ESPEAK_DEFAULT_PITCH + 8 * style.pitch, 0, 99))
        wpm = int(round(_ESPEAK_DEFAULT_WPM * style.speed))
        run_tool(["espeak-ng", "-v", name, "-s", str(wpm), "-p", str(pitch), "-w", str(raw), text])
        return _sox_to_16k(raw, out, reverb=style.reverb)
    if engine == "flite":
        run_tool(["flite", "-voice", name, "--setf", f"duration_stretch={1.0 / style.speed:.3f}",
                  "-t", text, "-o", str(raw)])
        return _sox_to_16k(raw, out, pitch=style.pitch, reverb=style.reverb)
    text_file = workdir / "tts.txt"
    text_file.write_text(text + "\n", encoding="utf-8")
    run_tool(["text2wave", "-eval", f"(voice_{name})", str(text_file), "-o", str(raw)])
    return _sox_to_16k(raw, out, pitch=style.pitch, tempo=style.speed, reverb=style.reverb)
