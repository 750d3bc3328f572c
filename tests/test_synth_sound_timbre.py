"""Held-out sound timbres: one synthesis setting per sound class that only the test_timbre split uses."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from usam.synth import generate_corpus, load_config, sounds
from usam.synth.config import SPLITS, SynthConfigError, validate

from test_synth_units import burst_count

TINY = "configs/synth/tiny.yaml"
SR = 16000
SEEDS = range(8)


# ---- acoustic measures, each of the property the class's held-out setting changes ---------------------------
def power_spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    return np.fft.rfftfreq(x.size, 1.0 / SR), np.abs(np.fft.rfft(x)) ** 2


def band_power(hz: np.ndarray, power: np.ndarray, centre: float, width: float) -> float:
    return float(power[np.abs(hz - centre) <= width * centre].sum())


def dominant_hz(x: np.ndarray, lo: float = 20.0, hi: float = 8000.0) -> float:
    hz, power = power_spectrum(x)
    band = (hz >= lo) & (hz <= hi)
    return float(hz[band][np.argmax(power[band])])


def first_event(x: np.ndarray, ev: sounds.SoundEvent) -> np.ndarray:
    """The first event of a counted clip: from its onset to where the gap before the next one starts."""
    start = int(ev.onsets[0] * SR)
    end = int(ev.onsets[1] * SR) - int(0.25 * SR) if len(ev.onsets) > 1 else x.size
    return x[start:end]


def peak_share(x, ev) -> float:
    """Share of the power within 3% of the strongest frequency: about 1 for one sine, 1/2 for a dual tone."""
    hz, power = power_spectrum(x)
    return band_power(hz, power, dominant_hz(x), 0.03) / float(power.sum())


def sweep_ratio(x, ev) -> float:
    """Dominant frequency of the last quarter of the first chirp over that of its first quarter."""
    event = first_event(x, ev)
    active = event[np.abs(event) > 0.05 * np.abs(event).max()]
    quarter = active.size // 4
    return dominant_hz(active[-quarter:]) / dominant_hz(active[:quarter])


def centroid_hz(x, ev) -> float:
    hz, power = power_spectrum(x)
    return float((hz * power).sum() / power.sum())


def ring_ratio(x, ev) -> float:
    """Energy 40-120 ms after the first knock's onset over that of its first 40 ms (how long it rings)."""
    event = first_event(x, ev).astype(np.float64)
    early, late = event[: int(0.04 * SR)], event[int(0.04 * SR): int(0.12 * SR)]
    return float((late ** 2).sum() / (early ** 2).sum())


def tierce_ratio(x, ev) -> float:
    """Power at 1.2x the strongest partial (a church bell's minor-third tierce) over the strongest's power."""
    hz, power = power_spectrum(x)
    prime = dominant_hz(x)
    return band_power(hz, power, 1.2 * prime, 0.015) / band_power(hz, power, prime, 0.015)


def flatness(x, ev) -> float:
    """Spectral flatness over 100 Hz-4 kHz: near 0 for a clean harmonic voice, higher when breath noise fills in."""
    hz, power = power_spectrum(x)
    band = power[(hz > 100) & (hz < 4000)] + 1e-20
    return float(np.exp(np.mean(np.log(band))) / np.mean(band))


def plateau_share(x, ev) -> float:
    """Share of 64 ms frames whose dominant frequency lies within 4% of the clip's lowest or highest one:
    a hi-lo siren sits on its two pitches, a wail passes through the ones in between."""
    frames = [x[i:i + 1024] * np.hanning(1024) for i in range(int(0.1 * SR), x.size - int(0.15 * SR), 512)]
    peaks = np.array([dominant_hz(np.pad(f, (0, 7168)), 300, 2000) for f in frames])
    lo, hi = peaks.min(), peaks.max()
    return float(np.mean((peaks <= lo * 1.04) | (peaks >= hi * 0.96)))


def second_harmonic_ratio(x, ev) -> float:
    """Power around 2 f0 over power around f0 (f0: the strongest frequency below 130 Hz)."""
    hz, power = power_spectrum(x)
    f0 = dominant_hz(x, 20, 130)
    return band_power(hz, power, 2 * f0, 0.05) / band_power(hz, power, f0, 0.05)


# label -> (measure, threshold, True when the held-out timbre measures above the threshold)
MEASURES = {
    "beep": (peak_share, 0.75, False),
    "chirp": (sweep_ratio, 1.0, False),
    "noise burst": (centroid_hz, 2500.0, False),
    "knock": (ring_ratio, 0.12, True),
    "bell": (tierce_ratio, 0.05, True),
    "dog bark": (flatness, 0.18, True),
    "clap": (centroid_hz, 2500.0, False),
    "siren": (plateau_share, 0.7, True),
    "engine hum": (second_harmonic_ratio, 0.05, False),
    "rain": (centroid_hz, 1400.0, False),
}


