"""Procedural sound events made with numpy, with the attributes that made them and a caption from those.

Counted events (beep, chirp, noise burst, knock, bell, dog bark, clap) are laid out one after another with
silent gaps, so the number of events can be read back from the energy envelope. Continuous events (siren,
engine hum, rain) fill the clip. Loudness is the clip's peak level: loud = -3 dBFS, quiet = -22 dBFS.

Every class also has one held-out synthesis setting (`HELD_OUT_TIMBRES`): a different timbre of the same
class, never drawn by `sample_event` for train, valid, test or mixture beds, and used only for the
`test_timbre` clips (`sample_event(..., held_out_label=...)`), so those measure recognition of unseen timbres.
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
LENGTH_S = {"short": (0.08, 0.18), "long": (0.35, 0.6)}
# label -> pitch class -> range of the fundamental (Hz) of the counted pitched classes; a clip's events share
# one place in the range (see _event). Held-out timbres keep these ranges, so captions stay right.
EVENT_PITCH_HZ = {
    "beep": {"high": (1500, 3000), "low": (300, 600)}, "chirp": {"high": (2000, 3000), "low": (400, 700)},
    "knock": {"high": (500, 900), "low": (150, 260)}, "bell": {"high": (800, 1400), "low": (250, 450)},
    "dog bark": {"high": (450, 650), "low": (180, 320)},
}
# label -> the synthesis setting held out of train, valid, test and mixture beds (only test_timbre uses it).
# Each changes the timbre and keeps the class recognisable and its caption attributes (pitch class, length,
# count, intensity) true; the comment says what differs from the usual synthesis.
HELD_OUT_TIMBRES = {
    "beep": "dual tone",                # two sines 1.4x apart (like a phone keypad), not one
    "chirp": "falling sweep",           # sweeps down over the same frequencies, not up
    "noise burst": "pink noise",        # -3 dB/octave, not white
    "knock": "hollow",                  # rings about 3x longer (a hollow door), not a dead thud
    "bell": "church bell partials",     # hum, prime, tierce, quint, nominal (0.5, 1, 1.2, 1.5, 2 x), not a bar's
    "dog bark": "hoarse",               # breath noise about as loud as the voice, not 13 dB below it
    "clap": "cupped hands",             # a resonance at 0.7-1.2 kHz, not flat (white) noise
    "siren": "hi-lo",                   # jumps between two pitches, not a sliding wail
    "engine hum": "odd harmonics",      # odd harmonics only (a hollow buzz), not all of them
    "rain": "muffled",                  # hiss low-passed at 800 Hz and 1 kHz drops (heard indoors), not 3 kHz
}
DUAL_TONE_RATIO = 1.4      # inharmonic, so the pair is not heard as one lower note
CHURCH_BELL_PARTIALS = ((0.5, 0.5), (1.0, 1.0), (1.2, 0.6), (1.5, 0.35), (2.0, 0.45), (2.5, 0.2), (3.0, 0.12))


@dataclass
class SoundEvent:
    label: str
    loudness: str
    pitch: str | None = None        # "high" | "low" for pitched classes
    length: str | None = None       # "short" | "long" for classes with a length
    count: int | None = None        # number of events for counted classes
    intensity: str | None = None    # "light" | "heavy" for rain
    timbre: str | None = None       # None: the usual synthesis; else HELD_OUT_TIMBRES[label] (test_timbre only)
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


def _filtered(x: np.ndarray, gain_of_hz) -> np.ndarray:
    """`x` with its spectrum multiplied by gain_of_hz(frequencies in Hz): a zero-phase filter in one FFT."""
    hz = np.fft.rfftfreq(x.size, 1.0 / SR)
    return np.fft.irfft(np.fft.rfft(x) * gain_of_hz(hz), x.size)


def _pink(hz: np.ndarray) -> np.ndarray:
    return 1.0 / np.sqrt(np.maximum(hz, 20.0))


def _low_pass_800(hz: np.ndarray) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + (hz / 800.0) ** 4)  # second-order Butterworth magnitude


def _cupped_hands(centre_hz: float):
    """The air pocket of cupped hands: a resonance about half an octave wide, over a faint flat floor."""
    def gain(hz: np.ndarray) -> np.ndarray:
        return 0.05 + np.exp(-0.5 * (np.log2(np.maximum(hz, 1.0) / centre_hz) / 0.4) ** 2)
    return gain


def _pitch_hz(label: str, ev: SoundEvent, u: float) -> float:
    lo, hi = EVENT_PITCH_HZ[label]["high" if ev.pitch == "high" else "low"]
    return lo + u * (hi - lo)


def _bark(ev: SoundEvent, rng: np.random.Generator, u: float, noise: float) -> np.ndarray:
    n = int(rng.uniform(0.18, 0.3) * SR)
    f0 = _pitch_hz("dog bark", ev, u)
    contour = f0 * (1.0 + 0.35 * np.sin(np.linspace(0.0, np.pi, n)))
    phase = 2 * np.pi * np.cumsum(contour) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 9)) + noise * rng.standard_normal(n)
    return x * _hump(n)


def _clap(rng: np.random.Generator) -> np.ndarray:
    """Three white-noise bursts a few ms apart (the hands meeting unevenly), not yet faded."""
    n = int(0.12 * SR)
    t = _t(n)
    x = np.zeros(n)
    for start in (0.0, rng.uniform(0.006, 0.012), rng.uniform(0.015, 0.025)):
        s = int(start * SR)
        x[s:] += rng.standard_normal(n - s) * np.exp(-(t[: n - s]) / 0.012)
    return x


def _event(label: str, ev: SoundEvent, rng: np.random.Generator, u: float) -> np.ndarray:
    """One event (float64, ends at zero). `u` in [0, 1) places the pitch within the class's range and is
    drawn once per clip, so the repeated events of a clip come from one source."""
    if ev.timbre is not None:
        return _held_out_event(label, ev, rng, u)
    # draws both lengths, as it always has, so the usual clips keep their random stream (same files per seed)
    dur = {name: rng.uniform(lo, hi) for name, (lo, hi) in LENGTH_S.items()}.get(ev.length, 0.0)
    if label == "beep":
        n = int(dur * SR)
        f = _pitch_hz(label, ev, u)
        x = np.sin(2 * np.pi * f * _t(n))
        return fade(x, int(0.005 * SR), int(0.005 * SR))
    if label == "chirp":
        n = int(dur * SR)
        f0 = _pitch_hz(label, ev, u)
        f1 = f0 * rng.uniform(1.5, 2.2)
        phase = 2 * np.pi * np.cumsum(np.linspace(f0, f1, n)) / SR
        return fade(np.sin(phase), int(0.005 * SR), int(0.01 * SR))
    if label == "noise burst":
        n = int(dur * SR)
        return fade(rng.standard_normal(n) * 0.3, int(0.003 * SR), int(0.02 * SR))
    if label == "knock":
        n = int(0.12 * SR)
        f = _pitch_hz(label, ev, u)
        t = _t(n)
        x = np.sin(2 * np.pi * f * t) * np.exp(-t / 0.025) + 0.3 * rng.standard_normal(n) * np.exp(-t / 0.004)
        return fade(x, 0, int(0.01 * SR))
    if label == "bell":
        n = int(0.9 * SR)
        f = _pitch_hz(label, ev, u)
        t = _t(n)
        x = sum(a * np.sin(2 * np.pi * f * r * t) * np.exp(-t / (0.22 / r ** 0.5))
                for r, a in ((1.0, 1.0), (2.0, 0.5), (2.76, 0.4), (5.4, 0.25), (8.93, 0.1)))
        return fade(x, int(0.002 * SR), int(0.05 * SR))
    if label == "dog bark":
        return _bark(ev, rng, u, noise=0.2)
    if label == "clap":
        return fade(_clap(rng), 0, int(0.01 * SR))
    raise ValueError(f"unknown counted sound {label!r}")


def _held_out_event(label: str, ev: SoundEvent, rng: np.random.Generator, u: float) -> np.ndarray:
    """One event with the class's held-out timbre (HELD_OUT_TIMBRES); pitch ranges and lengths as usual."""
    n = int(rng.uniform(*LENGTH_S[ev.length]) * SR) if ev.length else 0
    if label == "beep":
        f, t = _pitch_hz(label, ev, u), _t(n)
        x = 0.5 * (np.sin(2 * np.pi * f * t) + np.sin(2 * np.pi * DUAL_TONE_RATIO * f * t))
        return fade(x, int(0.005 * SR), int(0.005 * SR))
    if label == "chirp":
        f0 = _pitch_hz(label, ev, u)
        phase = 2 * np.pi * np.cumsum(np.linspace(f0 * rng.uniform(1.5, 2.2), f0, n)) / SR
        return fade(np.sin(phase), int(0.005 * SR), int(0.01 * SR))
    if label == "noise burst":
        x = _filtered(rng.standard_normal(n), _pink)
        return fade(x * (0.3 / max(float(np.std(x)), 1e-12)), int(0.003 * SR), int(0.02 * SR))
    if label == "knock":
        f, t = _pitch_hz(label, ev, u), _t(int(0.2 * SR))
        x = np.sin(2 * np.pi * f * t) * np.exp(-t / 0.07) + 0.3 * rng.standard_normal(t.size) * np.exp(-t / 0.004)
        return fade(x, 0, int(0.01 * SR))
    if label == "bell":
        f, t = _pitch_hz(label, ev, u), _t(int(0.9 * SR))
        x = sum(a * np.sin(2 * np.pi * f * r * t) * np.exp(-t / (0.22 / max(r, 1.0) ** 0.5))
                for r, a in CHURCH_BELL_PARTIALS)
        return fade(x, int(0.002 * SR), int(0.05 * SR))
    if label == "dog bark":
        return _bark(ev, rng, u, noise=0.9)
    if label == "clap":
        return fade(_filtered(_clap(rng), _cupped_hands(700.0 + u * 500.0)), 0, int(0.01 * SR))
    raise ValueError(f"unknown counted sound {label!r}")


