"""Unit checks of the synthetic corpus parts: numbers, grammar, sound events, music, config, tool lookup."""
from __future__ import annotations

import random
import re

import numpy as np
import pytest

from usam.synth import grammar, music, sounds
from usam.synth.config import SynthConfigError, clip_counts, load_config
from usam.synth.numbers import clock_times, en_number, en_ordinal, years, zh_count, zh_number
from usam.synth.tools import MissingToolError, check_tools

TINY = "configs/synth/tiny.yaml"
_ZH_VALUE = {c: i for i, c in enumerate("零一二三四五六七八九")}
_ZH_VALUE["两"] = 2


def parse_zh(text: str) -> int:
    """An independent reader of Chinese numerals below 1000 (checks zh_number by round trip)."""
    total, digit = 0, 0
    for ch in text:
        if ch == "百":
            total += digit * 100
            digit = 0
        elif ch == "十":
            total += (digit or 1) * 10
            digit = 0
        else:
            digit = _ZH_VALUE[ch]
    return total + digit


_EN_VALUE = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                        "thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_EN_VALUE.update({w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split())
                  if w != "_"})


def parse_en(text: str) -> int:
    total = 0
    for word in text.split():
        if word == "hundred":
            total *= 100
        elif word != "and":
            total += _EN_VALUE[word]
    return total


def english_numbers(text: str) -> list[int]:
    """Values of the runs of number words in an English sentence."""
    runs, current = [], []
    for word in grammar.words(text) + ["."]:
        if word in _EN_VALUE or word == "hundred" or (word == "and" and current and current[-1] == "hundred"):
            current.append(word)
        elif current:
            runs.append(parse_en(" ".join(current)))
            current = []
    return runs


def burst_count(x: np.ndarray, sr: int = 16000) -> int:
    """Number of energy bursts: 10 ms RMS frames above -20 dB of the loudest frame; gaps < 80 ms merge."""
    frames = x[: x.size // 160 * 160].reshape(-1, 160)
    level = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))
    active = level > 0.1 * level.max()
    bursts, silent_run, inside = 0, 99, False
    for on in active:
        if on:
            if not inside and silent_run >= 8:
                bursts += 1
            inside, silent_run = True, 0
        else:
            inside = False
            silent_run += 1
    return bursts


def test_numbers_round_trip():
    for n in range(0, 1000):
        assert parse_zh(zh_number(n)) == n, (n, zh_number(n))
        assert parse_en(en_number(n)) == n, (n, en_number(n))
    assert zh_number(12) == "十二" and zh_number(105) == "一百零五" and zh_number(110) == "一百一十"
    assert zh_count(2) == "两" and zh_count(22) == "二十二"
    assert en_number(42) == "forty two" and en_number(105) == "one hundred and five"
    assert [en_ordinal(n) for n in (1, 2, 3, 12, 20, 21, 28)] == [
        "first", "second", "third", "twelfth", "twentieth", "twenty first", "twenty eighth"]
    assert ("half past seven", "七点半") in clock_times() and ("two o'clock", "两点") in clock_times()
    assert ("nineteen eighty five", "一九八五") in years()


def test_grammar_breadth_and_parallel_sentences():
    vocab = grammar.vocabulary()
    assert len(vocab) >= 600
    rng = random.Random(7)
    seen_templates = set()
    for _ in range(3000):
        s = grammar.sample_sentence(rng)
        seen_templates.add(s.template)
        assert s.en[0].isupper() and s.en[-1] in ".?"
        assert set(grammar.words(s.en)) <= vocab
        assert s.zh[-1] in "。？" and not re.search(r"[A-Za-z0-9]", s.zh), s.zh  # fully translated
        # Every number said in English appears with the same value in the Chinese sentence (clock times,
        # years, dates and floors are read differently and are covered by test_numbers_round_trip).
        if re.search(r"{(clock|year|date|floor)}", grammar.TEMPLATES[s.template][0]):
            continue
        zh_numbers = [parse_zh(m) for m in re.findall(r"[零一二三四五六七八九十百两]+", s.zh)]
        for value in english_numbers(s.en):
            assert value in zh_numbers, (s.en, s.zh)
    assert len(seen_templates) == len(grammar.TEMPLATES)


@pytest.mark.parametrize("label", sorted(sounds.COUNTED))
def test_counted_sounds_have_that_many_bursts(label):
    rng = np.random.default_rng(3)
    for count in range(1, 6):
        for loudness in ("loud", "quiet"):
            ev = sounds.SoundEvent(label=label, loudness=loudness, count=count,
                                   pitch="high" if label in sounds.PITCHED else None,
                                   length="long" if label in sounds.HAS_LENGTH else None)
            x = sounds.render_event(ev, rng, {})
            assert burst_count(x) == count, (label, count, loudness)
            assert len(ev.onsets) == count
            peak_db = 20 * np.log10(np.abs(x).max())
            assert abs(peak_db - sounds.LOUDNESS_DB[loudness]) < 0.5


