"""Short pieces composed with pretty_midi and rendered with the fluidsynth program and a GM soundfont.

One instrument plays both the melody and the chords (so the instrument label is unambiguous), optionally
over a drum kit. The fluidsynth command line is used rather than pyfluidsynth: it needs no Python binding
to a shared library and renders a .mid file offline in one call.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usam.synth.audio import SAMPLE_RATE, fade, read_mono
from usam.synth.tools import run_tool

# label -> General MIDI program (0-based)
INSTRUMENTS = {
    "piano": 0, "marimba": 12, "organ": 19, "acoustic guitar": 24, "electric guitar": 27, "violin": 40,
    "cello": 42, "harp": 46, "trumpet": 56, "saxophone": 65, "clarinet": 71, "flute": 73,
}
TEMPO_CLASSES = {"slow": (60, 80), "medium": (95, 120), "fast": (135, 170)}  # bpm, inclusive; gaps avoid ties
MODES = ("major", "minor")
KEYS = ("C", "C sharp", "D", "E flat", "E", "F", "F sharp", "G", "A flat", "A", "B flat", "B")
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Chord progressions as scale degrees (0-based), one chord per bar.
_PROGRESSIONS = ((0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 3), (0, 3, 0, 4))
_MELODY_RANGE = {"cello": 48, "trumpet": 60, "saxophone": 60, "clarinet": 60}  # lowest melody MIDI note


@dataclass
class Piece:
    instrument: str
    tempo: str        # slow | medium | fast
    bpm: int
    key: str
    mode: str
    drums: bool
    bars: int

    @property
    def seconds(self) -> float:
        return self.bars * 4 * 60.0 / self.bpm

    def caption(self) -> str:
        """e.g. 'a fast piano piece in D minor at 150 bpm, with drums'."""
        drums = "with drums" if self.drums else "without drums"
        return f"a {self.tempo} {self.instrument} piece in {self.key} {self.mode} at {self.bpm} bpm, {drums}"


def tempo_class(bpm: float) -> str:
    for name, (lo, hi) in TEMPO_CLASSES.items():
        if lo <= bpm <= hi:
            return name
    raise ValueError(f"{bpm} bpm is in no tempo class {TEMPO_CLASSES}")


def sample_piece(rng: random.Random, cfg: dict, *, min_seconds: float = 0.0) -> Piece:
    """Draw the attributes (`cfg` is the config's `music` section); the piece lasts >= min_seconds."""
    instrument = rng.choice(list(cfg.get("instruments", INSTRUMENTS)))
    if instrument not in INSTRUMENTS:
        raise ValueError(f"music.instruments: unknown instrument {instrument!r}; known: {', '.join(INSTRUMENTS)}")
    tempo = rng.choice(tuple(TEMPO_CLASSES))
    bpm = rng.randint(*TEMPO_CLASSES[tempo])
    lo, hi = cfg.get("seconds", (6.0, 10.0))
    target = max(rng.uniform(lo, hi), min_seconds)
    bars = max(1, int(np.ceil(target * bpm / 240.0)))
    return Piece(instrument=instrument, tempo=tempo, bpm=bpm, key=rng.choice(KEYS), mode=rng.choice(MODES),
                 drums=rng.random() < float(cfg.get("drums_probability", 0.5)), bars=bars)


def compose(piece: Piece, rng: random.Random):
    """The pretty_midi.PrettyMIDI of `piece`: melody in eighths/quarters, block chords per bar, drums."""
    import pretty_midi

    beat = 60.0 / piece.bpm
    tonic = KEYS.index(piece.key)
    scale = _SCALES[piece.mode]
    program = INSTRUMENTS[piece.instrument]
    pm = pretty_midi.PrettyMIDI(initial_tempo=float(piece.bpm))
    melody = pretty_midi.Instrument(program=program, name="melody")
    chords = pretty_midi.Instrument(program=program, name="chords")
    low = _MELODY_RANGE.get(piece.instrument, 60) + tonic
    scale_notes = [low + 12 * octave + step for octave in range(2) for step in scale]  # two octaves
    progression = _PROGRESSIONS[rng.randrange(len(_PROGRESSIONS))]
    position = rng.randrange(len(scale_notes) // 2)
    for bar in range(piece.bars):
        start = bar * 4 * beat
        degree = progression[bar % len(progression)]
        root = 48 + tonic if piece.instrument != "cello" else 36 + tonic
        for third in range(3):  # triad on the scale degree
            step = degree + 2 * third
            pitch = root + scale[step % 7] + 12 * (step // 7)
            chords.notes.append(pretty_midi.Note(velocity=60, pitch=pitch, start=start, end=start + 4 * beat * 0.95))
        t = 0.0
        while t < 4.0 - 1e-6:
            length = rng.choice((0.5, 1.0, 1.0)) if 4.0 - t >= 1.0 else 0.5
            position = int(np.clip(position + rng.choice((-2, -1, -1, 0, 1, 1, 2)), 0, len(scale_notes) - 1))
            note_start = start + t * beat
            melody.notes.append(pretty_midi.Note(velocity=rng.randint(80, 105), pitch=scale_notes[position],
                                                 start=note_start, end=note_start + length * beat * 0.9))
            t += length
    pm.instruments += [melody, chords]
    if piece.drums:
        kit = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
        for bar in range(piece.bars):
            for eighth in range(8):
                t = (bar * 4 + eighth / 2) * beat
                hits = [42]  # closed hi-hat on every eighth
                if eighth in (0, 4):
                    hits.append(36)  # kick on beats 1 and 3
                if eighth in (2, 6):
                    hits.append(38)  # snare on beats 2 and 4
                for drum in hits:
                    kit.notes.append(pretty_midi.Note(velocity=90, pitch=drum, start=t, end=t + 0.1))
        pm.instruments.append(kit)
    return pm


def render(piece: Piece, rng: random.Random, soundfont: str, workdir: Path) -> np.ndarray:
    """Compose and render with fluidsynth; float32 mono 16 kHz, cut to the piece plus a short release."""
    mid, wav = workdir / "piece.mid", workdir / "piece.wav"
    compose(piece, rng).write(str(mid))
    run_tool(["fluidsynth", "-n", "-i", "-q", "-o", "synth.dynamic-sample-loading=1", "-g", "0.6",
              "-r", str(SAMPLE_RATE), "-F", str(wav), soundfont, str(mid)])
    x = read_mono(wav)
    keep = min(x.size, int((piece.seconds + 0.4) * SAMPLE_RATE))
    x = fade(x[:keep], 0, int(0.2 * SAMPLE_RATE))
    if not np.any(x):
        raise RuntimeError(f"fluidsynth rendered silence for {piece} with soundfont {soundfont}")
    return x