def _siren_tone(phase: np.ndarray) -> np.ndarray:
    return np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)


def _siren(ev: SoundEvent, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(900, 1200) if ev.pitch == "high" else rng.uniform(400, 600)
    if ev.timbre is None:  # a wail sliding between base and 1.5 base
        sweep = np.sin(2 * np.pi * rng.uniform(0.4, 1.5) * t)
    else:  # hi-lo: holds each of the two pitches 0.3-0.6 s, with a 10 ms glide between them
        sweep = np.tanh(20.0 * np.sin(2 * np.pi * rng.uniform(0.8, 1.5) * t))
    freq = base * (1.25 + 0.25 * sweep)
    return _siren_tone(2 * np.pi * np.cumsum(freq) / SR)


def _engine(ev: SoundEvent, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f0 = rng.uniform(80, 120) if ev.pitch == "high" else rng.uniform(30, 50)
    wobble = 1.0 + 0.02 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t)
    phase = 2 * np.pi * np.cumsum(f0 * wobble) / SR
    harmonics = range(1, 12) if ev.timbre is None else range(1, 22, 2)  # held out: odd ones up to the same ~2.5 kHz
    return sum(np.sin(k * phase) / k for k in harmonics) + 0.05 * rng.standard_normal(t.size)


def _rain(ev: SoundEvent, seconds: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Soft low-passed hiss plus random drop clicks; heavy rain has more drops and more hiss. Muffled (held
    out): darker hiss and lower drops, as through a window."""
    heavy, muffled = ev.intensity == "heavy", ev.timbre is not None
    noise = rng.standard_normal(n)
    hiss = _filtered(noise, _low_pass_800) if muffled else np.convolve(noise, np.ones(4) / 4, mode="same")
    hiss = hiss * (0.4 if heavy else 0.15)
    drops = np.zeros(n)
    count = int(seconds * (300 if heavy else 60))
    drop_t = _t(int(0.004 * SR))
    drop = np.exp(-drop_t / 0.001) * np.sin(2 * np.pi * (1000 if muffled else 3000) * drop_t)
    for pos in rng.integers(0, max(1, n - drop.size), size=count):
        drops[pos:pos + drop.size] += drop * rng.uniform(0.2, 1.0)
    return hiss + drops


def _continuous(ev: SoundEvent, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SR)
    if ev.label == "siren":
        x = _siren(ev, _t(n), rng)
    elif ev.label == "engine hum":
        x = _engine(ev, _t(n), rng)
    elif ev.label == "rain":
        x = _rain(ev, seconds, n, rng)
    else:
        raise ValueError(f"unknown continuous sound {ev.label!r}")
    return fade(x, int(0.05 * SR), int(0.1 * SR))


def check_held_out_timbres(chosen, trained=SOUND_CLASSES) -> None:
    """`sound.held_out_timbres` is a list of known classes that train also has (`trained`: `sound.classes`)."""
    if not isinstance(chosen, (list, tuple)):
        raise ValueError(f"sound.held_out_timbres must be a list of sound classes (or [] for none), got {chosen!r}")
    unknown = [c for c in chosen if c not in HELD_OUT_TIMBRES]
    if unknown:
        raise ValueError(f"sound.held_out_timbres: unknown classes {unknown}; known: {', '.join(SOUND_CLASSES)}")
    untrained = [c for c in chosen if c not in trained]
    if untrained:
        raise ValueError(f"sound.held_out_timbres: {untrained} are not in sound.classes, so test_timbre would "
                         f"score labels train never has")


def held_out_classes(cfg: dict) -> tuple[str, ...]:
    """The classes whose held-out timbre test_timbre renders (`cfg` is the `sound` section), in SOUND_CLASSES
    order; test_timbre cycles through them by clip index."""
    chosen = cfg.get("held_out_timbres")
    chosen = [] if chosen is None else chosen
    check_held_out_timbres(chosen, cfg.get("classes", SOUND_CLASSES))
    return tuple(c for c in SOUND_CLASSES if c in chosen)


def sample_event(rng: random.Random, cfg: dict, *, held_out_label: str | None = None) -> SoundEvent:
    """Draw a class and its attributes (`cfg` is the config's `sound` section), always with the usual
    synthesis; with `held_out_label`, an event of that class made with its held-out timbre (test_timbre)."""
    if held_out_label is None:
        label = rng.choice(list(cfg.get("classes", SOUND_CLASSES)))
        if label not in SOUND_CLASSES:
            raise ValueError(f"sound.classes: unknown class {label!r}; known: {', '.join(SOUND_CLASSES)}")
    elif held_out_label in HELD_OUT_TIMBRES:
        label = held_out_label
    else:
        raise ValueError(f"no held-out timbre for sound class {held_out_label!r}")
    ev = SoundEvent(label=label, loudness=rng.choice(tuple(LOUDNESS_DB)),
                    timbre=None if held_out_label is None else HELD_OUT_TIMBRES[label])
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
