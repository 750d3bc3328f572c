"""sacreBLEU corpus BLEU: Chinese tokenisation, ragged multi-reference sets, chrF."""
import math

import pytest

from usam.metrics import compute_metrics
from usam.metrics.translation import bleu_tokenizer, reference_streams, translation_metrics


def test_chinese_bleu_counts_characters_with_tokenize_zh():
    pred, ref = "我们都很喜欢这只小猫", "我们都很喜欢那只小猫"  # 10 characters, the 7th differs
    # n-gram precisions: 9/10, 7/9, 5/8, 3/7; same length so no brevity penalty.
    expected = 100 * (9 / 10 * 7 / 9 * 5 / 8 * 3 / 7) ** 0.25
    zh = translation_metrics([pred], [ref], tokenize="zh")
    assert zh["bleu"] == pytest.approx(expected, abs=1e-6)
    assert zh["details"]["tokenize"] == "zh"
    # 13a sees one unsplit "word" per sentence, which does not match: BLEU 0.
    assert translation_metrics([pred], [ref], tokenize="13a")["bleu"] == 0.0
    # "auto" picks zh from the target language.
    assert compute_metrics("s2tt", [pred], [ref], target_lang="zh")["bleu"] == pytest.approx(expected)
    assert bleu_tokenizer("auto", "de") == "13a" and bleu_tokenizer("auto", "zh-CN") == "zh"


def test_ragged_multi_reference_uses_every_reference_of_each_item():
    preds = ["a cat was sitting on the mat", "a dog runs"]
    refs = [["the cat sat on the mat", "a cat was sitting on the mat"], ["a dog runs fast"]]
    assert reference_streams(refs) == [["the cat sat on the mat", "a dog runs fast"],
                                       ["a cat was sitting on the mat", None]]
    out = translation_metrics(preds, refs, tokenize="13a")
    # All n-grams match (item 0 equals its 2nd reference, item 1 is a prefix of its reference):
    # precisions 1; hyp 7 + 3 = 10 words, closest reference lengths 7 + 4 = 11 -> BP = exp(1 - 11/10).
    assert out["bleu"] == pytest.approx(100 * math.exp(1 - 11 / 10), abs=1e-6)
    assert out["details"]["ref_len"] == 11 and out["details"]["max_references"] == 2
    # Only the first references: item 0 no longer matches fully, so the score must drop.
    first_only = translation_metrics(preds, [r[0] for r in refs], tokenize="13a")
    assert first_only["bleu"] < out["bleu"] - 10


def test_chrf_and_identity():
    out = translation_metrics(["hello big wide world"], ["hello big wide world"])
    assert out["bleu"] == pytest.approx(100.0) and out["chrf"] == pytest.approx(100.0)
    assert "tok:13a" in out["details"]["bleu_signature"]


def test_bad_references_are_named():
    with pytest.raises(ValueError, match="reference 1 is an empty list"):
        translation_metrics(["a", "b"], [["a"], []])
    with pytest.raises(ValueError, match="reference 0 is empty"):
        translation_metrics(["a"], [""])