def seen_event(label: str, seed: int) -> sounds.SoundEvent:
    """An event of `label` drawn the way train draws them."""
    return sounds.sample_event(random.Random(seed), {"classes": [label], "max_count": 3})


def held_out_event(label: str, seed: int) -> sounds.SoundEvent:
    return sounds.sample_event(random.Random(seed), {"max_count": 3}, held_out_label=label)


def measure_all(label: str, make) -> list[float]:
    measure = MEASURES[label][0]
    values = []
    for seed in SEEDS:
        ev = make(label, seed)
        values.append(measure(sounds.render_event(ev, np.random.default_rng(seed), {}), ev))
    return values


# ---- unit checks ---------------------------------------------------------------------------------------------
def test_every_class_has_a_held_out_timbre_and_a_measure():
    assert set(sounds.HELD_OUT_TIMBRES) == set(sounds.SOUND_CLASSES) == set(MEASURES)
    assert len(set(sounds.HELD_OUT_TIMBRES.values())) == len(sounds.SOUND_CLASSES)


def test_usual_sampling_never_draws_a_held_out_timbre():
    cfg = load_config(TINY)["sound"]
    labels = set()
    for seed in range(3000):
        ev = sounds.sample_event(random.Random(seed), cfg)
        labels.add(ev.label)
        assert ev.timbre is None, (seed, ev)
    assert labels == set(sounds.SOUND_CLASSES)


def test_held_out_events_always_use_the_held_out_timbre_and_keep_their_attributes():
    for label in sounds.SOUND_CLASSES:
        usual = [seen_event(label, seed) for seed in range(40)]
        for seed in range(40):
            ev = held_out_event(label, seed)
            assert ev.label == label and ev.timbre == sounds.HELD_OUT_TIMBRES[label]
            assert (ev.pitch is None) == (usual[seed].pitch is None)
            assert (ev.count is None) == (usual[seed].count is None)
            assert ev.caption() == dataclasses.replace(ev, timbre=None).caption()  # the caption ignores timbre
    with pytest.raises(ValueError, match="trumpet"):
        sounds.sample_event(random.Random(0), {}, held_out_label="trumpet")


@pytest.mark.parametrize("label", sounds.SOUND_CLASSES)
def test_held_out_timbre_changes_the_intended_acoustic_property(label):
    _, threshold, held_above = MEASURES[label]
    seen, held = measure_all(label, seen_event), measure_all(label, held_out_event)
    below, above = (seen, held) if held_above else (held, seen)
    assert max(below) < threshold < min(above), (label, sorted(seen), sorted(held))


@pytest.mark.parametrize("label", sorted(sounds.COUNTED))
def test_held_out_counted_sounds_keep_count_and_loudness(label):
    rng = np.random.default_rng(3)
    for count in range(1, 6):
        for loudness in ("loud", "quiet"):
            ev = sounds.SoundEvent(label=label, loudness=loudness, count=count,
                                   pitch="low" if label in sounds.PITCHED else None,
                                   length="short" if label in sounds.HAS_LENGTH else None,
                                   timbre=sounds.HELD_OUT_TIMBRES[label])
            x = sounds.render_event(ev, rng, {})
            assert burst_count(x) == count == len(ev.onsets), (label, count, loudness)
            assert abs(20 * np.log10(np.abs(x).max()) - sounds.LOUDNESS_DB[loudness]) < 0.5


@pytest.mark.parametrize("label", ["beep", "chirp", "knock", "bell", "dog bark", "engine hum"])
def test_held_out_pitched_sounds_keep_their_pitch_class(label):
    """The caption's "high-pitched"/"low-pitched" stays true: every high event sounds higher than every low one."""
    dominant = {"high": [], "low": []}
    for seed in range(6):
        for pitch in dominant:
            ev = sounds.SoundEvent(label=label, loudness="loud", pitch=pitch, timbre=sounds.HELD_OUT_TIMBRES[label],
                                   count=1 if label in sounds.COUNTED else None,
                                   length="long" if label in sounds.HAS_LENGTH else None)
            dominant[pitch].append(dominant_hz(sounds.render_event(ev, np.random.default_rng(seed), {})))
    assert max(dominant["low"]) < min(dominant["high"]), dominant


def test_mixture_beds_use_the_usual_timbre():
    """background_noise('rain') is the usual rain: its centroid is far above the muffled rain's."""
    bed = sounds.background_noise("rain", 3.0, np.random.default_rng(0))
    assert centroid_hz(bed, None) > MEASURES["rain"][1]


# ---- config -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, message", [
    ("held_out_timbres", "beep", "sound.held_out_timbres must be a list"),
    ("held_out_timbres", True, "sound.held_out_timbres must be a list"),
    ("held_out_timbres", ["beep", "trumpet"], r"sound.held_out_timbres: unknown classes \['trumpet'\]"),
    ("test_timbre_sounds", -1, "field 'sound.test_timbre_sounds' must be an int >= 0"),
    ("test_timbre_sounds", "40", "field 'sound.test_timbre_sounds' must be an int >= 0"),
    ("test_timbre_sounds", True, "field 'sound.test_timbre_sounds' must be an int >= 0"),
])
def test_bad_config_values_name_the_field(field, value, message):
    cfg = load_config(TINY)
    cfg["sound"][field] = value
    with pytest.raises(SynthConfigError, match=message):
        validate(cfg, "tiny.yaml")


