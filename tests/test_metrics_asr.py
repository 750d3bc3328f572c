"""ASR metrics against hand-computed values: corpus WER (not the mean of per-utterance WERs), CER, normalisers."""
import pytest

from usam.metrics import compute_metrics
from usam.metrics.asr import asr_metrics, text_normalizer


def test_whisper_english_normaliser_makes_equivalent_transcripts_match():
    out = asr_metrics(["mister smith's two cats"], ["Mr. Smith's 2 cats"])
    assert out["wer"] == 0.0 and out["cer"] == 0.0
    assert out["per_item"][0]["normalized_reference"] == out["per_item"][0]["normalized_prediction"]
    # Without normalisation: Mr./mister, Smith's/smith's, 2/two are 3 substitutions of 4 words.
    raw = asr_metrics(["mister smith's two cats"], ["Mr. Smith's 2 cats"], normalizer="none")
    assert raw["wer"] == pytest.approx(75.0)
    assert raw["details"]["substitutions"] == 3


def test_corpus_wer_is_total_errors_over_total_reference_words():
    refs = ["the quick brown fox jumps over the lazy dog today", "hello world", "good morning"]
    hyps = ["the quick brown fox jumped over the lazy dog today", "hello", "good good morning"]
    out = compute_metrics("asr", hyps, refs)
    # 1 substitution + 1 deletion + 1 insertion over 10 + 2 + 2 reference words.
    assert out["wer"] == pytest.approx(100 * 3 / 14)
    d = out["details"]
    assert (d["substitutions"], d["deletions"], d["insertions"], d["reference_words"]) == (1, 1, 1, 14)
    assert [p["wer"] for p in out["per_item"]] == pytest.approx([10.0, 50.0, 50.0])
    mean_of_utterances = sum(p["wer"] for p in out["per_item"]) / 3
    assert out["wer"] != pytest.approx(mean_of_utterances)


def test_cer_counts_characters_over_the_corpus():
    out = asr_metrics(["helo world", "cut"], ["hello world", "cat"], normalizer="none")
    # 1 deletion in 11 characters (the space counts) + 1 substitution in 3 characters.
    assert out["cer"] == pytest.approx(100 * 2 / 14)
    assert [p["cer"] for p in out["per_item"]] == pytest.approx([100 / 11, 100 / 3])


def test_basic_normaliser_for_other_languages():
    assert text_normalizer("basic")("¡Hola, Señor!").split() == ["hola", "señor"]
    assert asr_metrics(["hola señor"], ["¡Hola, Señor!"], normalizer="basic")["wer"] == 0.0
    assert asr_metrics(["hola senor"], ["¡Hola, Señor!"], normalizer="basic")["wer"] == pytest.approx(50.0)


def test_empty_reference_counts_insertions_but_has_no_item_rate():
    out = asr_metrics(["one", "hello there"], ["", "hello"], normalizer="none")
    assert out["per_item"][0]["wer"] is None
    assert out["details"]["insertions"] == 2
    assert out["wer"] == pytest.approx(200.0)  # 2 insertions over 1 reference word


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        asr_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unknown ASR normalizer 'klingon'"):
        asr_metrics(["a"], ["a"], normalizer="klingon")
    with pytest.raises(TypeError, match="reference 0 must be one string"):
        asr_metrics(["a"], [["a", "b"]])
    assert asr_metrics(["a b"], [["a b"]])["wer"] == 0.0  # a manifest's one-element text list is fine
