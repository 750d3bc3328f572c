"""Question answering: exact match after normalisation, overall and per question type.

Normalisation (`normalize_answer`): the SQuAD answer normalisation (lower case, punctuation removed, the
articles a/an/the dropped, spaces collapsed), with number words turned into digits first by Whisper's
`EnglishNumberNormalizer` ("three" == "3") when `numbers=True`. An item may list several accepted answers;
it is correct when the prediction matches any of them.
"""
from __future__ import annotations

import re
import string
from functools import lru_cache
from typing import Sequence

from usam.metrics._common import check_pairs, reference_list

_PUNCT = re.compile("[" + re.escape(string.punctuation) + "]")
_ARTICLES = {"a", "an", "the"}


@lru_cache(maxsize=1)
def _number_normalizer():
    from whisper_normalizer.english import EnglishNumberNormalizer
    return EnglishNumberNormalizer()


def normalize_answer(text: str, *, numbers: bool = True) -> str:
    text = text.lower()
    if numbers:
        text = _number_normalizer()(_PUNCT.sub(" ", text))
    words = _PUNCT.sub(" ", text).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def qa_metrics(predictions: Sequence[str], references: Sequence, *, qtypes: Sequence[str] | None = None,
               numbers: bool = True) -> dict:
    """Exact match (percent) overall and per question type.

    references: the accepted answer (str) or answers (list of str) per question.
    qtypes: the question type of each item (the manifest's `qtype` field); None puts all under "all".
    """
    check_pairs("qa", predictions, references)
    if qtypes is not None and (isinstance(qtypes, str) or len(qtypes) != len(predictions)):
        raise ValueError(f"qa: qtypes must be a list with one type per prediction ({len(predictions)})")
    per_type: dict[str, dict] = {}
    per_item = []
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        answers = {normalize_answer(a, numbers=numbers) for a in reference_list("qa", i, ref)}
        guess = normalize_answer(pred, numbers=numbers)
        correct = guess in answers
        qtype = "all" if qtypes is None else str(qtypes[i])
        stats = per_type.setdefault(qtype, {"n": 0, "correct": 0})
        stats["n"] += 1
        stats["correct"] += int(correct)
        per_item.append({"correct": correct, "normalized_prediction": guess, "qtype": qtype})
    for stats in per_type.values():
        stats["exact_match"] = 100.0 * stats["correct"] / stats["n"]
    n = len(predictions)
    out = {"exact_match": 100.0 * sum(p["correct"] for p in per_item) / n, "n": n}
    if qtypes is not None:  # the per-type scores are headline numbers too (scalars, for the report table)
        out.update({f"exact_match[{t}]": per_type[t]["exact_match"] for t in sorted(per_type)})
    out["details"] = {"per_qtype": {t: per_type[t] for t in sorted(per_type)}, "numbers": numbers}
    out["per_item"] = per_item
    return out
