"""Speech-translation metrics: sacreBLEU corpus BLEU and chrF.

BLEU uses `tokenize="zh"` for Chinese targets and sacreBLEU's default "13a" otherwise ("auto" picks from
`target_lang`). Each item may have several references, and not all items need the same number: sacreBLEU
takes references as streams (stream j holds the j-th reference of every item), so items with fewer
references are padded with None, which sacreBLEU skips for that item.
"""
from __future__ import annotations

from typing import Sequence

from usam.metrics._common import check_pairs, reference_list


def bleu_tokenizer(tokenize: str, target_lang: str | None) -> str:
    """The sacreBLEU tokenizer name: an explicit name, or "auto" -> "zh" for Chinese targets, else "13a"."""
    if tokenize != "auto":
        return tokenize
    return "zh" if (target_lang or "").lower().split("-")[0].split("_")[0] in ("zh", "cmn") else "13a"


def reference_streams(references: Sequence) -> list[list[str | None]]:
    """Per-item reference lists -> sacreBLEU streams, padding ragged items with None."""
    per_item = [reference_list("s2tt", i, r) for i, r in enumerate(references)]
    for i, refs in enumerate(per_item):
        if not any(r.strip() for r in refs):
            raise ValueError(f"s2tt: reference {i} is empty; BLEU needs a non-empty reference for every item")
    width = max(len(refs) for refs in per_item)
    return [[refs[j] if j < len(refs) else None for refs in per_item] for j in range(width)]


def translation_metrics(predictions: Sequence[str], references: Sequence, *, tokenize: str = "auto",
                        target_lang: str | None = None) -> dict:
    """Corpus BLEU and chrF (both 0-100) with their sacreBLEU signatures.

    references: one string per item, or a list of strings per item (any number, at least one).
    """
    from sacrebleu.metrics import BLEU, CHRF

    check_pairs("s2tt", predictions, references)
    streams = reference_streams(references)
    tok = bleu_tokenizer(tokenize, target_lang)
    bleu = BLEU(tokenize=tok)
    bleu_score = bleu.corpus_score(list(predictions), streams)
    chrf = CHRF()
    chrf_score = chrf.corpus_score(list(predictions), streams)
    return {
        "bleu": bleu_score.score,
        "chrf": chrf_score.score,
        "n": len(predictions),
        "details": {
            "tokenize": tok,
            "bleu_precisions": list(bleu_score.precisions),
            "brevity_penalty": bleu_score.bp,
            "hyp_len": bleu_score.sys_len, "ref_len": bleu_score.ref_len,
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
            "max_references": len(streams),
        },
    }
