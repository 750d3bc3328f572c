"""ASR metrics: corpus WER and CER with jiwer, after a text normaliser.

Corpus WER = (substitutions + deletions + insertions) / reference words, summed over the whole test set
(never the mean of per-utterance WERs, which over-weights short utterances). CER is the same over characters
(jiwer counts the space between words as a character).

Normalisers (`normalizer=`):
- "english" (default): the Whisper English text normaliser, from the `whisper-normalizer` package. It ships
  the British->American spelling table (english.json) and needs only pure-Python packages (regex, text2num),
  no torch. transformers also has `EnglishTextNormalizer`, but it needs that spelling table passed in, and
  transformers only gets it from a Whisper tokenizer's `normalizer.json` on the model hub.
- "basic": Whisper's language-independent `BasicTextNormalizer` (lowercase, drop bracketed text, symbols and
  punctuation, collapse spaces) for non-English references.
- "none": compare the texts as given (only surrounding spaces are stripped).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence

from usam.metrics._common import check_pairs, single_reference

NORMALIZERS = ("english", "basic", "none")


@lru_cache(maxsize=None)
def text_normalizer(kind: str = "english") -> Callable[[str], str]:
    """The normalising function applied to both hypotheses and references."""
    if kind == "english":
        from whisper_normalizer.english import EnglishTextNormalizer
        return EnglishTextNormalizer()
    if kind == "basic":
        from whisper_normalizer.basic import BasicTextNormalizer
        return BasicTextNormalizer()
    if kind == "none":
        return str.strip
    raise ValueError(f"unknown ASR normalizer {kind!r}; known: {', '.join(NORMALIZERS)}")


def _clean(text: str) -> str:
    return " ".join(text.split())


def _item_counts(alignment) -> dict[str, int]:
    """Substitutions, deletions, insertions and hits of one utterance from jiwer's alignment chunks."""
    counts = {"substitute": 0, "delete": 0, "insert": 0, "equal": 0}
    for chunk in alignment:
        if chunk.type == "insert":
            counts["insert"] += chunk.hyp_end_idx - chunk.hyp_start_idx
        else:
            counts[chunk.type] += chunk.ref_end_idx - chunk.ref_start_idx
    return counts


def asr_metrics(predictions: Sequence[str], references: Sequence[str], *, normalizer: str = "english") -> dict:
    """Corpus WER and CER in percent, with error counts and per-utterance values.

    Returns {"wer", "cer", "n", "details": {substitutions, deletions, insertions, hits, reference_words,
    char_errors, reference_chars, normalizer}, "per_item": [{"wer", "cer", "errors", "reference_words",
    "normalized_prediction", "normalized_reference"}]}. A per-item rate is None where the normalised
    reference is empty (its insertions still count in the corpus numbers).
    """
    import jiwer

    check_pairs("asr", predictions, references)
    references = [single_reference("asr", i, r) for i, r in enumerate(references)]
    norm = text_normalizer(normalizer)
    hyps = [_clean(norm(p)) for p in predictions]
    refs = [_clean(norm(r)) for r in references]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)

    per_item = []
    for i, (w_align, c_align) in enumerate(zip(words.alignments, chars.alignments)):
        w, c = _item_counts(w_align), _item_counts(c_align)
        n_words, n_chars = len(words.references[i]), len(chars.references[i])
        w_err = w["substitute"] + w["delete"] + w["insert"]
        c_err = c["substitute"] + c["delete"] + c["insert"]
        per_item.append({
            "wer": 100.0 * w_err / n_words if n_words else None,
            "cer": 100.0 * c_err / n_chars if n_chars else None,
            "errors": w_err, "reference_words": n_words,
            "normalized_prediction": hyps[i], "normalized_reference": refs[i],
        })
    n_ref_words = words.substitutions + words.deletions + words.hits
    n_ref_chars = chars.substitutions + chars.deletions + chars.hits
    char_errors = chars.substitutions + chars.deletions + chars.insertions
    return {
        "wer": 100.0 * words.wer if n_ref_words else None,
        "cer": 100.0 * chars.cer if n_ref_chars else None,
        "n": len(predictions),
        "details": {
            "substitutions": words.substitutions, "deletions": words.deletions,
            "insertions": words.insertions, "hits": words.hits, "reference_words": n_ref_words,
            "char_errors": char_errors, "reference_chars": n_ref_chars, "normalizer": normalizer,
        },
        "per_item": per_item,
    }