def test_sound_captions_and_attributes():
    ev = sounds.SoundEvent(label="beep", loudness="loud", pitch="high", length="short", count=3)
    assert ev.caption() == "three short high-pitched beeps, loud"
    assert sounds.SoundEvent(label="rain", loudness="quiet", intensity="heavy").caption() == "heavy rain, quiet"
    rng = random.Random(0)
    for _ in range(200):
        ev = sounds.sample_event(rng, {"max_count": 5})
        assert ev.label in sounds.SOUND_CLASSES
        assert (ev.count is not None) == (ev.label in sounds.COUNTED)
        assert (ev.pitch is not None) == (ev.label in sounds.PITCHED)
    # The engine hum of the "low" pitch class has a lower fundamental than the "high" one.
    nrng = np.random.default_rng(0)
    spectra = {}
    for pitch in ("low", "high"):
        x = sounds.render_event(sounds.SoundEvent(label="engine hum", loudness="loud", pitch=pitch), nrng, {})
        spec = np.abs(np.fft.rfft(x[:32000]))
        spectra[pitch] = np.argmax(spec[:400]) / 2.0  # Hz (0.5 Hz bins)
    assert spectra["low"] < 55 < 75 < spectra["high"]


def test_music_attributes_are_in_the_midi():
    rng = random.Random(5)
    for _ in range(30):
        piece = music.sample_piece(rng, {"seconds": (3.0, 6.0)})
        lo, hi = music.TEMPO_CLASSES[piece.tempo]
        assert lo <= piece.bpm <= hi and music.tempo_class(piece.bpm) == piece.tempo
        pm = music.compose(piece, random.Random(1))
        _, tempi = pm.get_tempo_changes()
        assert abs(float(tempi[0]) - piece.bpm) < 1e-6
        tonal = [i for i in pm.instruments if not i.is_drum]
        assert {i.program for i in tonal} == {piece.program} and piece.program in music.PROGRAMS[piece.instrument]
        assert any(i.is_drum for i in pm.instruments) == piece.drums
        tonic = music.KEYS.index(piece.key)
        scale = {(tonic + step) % 12 for step in music._SCALES[piece.mode]}
        pitch_classes = {n.pitch % 12 for i in tonal for n in i.notes}
        assert pitch_classes <= scale
        assert pm.get_end_time() == pytest.approx(piece.seconds, abs=0.2)
        assert piece.caption().startswith(f"a {piece.tempo} {piece.instrument} piece in {piece.key} {piece.mode}")


def test_config_loading_and_scaling(tmp_path):
    cfg = load_config(TINY)
    assert cfg["counts"]["train"]["speech"] == 3 and cfg["music"]["seconds"] == [2.0, 3.0]
    assert cfg["speech"]["voices"]["flite"]  # inherited from default.yaml
    counts = clip_counts(cfg, hours=2.0)
    seconds = sum(counts[s][d] * cfg["mean_seconds"][d] for s in counts for d in counts[s])
    assert seconds == pytest.approx(2 * 3600, rel=0.02)
    assert counts["train"]["music"] > counts["test"]["music"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: %s\ndomains: {speech: -1}\n" % (tmp_path.parent / "x.yaml"))
    with pytest.raises(SynthConfigError, match="does not exist"):
        load_config(bad)
    bad.write_text(f"base: {load_config.__globals__['DEFAULT_CONFIG']}\ndomains: {{speech: -1}}\n")
    with pytest.raises(SynthConfigError, match=r"bad.yaml: field 'domains.speech'"):
        load_config(bad)


def test_check_tools_names_the_missing_program(monkeypatch):
    import usam.synth.tools as tools

    monkeypatch.setattr(tools, "which", lambda p: None if p == "flite" else f"/usr/bin/{p}")
    with pytest.raises(MissingToolError, match=r"`flite`.*apt-get install -y flite"):
        check_tools(["espeak-ng", "flite", "sox"])
    with pytest.raises(MissingToolError, match=r"apt-get install -y festival"):
        monkeypatch.setattr(tools, "which", lambda p: None)
        check_tools(["text2wave"])
    with pytest.raises(MissingToolError, match=r"apt-get install -y fluid-soundfont-gm"):
        check_tools([], soundfont="/nonexistent/gm.sf2")


def test_every_voice_of_the_pool_sounds_different(tmp_path):
    """A voice id the synthesiser silently ignores (e.g. a variant after "en-gb") would duplicate another."""
    import hashlib

    from usam.synth import speech

    cfg = load_config(TINY)["speech"]
    style = speech.SpeechStyle(speed=1.0, pitch=0.0)
    digests = {}
    for voice in speech.voice_pool(cfg):
        if voice.startswith("festival:"):
            continue  # 0.5 s each; festival's two voices are different packages
        audio = speech.synthesise(voice, "Hello there.", style, tmp_path)
        assert np.abs(audio).max() > 0.01, voice
        digests.setdefault(hashlib.sha256(audio.tobytes()).hexdigest(), []).append(voice)
    duplicates = [v for v in digests.values() if len(v) > 1]
    assert not duplicates


def test_sound_eval_config_makes_a_sound_only_test_set_of_hundreds():
    cfg = load_config("configs/synth/sound_eval.yaml")
    counts = clip_counts(cfg, cfg["hours"])
    assert cfg["sound"]["test_timbre_sounds"] == 400 and cfg["seed"] != load_config("configs/synth/demo.yaml")["seed"]
    assert counts["test"]["sound"] >= 350 and not any(counts["test"].get(d) for d in ("speech", "music", "mix"))
