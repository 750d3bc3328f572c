"""The metric dispatcher and the per-task scoring of a mixed test set (the synthetic corpus)."""
import json

import pytest

from usam.metrics import compute_metrics, compute_metrics_per_task, metric_name, metric_options


def test_names_resolve_and_unknown_ones_are_named():
    assert metric_name("asr") == "wer" and metric_name("mc") == "captioning" and metric_name("bleu") == "bleu"
    assert "tokenize" in metric_options("s2tt") and "labels" in metric_options("accuracy")
    with pytest.raises(ValueError, match="unknown task or metric 'mos'"):
        compute_metrics("mos", ["a"], ["a"])


def test_mixed_tasks_are_scored_each_with_its_own_metric():
    tasks = ["asr", "cls", "asr", "s2tt", "qa", "qa", "s2tt", "aac"]
    preds = ["hello world", "dog", "good morning", "我们都很喜欢这只小猫", "yes", "two", "Guten Morgen allerseits",
             "a dog barks loudly"]
    refs = ["Hello world!", "dog", "good evening", "我们都很喜欢那只小猫", "yes", "3", "Guten Morgen allerseits",
            ["a dog barks loudly", "a dog is barking"]]
    fields = {"qtype": [None, None, None, None, "yesno", "count", None, None],
              "lang": [None, None, None, "zh", None, None, "de", None]}
    out = compute_metrics_per_task(tasks, preds, refs, item_fields=fields, options={"aac": {"fense": "off"}})
    res = out["tasks"]
    assert set(res) == {"asr", "cls", "s2tt:zh", "s2tt:de", "qa", "aac"}
    assert res["asr"]["wer"] == pytest.approx(25.0) and res["asr"]["n"] == 2  # 1 substitution in 4 words
    assert res["cls"]["accuracy"] == 100.0
    assert res["s2tt:zh"]["details"]["tokenize"] == "zh"
    assert res["s2tt:zh"]["bleu"] == pytest.approx(100 * (9 / 10 * 7 / 9 * 5 / 8 * 3 / 7) ** 0.25)
    assert res["s2tt:de"]["details"]["tokenize"] == "13a"
    assert res["qa"]["exact_match"] == 50.0 and res["qa"]["exact_match[yesno]"] == 100.0
    assert res["aac"]["n"] == 1 and "cider_d" in res["aac"]
    # Per-item results come back in the input order, and everything is JSON-serialisable.
    assert out["per_item"][2]["wer"] == pytest.approx(50.0)
    assert out["per_item"][5]["correct"] is False and out["per_item"][3] is None
    json.dumps(out)


def test_mixed_input_errors_are_named():
    with pytest.raises(ValueError, match="item 1 has unknown task 'ocr'"):
        compute_metrics_per_task(["asr", "ocr"], ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="item field 'qtype' has 1 values, expected 2"):
        compute_metrics_per_task(["qa", "qa"], ["a", "b"], ["a", "b"], item_fields={"qtype": ["x"]})


def test_copy_fidelity_scores_answers_against_what_the_tokens_spell():
    from usam.metrics import copy_fidelity

    # the empty spelling has no score and is left out; the other two: one word of five wrong
    assert copy_fidelity("asr", ["the cat sat", "a dog", "x"], ["the cat sat", "a fog", ""]) == 20.0
    assert copy_fidelity("cls", ["dog", "cat"], ["dog", "bird"]) == 50.0
    assert copy_fidelity("asr", ["a"], [" "]) is None
