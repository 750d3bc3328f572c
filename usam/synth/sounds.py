"""Procedural sound events made with numpy, with the attributes that made them and a caption from those.

Counted events (beep, chirp, noise burst, knock, bell, dog bark, clap) are laid out one after another with
silent gaps, so the number of events can be read back from the energy envelope. Continuous events (siren,
engine hum, rain) fill the clip. Loudness is the clip's peak level: loud = -3 dBFS, quiet = -22 dBFS.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from usam.synth.audio import SAMPLE_RATE, db_to_gain, fade, peak_normalise
from usam.synth.numbers import en_number

SR = SAMPLE_RATE
# label -> (singular noun, plural noun) used in captions; the label itself is the cls answer.
COUNTED = {
    "beep": ("beep", "beeps"), "chirp": ("chirp", "chirps"), "noise burst": ("noise burst", "noise bursts"),
    "knock": ("knock", "knocks"), "bell": ("bell strike", "bell strikes"), "dog bark": ("dog bark", "dog barks"),
    "clap": ("clap", "claps"),
}
CONTINUOUS = ("siren", "engine hum", "rain")
SOUND_CLASSES = tuple(COUNTED) + CONTINUOUS
PITCHED = {"beep", "chirp", "knock", "bell", "dog bark", "siren", "engine hum"}
HAS_LENGTH = {"beep", "chirp", "noise burst"}
LOUDNESS_DB = {"loud": -3.0, "quiet": -22.0}
NOISE_FLOOR_DB = -70.0  # a faint floor so no clip is digital silence


@dataclass
class SoundEvent:
    label: str
    loudness: str
    pitch: str | None = None        # "high" | "low" for pitched classes
    length: str | None = None       # "short" | "long" for classes with a length
    count: int | None = None        # number of events for counted classes
    intensity: str | None = None    # "light" | "heavy" for rain
    onsets: list[float] = field(default_factory=list)  # seconds, counted classes

    def caption(self) -> str:
        """e.g. 'three short high-pitched beeps, loud' or 'heavy rain, quiet'."""
        if self.label in COUNTED:
            singular, plural = COUNTED[self.label]
            parts = [en_number(self.count)]
            if self.length:
                parts.append(self.length)
            if self.pitch:
                parts.append(f"{self.pitch}-pitched")
            parts.append(singular if self.count == 1 else plural)
            return f"{' '.join(parts)}, {self.loudness}"
        if self.label == "rain":
            return f"{self.intensity} rain, {self.loudness}"
        return f"a {self.pitch}-pitched {self.label}, {self.loudness}"


def _t(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / SR


def _hump(n: int) -> np.ndarray:
    return np.sin(np.linspace(0.0, np.pi, n)) ** 0.5


def _event(label: str, ev: SoundEvent, rng: np.random.Generator, u: float) -> np.ndarray:
    """One event (float64, ends at zero). `u` in [0, 1) places the pitch within the class's range and is
    drawn once per clip, so the repeated events of a clip come from one source."""
    high = ev.pitch == "high"

    def pick(lo: float, hi: float) -> float:
        return lo + u * (hi - lo)
    dur = {"short": rng.uniform(0.08, 0.18), "long": rng.uniform(0.35, 0.6)}.get(ev.length, 0.0)
    if label == "beep":
        n = int(dur * SR)
        f = pick(1500, 3000) if high else pick(300, 600)
        x = np.sin(2 * np.pi * f * _t(n))
        return fade(x, int(0.005 * SR), int(0.005 * SR))
    if label == "chirp":
        n = int(dur * SR)
        f0 = pick(2000, 3000) if high else pick(400, 700)
        f1 = f0 * rng.uniform(1.5, 2.2)
        phase = 2 * np.pi * np.cumsum(np.linspace(f0, f1, n)) / SR
        return fade(np.sin(phase), int(0.005 * SR), int(0.01 * SR))
    if label == "noise burst":
        n = int(dur * SR)
        return fade(rng.standard_normal(n) * 0.3, int(0.003 * SR), int(0.02 * SR))
    if label == "knock":
        n = int(0.12 * SR)
        f = pick(500, 900) if high else pick(150, 260)
        t = _t(n)
        x = np.sin(2 * np.pi * f * t) * np.exp(-t / 0.025) + 0.3 * rng.standard_normal(n) * np.exp(-t / 0.004)
        return fade(x, 0, int(0.01 * SR))
    if label == "bell":
        n = int(0.9 * SR)
        f = pick(800, 1400) if high else pick(250, 450)
        t = _t(n)
        x = sum(a * np.sin(2 * np.pi * f * r * t) * np.exp(-t / (0.22 / r ** 0.5))
                for r, a in ((1.0, 1.0), (2.0, 0.5), (2.76, 0.4), (5.4, 0.25), (8.93, 0.1)))
        return fade(x, int(0.002 * SR), int(0.05 * SR))
    if label == "dog bark":
        n = int(rng.uniform(0.18, 0.3) * SR)
        f0 = pick(450, 650) if high else pick(180, 320)
        contour = f0 * (1.0 + 0.35 * np.sin(np.linspace(0.0, np.pi, n)))
        phase = 2 * np.pi * np.cumsum(contour) / SR
        x = sum(np.sin(k * phase) / k for k in range(1, 9)) + 0.2 * rng.standard_normal(n)
        return x * _hump(n)
    if label == "clap":
        n = int(0.12 * SR)
        t = _t(n)
        x = np.zeros(n)
        for start in (0.0, rng.uniform(0.006, 0.012), rng.uniform(0.015, 0.025)):
            s = int(start * SR)
            x[s:] += rng.standard_normal(n - s) * np.exp(-(t[: n - s]) / 0.012)
        return fade(x, 0, int(0.01 * SR))
    raise ValueError(f"unknown counted sound {label!r}")


def _continuous(ev: SoundEvent, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SR)
    t = _t(n)
    high = ev.pitch == "high"
    if ev.label == "siren":
        base = rng.uniform(900, 1200) if high else rng.uniform(400, 600)
        rate = rng.uniform(0.4, 1.5)
        freq = base * (1.25 + 0.25 * np.sin(2 * np.pi * rate * t))
        phase = 2 * np.pi * np.cumsum(freq) / SR
        x = np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)
    elif ev.label == "engine hum":
        f0 = rng.uniform(80, 120) if high else rng.uniform(30, 50)
        wobble = 1.0 + 0.02 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t)
        phase = 2 * np.pi * np.cumsum(f0 * wobble) / SR
        x = sum(np.sin(k * phase) / k for k in range(1, 12)) + 0.05 * rng.standard_normal(n)
    elif ev.label == "rain":
        # Soft low-passed hiss plus random drop clicks; heavy rain has more drops and more hiss.
        heavy = ev.intensity == "heavy"
        hiss = np.convolve(rng.standard_normal(n), np.ones(4) / 4, mode="same") * (0.4 if heavy else 0.15)
        drops = np.zeros(n)
        count = int(seconds * (300 if heavy else 60))
        drop = np.exp(-_t(int(0.004 * SR)) / 0.001) * np.sin(2 * np.pi * 3000 * _t(int(0.004 * SR)))
        for pos in rng.integers(0, max(1, n - drop.size), size=count):
            drops[pos:pos + drop.size] += drop * rng.uniform(0.2, 1.0)
        x = hiss + drops
    else:
        raise ValueError(f"unknown continuous sound {ev.label!r}")
    return fade(x, int(0.05 * SR), int(0.1 * SR))


def sample_event(rng: random.Random, cfg: dict) -> SoundEvent:
    """Draw a class and its attributes (`cfg` is the config's `sound` section)."""
    label = rng.choice(list(cfg.get("classes", SOUND_CLASSES)))
    if label not in SOUND_CLASSES:
        raise ValueError(f"sound.classes: unknown class {label!r}; known: {', '.join(SOUND_CLASSES)}")
    ev = SoundEvent(label=label, loudness=rng.choice(tuple(LOUDNESS_DB)))
    if label in PITCHED:
        ev.pitch = rng.choice(("high", "low"))
    if label in HAS_LENGTH:
        ev.length = rng.choice(("short", "long"))
    if label in COUNTED:
        ev.count = rng.randint(1, int(cfg.get("max_count", 5)))
    if label == "rain":
        ev.intensity = rng.choice(("light", "heavy"))
    return ev


def render_event(ev: SoundEvent, rng: np.random.Generator, cfg: dict) -> np.ndarray:
    """The clip for `ev` (float32, 16 kHz); fills ev.onsets for counted classes."""
    if ev.label in COUNTED:
        pieces = [np.zeros(int(rng.uniform(0.2, 0.5) * SR))]
        position = pieces[0].size
        u = float(rng.uniform())
        for i in range(ev.count):
            if i:
                gap = np.zeros(int(rng.uniform(0.25, 0.5) * SR))
                pieces.append(gap)
                position += gap.size
            event = _event(ev.label, ev, rng, u)
            ev.onsets.append(round(position / SR, 4))
            pieces.append(event)
            position += event.size
        pieces.append(np.zeros(int(rng.uniform(0.2, 0.5) * SR)))
        x = np.concatenate(pieces)
    else:
        lo, hi = cfg.get("continuous_seconds", (2.0, 5.0))
        x = _continuous(ev, rng.uniform(lo, hi), rng)
    x = peak_normalise(x, LOUDNESS_DB[ev.loudness])
    return add_noise_floor(x, rng)


def add_noise_floor(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add a faint hiss at NOISE_FLOOR_DB so no stretch of a clip is digital silence (espeak-ng pads with zeros)."""
    return (x + rng.standard_normal(x.size) * db_to_gain(NOISE_FLOOR_DB)).astype(np.float32)


def background_noise(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A noise bed for mixtures: 'rain', 'engine hum' or 'noise' (broadband hiss), peak 1."""
    if kind == "noise":
        n = int(seconds * SR)
        x = np.convolve(rng.standard_normal(n), np.ones(3) / 3, mode="same")
        return peak_normalise(fade(x, int(0.05 * SR), int(0.05 * SR)), 0.0)
    ev = SoundEvent(label=kind, loudness="loud", pitch="low", intensity="heavy" if kind == "rain" else None)
    return peak_normalise(_continuous(ev, seconds, rng), 0.0)
