"""Input checks shared by the metric modules."""
from __future__ import annotations

from typing import Sequence


def check_pairs(name: str, predictions: Sequence, references: Sequence) -> None:
    """Predictions and references must be lists of the same, non-zero length."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError(f"{name}: predictions and references must be lists, not a single string")
    if len(predictions) != len(references):
        raise ValueError(f"{name}: {len(predictions)} predictions but {len(references)} references; "
                         "they must pair up one to one")
    if len(predictions) == 0:
        raise ValueError(f"{name}: no predictions to score")
    for i, p in enumerate(predictions):
        if not isinstance(p, str):
            raise TypeError(f"{name}: prediction {i} is {type(p).__name__}, expected str")


def reference_list(name: str, i: int, ref, *, allow_empty_list: bool = False) -> list[str]:
    """One item's references as a list of strings (a single string is one reference)."""
    refs = [ref] if isinstance(ref, str) else ref
    if not isinstance(refs, (list, tuple)) or not all(isinstance(r, str) for r in refs):
        raise TypeError(f"{name}: reference {i} must be a string or a list of strings, got {ref!r:.80}")
    if not refs and not allow_empty_list:
        raise ValueError(f"{name}: reference {i} is an empty list (each item needs at least one reference)")
    return list(refs)


def single_reference(name: str, i: int, ref) -> str:
    """One item's single reference: a string, or a list holding exactly one (as manifests store `text`)."""
    if isinstance(ref, (list, tuple)) and len(ref) == 1:
        ref = ref[0]
    if not isinstance(ref, str):
        raise TypeError(f"{name}: reference {i} must be one string (or a list of one string), got {ref!r:.80}")
    return ref


def unavailable(reason: str) -> dict:
    """How an optional metric whose files are missing is reported (never as 0)."""
    return {"status": "unavailable", "reason": reason}