def test_held_out_classes_must_be_trained_classes(tmp_path):
    cfg = load_config(TINY)
    cfg["sound"]["classes"] = ["beep", "rain"]
    cfg["sound"]["held_out_timbres"] = ["beep", "siren"]
    with pytest.raises(SynthConfigError, match=r"sound.held_out_timbres: \['siren'\] are not in sound.classes"):
        validate(cfg)
    cfg["sound"]["held_out_timbres"] = ["rain", "beep"]
    validate(cfg)
    assert sounds.held_out_classes(cfg["sound"]) == ("beep", "rain")  # SOUND_CLASSES order
    path = tmp_path / "none.yaml"
    path.write_text(f"base: {Path(TINY).resolve()}\nsound:\n  held_out_timbres: null\n")
    assert sounds.held_out_classes(load_config(path)["sound"]) == ()


# ---- corpus -------------------------------------------------------------------------------------------------------
def sound_only_config(n_timbre: int = 12) -> dict:
    """tiny.yaml with sound clips only: no voices or soundfont needed, so a corpus takes a second."""
    cfg = load_config(TINY)
    cfg["counts"] = {split: {"speech": 0, "sound": n, "music": 0, "mix": 0}
                     for split, n in (("train", 6), ("valid", 2), ("test", 2))}
    cfg["sound"]["test_timbre_sounds"] = n_timbre
    return cfg


def read_lines(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def digest(out: Path) -> dict[str, str]:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "metadata.json")
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("sound_timbre") / "corpus"
    meta = generate_corpus(out, sound_only_config(), jobs=2, progress=False)
    return out, meta


def test_test_timbre_has_held_out_sound_clips_with_cls_lines(corpus):
    out, meta = corpus
    lines = read_lines(out / "test_timbre.jsonl")
    clips = {}
    for line in lines:
        clips.setdefault(line["clip"], []).append(line)
    assert len(clips) == 12 and meta["extra_counts"]["test_timbre"]["sound"] == 12
    order = [sounds.SOUND_CLASSES[i % 10] for i in range(12)]  # the classes in turn, by clip index
    assert [clip[0]["label"] for _, clip in sorted(clips.items())] == order
    for clip in clips.values():
        first = clip[0]
        tasks = sorted(l["task"] for l in clip)
        expected = ["aac", "cls", "qa"] if first["label"] in sounds.COUNTED else ["aac", "cls"]
        assert tasks == expected, first["clip"]
        for line in clip:
            assert line["split"] == "test_timbre" and line["domain"] == "sound" and line["timbre_seen"] is False
            assert line["attributes"]["timbre"] == sounds.HELD_OUT_TIMBRES[line["label"]]
        cls_line = next(l for l in clip if l["task"] == "cls")
        assert cls_line["text"] == cls_line["label"]
        if first["label"] in sounds.COUNTED:  # labels right by construction: the count is in the audio
            x, _ = sf.read(str(out / first["audio"]), dtype="float32")
            assert burst_count(x) == first["attributes"]["count"]
    assert read_lines(out / "test_timbre.cls.jsonl") == [l for l in lines if l["task"] == "cls"]
    assert meta["labels"]["held_out_sound_timbres"] == sounds.HELD_OUT_TIMBRES
    assert meta["manifests"]["test_timbre"] == "test_timbre.jsonl"


def test_other_splits_have_only_the_usual_timbres(corpus):
    out, _ = corpus
    for split in SPLITS:
        lines = read_lines(out / f"{split}.jsonl")
        assert lines and all(l["domain"] == "sound" for l in lines)
        for line in lines:
            assert line["timbre_seen"] is True and "timbre" not in line["attributes"], line["key"]


def test_sound_timbre_split_is_deterministic_and_configurable(corpus, tmp_path):
    out, _ = corpus
    again = tmp_path / "again"
    generate_corpus(again, sound_only_config(), jobs=1, progress=False)
    assert digest(again) == digest(out)
    cfg = sound_only_config(n_timbre=3)
    cfg["sound"]["held_out_timbres"] = ["bell"]
    meta = generate_corpus(tmp_path / "bell", cfg, jobs=1, progress=False)
    labels = {l["label"] for l in read_lines(tmp_path / "bell" / "test_timbre.jsonl")}
    assert labels == {"bell"} and meta["labels"]["held_out_sound_timbres"] == {"bell": "church bell partials"}
    cfg["sound"]["held_out_timbres"] = []
    meta = generate_corpus(tmp_path / "none", cfg, jobs=1, progress=False)
    assert "test_timbre" not in meta["manifests"] and not (tmp_path / "none" / "test_timbre.jsonl").exists()
