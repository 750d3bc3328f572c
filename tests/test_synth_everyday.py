"""The everyday-English text pool, the test_general split (hand-written sentences, held-out voices) and the
held-out music timbres (test_timbre)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from usam.synth import generate_corpus, load_config, music, text
from usam.synth.clips import is_everyday
from usam.synth.config import SPLITS, SynthConfigError
from usam.synth.tools import MissingToolError

TINY = "configs/synth/tiny.yaml"


def read_lines(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("raw, expected", [
    ('"Mr. Smith paid $5 for 3 apples in 1984"',
     "Mister Smith paid five dollars for three apples in nineteen eighty four."),
    ("Dr. Jones lives on Main St. near St. Paul, etc.",
     "Doctor Jones lives on Main street near Saint Paul, et cetera."),
    ("she scored 85% on the 2nd test", "She scored eighty five percent on the second test."),
    ("it cost 2,500 dollars, e.g. a lot", "It cost two thousand five hundred dollars, for example a lot."),
    ("He said 'no' to the offer -- twice", "He said no to the offer, twice."),
    ("the dogs' bowls were well-worn", "The dogs' bowls were well worn."),
    ("Pi is about 3.14 they say", "Pi is about three point one four they say."),
    ("born in 1805, died in 2005 at No. 7", "Born in eighteen oh five, died in two thousand and five at number seven."),
])
def test_normalise_speaks_as_written(raw, expected):
    assert text.normalise(raw) == expected


@pytest.mark.parametrize("raw", [
    "Visit www.example.com for more details today", "mail me at someone@example.org please now",
    "the pH (acidity) of the soil is low", "Café au lait is very nice", "the U.S. army was there again",
    "it weighs 007 pounds in all", "I like it", " ".join(["word"] * 21), "THIS IS VERY LOUD INDEED",
    "he scored 3/4 of the points", "the code is 12345678 in all", "see section [2] for more",
    "and then... nothing at all happened",
])
def test_normalise_rejects_what_a_voice_would_not_read(raw):
    assert text.normalise(raw) is None


def test_pool_is_large_deterministic_and_excludes_the_handwritten_sentences(tmp_path, monkeypatch):
    monkeypatch.setenv("USAM_CACHE", str(tmp_path))
    text.everyday_pool.cache_clear()
    pool = text.everyday_pool()
    assert list(tmp_path.glob("everyday_pool-*.txt.gz"))  # cached
    text.everyday_pool.cache_clear()
    assert text.everyday_pool() == pool  # read back from the cache
    text.everyday_pool.cache_clear()
    stats = text.pool_stats(pool)
    assert stats["sentences"] > 25_000 and stats["distinct_words"] > 20_000, stats
    keys = [text.key(s) for s in pool]
    assert len(set(keys)) == len(keys) and keys == sorted(keys)
    for s in pool[::97]:
        assert text.normalise(s) == s and text.MIN_WORDS <= len(s.split()) <= text.MAX_WORDS
    handwritten = text.everyday_test_sentences()
    assert len(handwritten) == 200 and len({text.key(s) for s in handwritten}) == 200
    assert not {text.key(s) for s in handwritten} & set(keys)
    # A hand-written sentence that turns up in a source is dropped (exclusion after normalisation).
    monkeypatch.setattr(text, "fortune_sentences", lambda: ['"' + handwritten[5].upper().rstrip(".") + '"'])
    again = text.build_pool({text.key(s) for s in handwritten})
    assert text.key(handwritten[5]) not in {text.key(s) for s in again}
    parts = text.split_pool(pool, {"train": 0.8, "valid": 0.1, "test": 0.1})
    assert sum(map(len, parts.values())) == len(pool) and 0.07 < len(parts["test"]) / len(pool) < 0.13
    assert not set(parts["train"]) & set(parts["test"])
    assert text.split_pool(pool, {"train": 0.8, "valid": 0.1, "test": 0.1}) == parts


def test_missing_data_files_name_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(text, "WORDNET_FILES", (tmp_path / "data.noun",))
    with pytest.raises(MissingToolError, match="apt-get install -y wordnet-base"):
        text.wordnet_examples()
    monkeypatch.setattr(text, "FORTUNE_FILES", (tmp_path / "fortunes",))
    with pytest.raises(MissingToolError, match="apt-get install -y fortunes-min"):
        text.fortune_sentences()


def test_held_out_programs_config():
    rng = random.Random(0)
    held = load_config(TINY)["music"]["held_out_programs"]
    for _ in range(400):
        assert music.sample_piece(rng, {"held_out_programs": held}).program not in held
    for label, programs in music.PROGRAMS.items():
        assert len(programs) == 1 or set(programs) & set(held), label
    cfg = load_config(TINY)
    for bad in ([999], [46]):  # not a GM program of any label; harp's only program
        cfg["music"]["held_out_programs"] = bad
        with pytest.raises(SynthConfigError, match="held_out_programs"):
            from usam.synth.config import validate
            validate(cfg)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("everyday") / "corpus"
    cfg = load_config(TINY)
    cfg["counts"]["train"]["speech"] = 6
    generate_corpus(out, cfg, jobs=2, progress=False)
    return out, cfg


def test_test_general_uses_only_held_out_voices_and_handwritten_sentences(corpus):
    out, cfg = corpus
    lines = read_lines(out / "test_general.jsonl")
    assert read_lines(out / "test_general.asr.jsonl") == lines
    held = set(cfg["speech"]["held_out_voices"])
    handwritten = text.everyday_test_sentences()
    assert [l["text"] for l in lines] == handwritten[:cfg["speech"]["test_general_sentences"]]
    for line in lines:
        assert line["task"] == "asr" and line["split"] == "test_general" and line["voice"] in held
        assert line["voice_seen"] is False and (out / line["audio"]).is_file() and line["duration"] > 0.5
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["manifests"]["test_general"] == "test_general.jsonl"
    assert meta["text_pool"]["sentences"] > 25_000


def test_spoken_text_mix_and_split_separation(corpus):
    out, cfg = corpus
    parts = text.split_pool(text.everyday_pool(), cfg["splits"])
    handwritten = {text.key(s) for s in text.everyday_test_sentences()}
    sources = set()
    for split in SPLITS:
        lines = read_lines(out / f"{split}.jsonl")
        clips_with_s2tt = {l["clip"] for l in lines if l["task"] == "s2tt"}
        for line in lines:
            if line["task"] != "asr":
                continue
            sources.add(line["text_source"])
            assert text.key(line["text"]) not in handwritten
            if line["text_source"] == "everyday":
                assert line["text"] in parts[split] and line["clip"] not in clips_with_s2tt
            else:
                assert line["text_source"] == "grammar" and line["domain"] == "mix" or line["clip"] in clips_with_s2tt
    assert sources == {"everyday", "grammar"}
    assert sum(is_everyday(i, 0.7) for i in range(100)) == 70 and not is_everyday(0, 0.7)


def test_held_out_programs_only_in_test_timbre(corpus):
    out, cfg = corpus
    held = set(cfg["music"]["held_out_programs"])
    for split in SPLITS:
        for line in read_lines(out / f"{split}.jsonl"):
            if line["domain"] == "music":
                assert line["program"] not in held and line["timbre_seen"] is True
            if line.get("background") == "music":
                assert line["music"]["program"] not in held
    lines = read_lines(out / "test_timbre.jsonl")
    music_lines = [l for l in lines if l["domain"] == "music"]  # sound lines: test_synth_sound_timbre
    assert len({l["clip"] for l in music_lines}) == cfg["music"]["test_timbre_clips"]
    assert {l["task"] for l in music_lines} >= {"mc", "cls", "qa"}
    for line in music_lines:
        assert line["split"] == "test_timbre" and line["program"] in held and line["timbre_seen"] is False
        assert music.LABEL_OF_PROGRAM[line["program"]] == line["label"] == line["attributes"]["instrument"]
    per_task = sum(len(read_lines(p)) for p in out.glob("test_timbre.*.jsonl"))
    assert per_task == len(lines)
