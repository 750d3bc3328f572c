"""Short pieces composed with pretty_midi and rendered with the fluidsynth program and a GM soundfont.

One instrument plays both the melody and the chords (so the instrument label is unambiguous), optionally
over a drum kit. Each instrument label has one or more General MIDI programs of the same instrument class
(`PROGRAMS`); the config's `music.held_out_programs` keeps some of them out of train, valid and the in-domain
test split, and `usam.synth.corpus` renders the held-out ones into a separate `test_timbre` split (unseen
timbres of seen labels). Sound events have no held-out timbres; only music does.
The fluidsynth command line is used rather than pyfluidsynth: it needs no Python binding to a shared library
and renders a .mid file offline in one call.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usam.synth.audio import SAMPLE_RATE, fade, read_mono
from usam.synth.tools import run_tool

# label -> General MIDI programs (0-based) of that instrument class; the first is the label's main program.
# GM has no second harp or clarinet, so those labels have one program (and nothing to hold out).
PROGRAMS = {
    "piano": (0, 1),             # acoustic grand, bright acoustic
    "marimba": (12, 13),         # marimba, xylophone (wooden mallet bars)
    "organ": (19, 16),           # church organ, drawbar organ
    "acoustic guitar": (24, 25), # nylon, steel
    "electric guitar": (27, 26), # clean, jazz
    "violin": (40, 110),         # violin, fiddle
    "cello": (42, 43),           # cello, contrabass (bowed low strings)
    "harp": (46,),
    "trumpet": (56, 59),         # trumpet, muted trumpet
    "saxophone": (65, 64, 66),   # alto, soprano, tenor
    "clarinet": (71,),
    "flute": (73, 72),           # flute, piccolo
}
INSTRUMENTS = {label: programs[0] for label, programs in PROGRAMS.items()}  # label -> main program
LABEL_OF_PROGRAM = {p: label for label, programs in PROGRAMS.items() for p in programs}
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
    program: int = -1  # General MIDI program; -1: the instrument's main program

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


def check_held_out(held) -> None:
    """Every held-out program belongs to a label, and every label keeps a program that is not held out."""
    unknown = [p for p in held if p not in LABEL_OF_PROGRAM]
    if unknown:
        raise ValueError(f"music.held_out_programs: {unknown} belong to no instrument label; "
                         f"known programs: {dict(PROGRAMS)}")
    emptied = [label for label, programs in PROGRAMS.items() if set(programs) <= set(held)]
    if emptied:
        raise ValueError(f"music.held_out_programs: every program of {emptied} is held out; each label "
                         f"needs one program for train")


def seen_programs(label: str, cfg: dict) -> list[int]:
    held = set(cfg.get("held_out_programs") or ())
    return [p for p in PROGRAMS[label] if p not in held]


def sample_piece(rng: random.Random, cfg: dict, *, min_seconds: float = 0.0, program: int | None = None,
                 tempi: tuple[str, ...] | None = None) -> Piece:
    """Draw the attributes (`cfg` is the config's `music` section); the piece lasts >= min_seconds.

    The program is drawn from the label's programs that are not in `music.held_out_programs`, unless
    `program` is given (then the instrument is that program's label). `tempi`: the tempo classes to draw from
    (default all)."""
    if program is None:
        instrument = rng.choice(list(cfg.get("instruments", INSTRUMENTS)))
        if instrument not in INSTRUMENTS:
            raise ValueError(f"music.instruments: unknown instrument {instrument!r}; "
                             f"known: {', '.join(INSTRUMENTS)}")
        program = rng.choice(seen_programs(instrument, cfg))
    else:
        instrument = LABEL_OF_PROGRAM[program]
    tempo = rng.choice(tuple(tempi or TEMPO_CLASSES))
    bpm = rng.randint(*TEMPO_CLASSES[tempo])
    lo, hi = cfg.get("seconds", (6.0, 10.0))
    target = max(rng.uniform(lo, hi), min_seconds)
    bars = max(1, int(np.ceil(target * bpm / 240.0)))
    return Piece(instrument=instrument, tempo=tempo, bpm=bpm, key=rng.choice(KEYS), mode=rng.choice(MODES),
                 drums=rng.random() < float(cfg.get("drums_probability", 0.5)), bars=bars, program=program)


def compose(piece: Piece, rng: random.Random):
    """The pretty_midi.PrettyMIDI of `piece`: melody in eighths/quarters, block chords per bar, drums."""
    import pretty_midi

    beat = 60.0 / piece.bpm
    tonic = KEYS.index(piece.key)
    scale = _SCALES[piece.mode]
    program = piece.program if piece.program >= 0 else INSTRUMENTS[piece.instrument]
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


def _fluidsynth(mid: Path, wav: Path, soundfont: str, sample_rate: int) -> np.ndarray:
    """A MIDI file rendered offline by the fluidsynth program -> float32 mono at `sample_rate`."""
    run_tool(["fluidsynth", "-n", "-i", "-q", "-o", "synth.dynamic-sample-loading=1", "-g", "0.6",
              "-r", str(sample_rate), "-F", str(wav), soundfont, str(mid)])
    return read_mono(wav, sample_rate)


def render(piece: Piece, rng: random.Random, soundfont: str, workdir: Path) -> np.ndarray:
    """Compose and render with fluidsynth; float32 mono 16 kHz, cut to the piece plus a short release."""
    mid, wav = workdir / "piece.mid", workdir / "piece.wav"
    compose(piece, rng).write(str(mid))
    x = _fluidsynth(mid, wav, soundfont, SAMPLE_RATE)
    keep = min(x.size, int((piece.seconds + 0.4) * SAMPLE_RATE))
    x = fade(x[:keep], 0, int(0.2 * SAMPLE_RATE))
    if not np.any(x):
        raise RuntimeError(f"fluidsynth rendered silence for {piece} with soundfont {soundfont}")
    return x


MAX_PIECES_PER_CALL = 15  # MIDI's 16 channels, the drum channel shared by every piece's kit


def render_many(pieces: list[Piece], rng: random.Random, soundfont: str, workdir: Path, sample_rate: int = 24000,
                gap: float = 1.0):
    """Several pieces in one fluidsynth call -> [(float32 mono clip at `sample_rate`, its PrettyMIDI)], in order.

    fluidsynth's start-up (loading the soundfont) is most of a short clip's rendering, so one call for up to
    MAX_PIECES_PER_CALL pieces renders each several times faster (scripts/bench_render.py prints the figures).
    Each piece's notes get their own channel (its program), the pieces play one after another with `gap` seconds
    of silence for the release, and the rendering is cut back into one clip per piece (its length plus 0.2 s of
    release, faded), each clip's notes from time 0."""
    import pretty_midi

    if not 1 <= len(pieces) <= MAX_PIECES_PER_CALL:
        raise ValueError(f"render_many: 1 to {MAX_PIECES_PER_CALL} pieces per call, got {len(pieces)}")
    song = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    scores, starts, start = [], [], 0.0
    for piece in pieces:
        score = compose(piece, rng)
        scores.append(score)
        starts.append(start)
        pitched = pretty_midi.Instrument(program=score.instruments[0].program, name=f"piece{len(starts)}")
        for instrument in score.instruments:
            notes = [pretty_midi.Note(n.velocity, n.pitch, n.start + start, n.end + start) for n in instrument.notes]
            if instrument.is_drum:
                kit = pretty_midi.Instrument(program=0, is_drum=True, name=f"drums{len(starts)}")
                kit.notes = notes
                song.instruments.append(kit)
            else:
                pitched.notes += notes
        song.instruments.append(pitched)
        start += piece.seconds + gap
    mid, wav = workdir / "pieces.mid", workdir / "pieces.wav"
    song.write(str(mid))
    audio = _fluidsynth(mid, wav, soundfont, sample_rate)
    out = []
    for piece, score, begin in zip(pieces, scores, starts):
        first = int(round(begin * sample_rate))
        clip = audio[first: first + int((piece.seconds + 0.2) * sample_rate)]
        clip = fade(np.pad(clip, (0, max(0, int((piece.seconds + 0.2) * sample_rate) - clip.size))), 0,
                    int(0.1 * sample_rate))
        if not np.any(clip):
            raise RuntimeError(f"fluidsynth rendered silence for {piece} with soundfont {soundfont}")
        out.append((clip.astype(np.float32), score))
    return out


def frame_targets(score, seconds: float, frame_rate: float) -> dict[str, np.ndarray]:
    """What a piece's score says frame by frame (frames of 1 / frame_rate s from time 0): `pitch_classes` (T, 12)
    which of the 12 pitch classes sound, `onsets` (T,) a pitched note starts in the frame, `beats` (T,) a beat
    falls in it."""
    frames = max(1, int(np.ceil(seconds * frame_rate)))
    pitch = np.zeros((frames, 12), dtype=bool)
    onsets = np.zeros(frames, dtype=bool)
    for instrument in score.instruments:
        if instrument.is_drum:
            continue
        for note in instrument.notes:
            a, b = int(note.start * frame_rate), int(np.ceil(note.end * frame_rate))
            pitch[a: min(b, frames), note.pitch % 12] = True
            if a < frames:
                onsets[a] = True
    beats = np.zeros(frames, dtype=bool)
    index = (score.get_beats() * frame_rate).astype(int)
    beats[index[index < frames]] = True
    return {"pitch_classes": pitch, "onsets": onsets, "beats": beats}
