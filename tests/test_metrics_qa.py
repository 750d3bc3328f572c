"""QA exact match after normalisation, overall and per question type."""
import pytest

from usam.metrics import compute_metrics
from usam.metrics.qa import normalize_answer


def test_normalisation():
    assert normalize_answer("The Three dogs!") == "3 dogs"
    assert normalize_answer("3 dogs") == "3 dogs"
    assert normalize_answer("Yes.") == "yes"


def test_exact_match_overall_and_per_qtype():
    preds = ["Yes.", "no", "Three", "a piano", "guitar", "4"]
    refs = ["yes", "yes", "3", ["piano", "grand piano"], "violin", ["four", "4 people"]]
    qtypes = ["yesno", "yesno", "count", "instrument", "instrument", "count"]
    out = compute_metrics("qa", preds, refs, qtypes=qtypes)
    assert out["exact_match"] == pytest.approx(100 * 4 / 6)
    assert out["exact_match[yesno]"] == pytest.approx(50.0)
    assert out["exact_match[count]"] == pytest.approx(100.0)
    assert out["exact_match[instrument]"] == pytest.approx(50.0)
    assert out["details"]["per_qtype"]["count"] == {"n": 2, "correct": 2, "exact_match": 100.0}
    assert [p["correct"] for p in out["per_item"]] == [True, False, True, True, False, True]
    # Without the number normaliser "Three" and "3" differ.
    assert compute_metrics("qa", ["Three"], ["3"], numbers=False)["exact_match"] == 0.0


def test_bad_qtypes_are_named():
    with pytest.raises(ValueError, match="one type per prediction"):
        compute_metrics("qa", ["a", "b"], ["a", "b"], qtypes=["x"])
