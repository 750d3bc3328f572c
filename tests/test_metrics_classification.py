"""Classification: mapping generated text onto the label set, accuracy, unmapped rate, per-class tables."""
import pytest

from usam.metrics import compute_metrics
from usam.metrics.classification import classification_metrics, map_to_label, normalize_label

LABELS = ["dog", "crying_baby", "door_wood_knock", "hip hop", "rock"]


def test_normalisation_and_mapping_rules():
    assert normalize_label("The Crying_Baby!") == "crying baby"
    assert map_to_label("Crying baby.", LABELS) == ("crying_baby", "exact", 1.0)
    assert map_to_label("It is a dog barking", LABELS)[:2] == ("dog", "contains")
    # Two labels contained: the longer (more specific) one wins.
    assert map_to_label("hip hop with rock guitars", LABELS)[:2] == ("hip hop", "contains")
    label, rule, sim = map_to_label("door wod knok", LABELS)  # misspelt: closest label by similarity
    assert (label, rule) == ("door_wood_knock", "similar") and 0.6 <= sim < 1.0
    assert map_to_label("a violin solo", LABELS)[:2] == (None, "unmapped")
    assert map_to_label("hiphop", LABELS, aliases={"hip hop": ["hiphop"]})[:2] == ("hip hop", "exact")


def test_accuracy_unmapped_rate_and_per_class_counts():
    preds = ["Dog.", "a dog is barking", "crying babby", "the sound of a violin", "rock", "Rock music"]
    refs = ["dog", "dog", "crying_baby", "crying_baby", "hip hop", "rock"]
    out = compute_metrics("cls", preds, refs, labels=LABELS)
    # Correct: 0, 1, 2 (similar), 5 (contains); 3 maps to nothing; 4 maps to the wrong label.
    assert out["accuracy"] == pytest.approx(100 * 4 / 6)
    assert out["unmapped_rate"] == pytest.approx(100 * 1 / 6)
    d = out["details"]
    assert d["per_class"]["dog"] == {"n": 2, "correct": 2, "accuracy": 100.0}
    assert d["per_class"]["crying_baby"]["accuracy"] == pytest.approx(50.0)
    assert d["per_class"]["door_wood_knock"] == {"n": 0, "correct": 0, "accuracy": None}
    assert d["confusion"]["crying_baby"] == {"crying_baby": 1, "<unmapped>": 1}
    assert d["confusion"]["hip hop"] == {"rock": 1}
    assert d["mapping_rules"] == {"exact": 2, "contains": 2, "similar": 1, "unmapped": 1}
    # Balanced accuracy: mean over the classes that occur (dog 100, crying_baby 50, hip hop 0, rock 100).
    assert out["balanced_accuracy"] == pytest.approx(62.5)
    assert [p["correct"] for p in out["per_item"]] == [True, True, True, False, False, True]


def test_default_label_set_is_the_references_and_bad_input_is_named():
    out = classification_metrics(["cat", "dgo"], [["cat"], "dog"])
    assert out["accuracy"] == 100.0 and out["details"]["labels"] == ["cat", "dog"]
    with pytest.raises(ValueError, match=r"reference 0 \('cow'\) is not in the label set"):
        classification_metrics(["cow"], ["cow"], labels=["dog"])
    with pytest.raises(ValueError, match="both normalise to 'hip hop'"):
        classification_metrics(["x"], ["hip-hop"], labels=["hip-hop", "hip hop"])
    with pytest.raises(TypeError, match="no option"):
        compute_metrics("cls", ["x"], ["x"], label_set=["x"])
