"""One clip per call, for each domain: its audio and the manifest lines (tasks) it yields.

A maker returns (audio float32 16 kHz, lines, info); each line holds the task fields plus a key suffix,
`info` holds the attributes shared by all its lines. `usam.synth.corpus` adds keys, paths and durations.

Spoken text: a share `speech.everyday_fraction` of the spoken clips of each split and domain reads an everyday
sentence from the text pool (`usam.synth.text`, split by hash so a test sentence is never a train sentence),
the rest a grammar sentence; only grammar sentences have a Chinese translation, so only they get s2tt lines.
Which clips are everyday is stratified by clip index (exact shares even for a few clips, and clip 0 of each
split is always a grammar sentence, so every split with speech has s2tt lines). `EXTRA_MAKERS` render the
two generalisation splits: `test_general` (the hand-written sentences, held-out voices only, asr) and
`test_timbre` (music with the held-out General MIDI programs, and sound events made with their class's
held-out synthesis setting, `sounds.HELD_OUT_TIMBRES`).
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from usam.synth import music, sounds, speech
from usam.synth.audio import peak_normalise, rms
from usam.synth.grammar import sample_sentence
from usam.synth.questions import question, speech_and_music_answer

SPEECH_PEAK_DB = (-6.0, -1.0)


@dataclass(frozen=True)
class Context:
    cfg: dict
    soundfont: str | None
    seen_voices: tuple[str, ...]      # voices of train and valid (and part of test)
    held_out_voices: tuple[str, ...]  # test only
    everyday: dict | None = None      # split -> everyday sentences of that split (None: grammar only)
    general: tuple[str, ...] = ()     # the hand-written test_general sentences


@dataclass(frozen=True)
class Spoken:
    en: str
    zh: str | None      # None: no translation (everyday sentences)
    template: int | None
    source: str         # grammar | everyday | handwritten


def is_everyday(index: int, fraction: float) -> bool:
    """Clip `index` reads an everyday sentence: floor((i + 1) f) > floor(i f), so any first n clips hold
    round-down(n f) or so of them, and clip 0 is a grammar sentence whenever f < 1."""
    return int((index + 1) * fraction + 1e-9) > int(index * fraction + 1e-9)


def choose_text(split: str, rng: random.Random, ctx: Context, index: int = 0) -> Spoken:
    fraction = float(ctx.cfg["speech"].get("everyday_fraction", 0.0))
    if ctx.everyday and is_everyday(index, fraction) and ctx.everyday.get(split):
        return Spoken(en=rng.choice(ctx.everyday[split]), zh=None, template=None, source="everyday")
    sentence = sample_sentence(rng)
    return Spoken(en=sentence.en, zh=sentence.zh, template=sentence.template, source="grammar")


def _weighted_voice(voices: tuple[str, ...], rng: random.Random, weights: dict) -> str:
    """An engine by `speech.engine_weights` (among engines present), then one of its voices uniformly:
    espeak-ng has far more voices than flite or festival, so a uniform draw over voices would starve those."""
    engines = sorted({speech.engine_of(v) for v in voices})
    engine = rng.choices(engines, weights=[float(weights.get(e, 1.0)) for e in engines])[0]
    return rng.choice([v for v in voices if speech.engine_of(v) == engine])


def pick_voice(split: str, rng: random.Random, ctx: Context) -> str:
    weights = ctx.cfg["speech"].get("engine_weights", {})
    if split == "test" and ctx.held_out_voices and rng.random() < float(ctx.cfg["speech"]["test_unseen_fraction"]):
        return _weighted_voice(ctx.held_out_voices, rng, weights)
    return _weighted_voice(ctx.seen_voices, rng, weights)


def _spoken(split, rng, nrng, ctx, workdir, *, sentence: Spoken | None = None, voice: str | None = None,
            index: int = 0):
    sentence = choose_text(split, rng, ctx, index) if sentence is None else sentence
    voice = pick_voice(split, rng, ctx) if voice is None else voice
    style = speech.sample_style(rng, ctx.cfg["speech"])
    audio = speech.synthesise(voice, sentence.en, style, workdir)
    info = {"voice": voice, "voice_seen": voice not in ctx.held_out_voices, "speed": style.speed,
            "pitch": style.pitch, "reverb": style.reverb, "text_source": sentence.source}
    if sentence.template is not None:
        info["template"] = sentence.template
    return sentence, audio, info


def speech_clip(split, rng, nrng, ctx: Context, workdir: Path, *, sentence=None, voice=None, index: int = 0):
    sentence, audio, info = _spoken(split, rng, nrng, ctx, workdir, sentence=sentence, voice=voice, index=index)
    audio = sounds.add_noise_floor(peak_normalise(audio, rng.uniform(*SPEECH_PEAK_DB)), nrng)
    lines = [{"suffix": "asr", "task": "asr", "text": sentence.en}]
    if sentence.zh is not None:
        for lang in ctx.cfg["speech"].get("s2tt_langs", ["zh"]):
            lines.append({"suffix": f"s2tt-{lang}", "task": "s2tt", "text": sentence.zh, "lang": lang,
                          "source_text": sentence.en})
    return audio, lines, info


def general_clip(split, rng, nrng, ctx: Context, workdir: Path, index: int):
    """test_general: hand-written sentence `index`, spoken by a held-out voice (asr only)."""
    sentence = Spoken(en=ctx.general[index], zh=None, template=None, source="handwritten")
    voice = _weighted_voice(ctx.held_out_voices, rng, ctx.cfg["speech"].get("engine_weights", {}))
    return speech_clip(split, rng, nrng, ctx, workdir, sentence=sentence, voice=voice)


def sound_clip(split, rng, nrng, ctx: Context, workdir: Path, *, held_out_label: str | None = None):
    cfg = ctx.cfg["sound"]
    event = sounds.sample_event(rng, cfg, held_out_label=held_out_label)
    audio = sounds.render_event(event, nrng, cfg)
    info = {"label": event.label, "attributes": {k: v for k, v in asdict(event).items() if v not in (None, [])},
            "timbre_seen": event.timbre is None}
    lines = [{"suffix": "aac", "task": "aac", "text": event.caption()},
             {"suffix": "cls", "task": "cls", "text": event.label}]
    if event.count is not None and cfg.get("qa_count", True):
        lines.append({"suffix": "qa-count", "task": "qa", "qtype": "count",
                      "instruction": question("count", rng), "text": str(event.count)})
    return audio, lines, info


def music_clip(split, rng, nrng, ctx: Context, workdir: Path, *, program: int | None = None):
    cfg = ctx.cfg["music"]
    piece = music.sample_piece(rng, cfg, program=program)
    audio = peak_normalise(music.render(piece, rng, ctx.soundfont, workdir), rng.uniform(-6.0, -1.0))
    audio = sounds.add_noise_floor(audio, nrng)
    info = {"label": piece.instrument, "attributes": asdict(piece), "program": piece.program,
            "timbre_seen": piece.program not in set(cfg.get("held_out_programs") or ())}
    answers = {"instrument": piece.instrument, "tempo": piece.tempo, "mode": piece.mode,
               "drums": "yes" if piece.drums else "no"}
    lines = [{"suffix": "mc", "task": "mc", "text": piece.caption()},
             {"suffix": "cls", "task": "cls", "text": piece.instrument}]
    qtypes = list(cfg.get("qa_types", answers))
    for qtype in rng.sample(qtypes, min(int(cfg.get("qa_per_clip", 2)), len(qtypes))):
        lines.append({"suffix": f"qa-{qtype}", "task": "qa", "qtype": qtype,
                      "instruction": question(qtype, rng), "text": answers[qtype]})
    return audio, lines, info


def mix_clip(split, rng, nrng, ctx: Context, workdir: Path, *, index: int = 0):
    cfg = ctx.cfg["mix"]
    sentence, voice_audio, info = _spoken(split, rng, nrng, ctx, workdir, index=index)
    lead, tail = int(rng.uniform(0.3, 0.8) * 16000), int(rng.uniform(0.3, 0.8) * 16000)
    total = lead + voice_audio.size + tail
    has_music = rng.random() < float(cfg.get("music_probability", 0.5))
    if has_music:
        piece = music.sample_piece(rng, ctx.cfg["music"], min_seconds=total / 16000)
        background = music.render(piece, rng, ctx.soundfont, workdir)
        info["background"] = "music"
        info["music"] = asdict(piece)
    else:
        kind = rng.choice(list(cfg.get("noise_kinds", ["rain", "engine hum", "noise"])))
        background = sounds.background_noise(kind, total / 16000 + 0.1, nrng)
        info["background"] = kind
    background = np.resize(background, total)  # repeats a short bed (never needed for music by construction)
    snr = rng.uniform(*cfg["snr_db"])
    voice_part = np.zeros(total, dtype=np.float32)
    voice_part[lead:lead + voice_audio.size] = voice_audio
    gain = rms(voice_audio) / max(rms(background), 1e-9) / (10.0 ** (snr / 20.0))
    audio = sounds.add_noise_floor(peak_normalise(voice_part + gain * background, rng.uniform(-3.0, -1.0)), nrng)
    info["snr_db"] = round(snr, 2)
    info["has_music"] = has_music
    lines = [{"suffix": "asr", "task": "asr", "text": sentence.en},
             {"suffix": "qa-speech_and_music", "task": "qa", "qtype": "speech_and_music",
              "instruction": question("speech_and_music", rng),
              "text": speech_and_music_answer(sentence.en, has_music)},
             {"suffix": "qa-background", "task": "qa", "qtype": "background",
              "instruction": question("background", rng), "text": info["background"]}]
    return audio, lines, info


def music_timbre_clip(split, rng, nrng, ctx: Context, workdir: Path, index: int):
    """test_timbre: a music clip with held-out program number `index` (cycling through them)."""
    held = sorted(ctx.cfg["music"].get("held_out_programs") or ())
    return music_clip(split, rng, nrng, ctx, workdir, program=held[index % len(held)])


def sound_timbre_clip(split, rng, nrng, ctx: Context, workdir: Path, index: int):
    """test_timbre: a sound event of held-out class number `index` (cycling through `sound.held_out_timbres`,
    so the classes get equal shares) made with that class's held-out synthesis setting."""
    classes = sounds.held_out_classes(ctx.cfg["sound"])
    return sound_clip(split, rng, nrng, ctx, workdir, held_out_label=classes[index % len(classes)])


MAKERS = {"speech": speech_clip, "sound": sound_clip, "music": music_clip, "mix": mix_clip}
SPOKEN_DOMAINS = ("speech", "mix")  # their makers take the clip index (index=) for the text mix
# split -> domain -> maker taking the clip index too
EXTRA_MAKERS = {"test_general": {"speech": general_clip},
                "test_timbre": {"sound": sound_timbre_clip, "music": music_timbre_clip}}
