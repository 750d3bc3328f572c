"""Classification accuracy for a generative model: each generated text is mapped onto the label set first.

Mapping rule (`map_to_label`), applied to normalised text (lower case; "_" and "-" and other punctuation
become spaces; the articles a/an/the are dropped; spaces collapsed):
1. exact: the text equals a label (or one of its aliases);
2. contains: a label occurs in the text as whole words ("a dog is barking" -> "dog"); if several do,
   the longest label wins (it is the most specific: "hip hop" before "hop"), ties by label order;
3. similar: else the label whose string similarity to the text is highest, if that similarity reaches
   `min_similarity` (RapidFuzz `fuzz.ratio`, the normalised Indel similarity in [0, 100], divided by 100;
   RapidFuzz already comes with jiwer). Ties go to the first label in the label set's order;
4. otherwise the answer maps to no label: it counts as wrong and in `unmapped_rate`.
"""
from __future__ import annotations

import re
import string
from typing import Mapping, Sequence

from usam.metrics._common import check_pairs, single_reference

UNMAPPED = "<unmapped>"
_PUNCT = re.compile("[" + re.escape(string.punctuation) + "]")
_ARTICLES = {"a", "an", "the"}


def normalize_label(text: str) -> str:
    """Lower case, punctuation (incl. _ and -) to spaces, articles dropped, spaces collapsed."""
    words = _PUNCT.sub(" ", text.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def _label_forms(labels: Sequence[str], aliases: Mapping[str, Sequence[str]] | None) -> list[tuple[str, str]]:
    """(normalised form, label) pairs in label order, checking that no two labels collide."""
    aliases = aliases or {}
    unknown = [a for a in aliases if a not in labels]
    if unknown:
        raise ValueError(f"cls: aliases given for labels not in the label set: {unknown}")
    forms: list[tuple[str, str]] = []
    owner: dict[str, str] = {}
    for label in labels:
        for text in (label, *aliases.get(label, ())):
            form = normalize_label(text)
            if not form:
                raise ValueError(f"cls: label or alias {text!r} is empty after normalisation")
            if owner.get(form, label) != label:
                raise ValueError(f"cls: labels {owner[form]!r} and {label!r} both normalise to {form!r}")
            if form not in owner:
                owner[form] = label
                forms.append((form, label))
    return forms


def map_to_label(text: str, labels: Sequence[str], *, min_similarity: float = 0.6,
                 aliases: Mapping[str, Sequence[str]] | None = None,
                 _forms: list[tuple[str, str]] | None = None) -> tuple[str | None, str, float]:
    """(label or None, rule used, similarity) for one generated text; see the module docstring."""
    from rapidfuzz import fuzz

    forms = _forms if _forms is not None else _label_forms(labels, aliases)
    norm = normalize_label(text)
    for form, label in forms:
        if norm == form:
            return label, "exact", 1.0
    padded = f" {norm} "
    contained = [(form, label) for form, label in forms if f" {form} " in padded]
    if contained:
        best = max(len(f) for f, _ in contained)
        return next(label for form, label in contained if len(form) == best), "contains", 1.0
    best_label, best_sim = None, -1.0
    for form, label in forms:
        sim = fuzz.ratio(norm, form) / 100.0
        if sim > best_sim:
            best_label, best_sim = label, sim
    if best_sim >= min_similarity:
        return best_label, "similar", best_sim
    return None, "unmapped", max(best_sim, 0.0)


def classification_metrics(predictions: Sequence[str], references: Sequence[str], *,
                           labels: Sequence[str] | None = None, min_similarity: float = 0.6,
                           aliases: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Accuracy and unmapped rate (percent), per-class accuracy and confusion counts.

    labels: the label set (default: the distinct references, sorted). Each reference must be a label
    (compared after normalisation). aliases: {label: [other spellings]} accepted as exact matches.
    """
    check_pairs("cls", predictions, references)
    references = [single_reference("cls", i, r) for i, r in enumerate(references)]
    if labels is None:
        labels = sorted({r for r in references if isinstance(r, str)})
    labels = list(labels)
    if not labels or not all(isinstance(l, str) for l in labels):
        raise ValueError("cls: the label set must be a non-empty list of strings")
    if not 0.0 <= min_similarity <= 1.0:
        raise ValueError(f"cls: min_similarity must be in [0, 1], got {min_similarity}")
    forms = _label_forms(labels, aliases)
    by_form = {form: label for form, label in forms}

    per_class = {label: {"n": 0, "correct": 0} for label in labels}
    confusion: dict[str, dict[str, int]] = {label: {} for label in labels}
    rules = {"exact": 0, "contains": 0, "similar": 0, "unmapped": 0}
    per_item = []
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        if normalize_label(ref) not in by_form:
            raise ValueError(f"cls: reference {i} ({ref!r}) is not in the label set")
        ref_label = by_form[normalize_label(ref)]
        mapped, rule, sim = map_to_label(pred, labels, min_similarity=min_similarity, _forms=forms)
        correct = mapped == ref_label
        rules[rule] += 1
        per_class[ref_label]["n"] += 1
        per_class[ref_label]["correct"] += int(correct)
        row = confusion[ref_label]
        row[mapped or UNMAPPED] = row.get(mapped or UNMAPPED, 0) + 1
        per_item.append({"mapped_label": mapped, "rule": rule, "similarity": sim, "correct": correct})

    n = len(predictions)
    for stats in per_class.values():
        stats["accuracy"] = 100.0 * stats["correct"] / stats["n"] if stats["n"] else None
    seen = [s["accuracy"] for s in per_class.values() if s["n"]]
    return {
        "accuracy": 100.0 * sum(p["correct"] for p in per_item) / n,
        "balanced_accuracy": sum(seen) / len(seen),
        "unmapped_rate": 100.0 * rules["unmapped"] / n,
        "n": n,
        "details": {"per_class": per_class, "confusion": {k: v for k, v in confusion.items() if v},
                    "mapping_rules": rules, "min_similarity": min_similarity, "labels": labels},
        "per_item": per_item,
    }
