"""Captioning metrics (AAC and music captioning) through pycocoevalcap, the COCO caption code the field uses.

Every clip is scored against ALL of its references. Captions are lower-cased and tokenised by the Stanford
PTB tokenizer (Java) that ships with pycocoevalcap, which also drops punctuation tokens, exactly as the
field's published numbers are computed. Scores are on pycocoevalcap's scale: BLEU, METEOR, ROUGE-L, SPICE
in [0, 1]; CIDEr-D in [0, 10].

CIDEr-D: pycocoevalcap's `Cider` class (cider/cider_scorer.py) IS CIDEr-D, the variant the coco-caption
server reports under the name "CIDEr": n = 1..4, tf-idf vectors with idf from the test set's references,
candidate n-gram weights clipped by the reference's (`min(vec_hyp, vec_ref)`), a Gaussian length penalty
with sigma = 6, and a final x10. There is no separate "CiderD" class in this package.

Optional metrics, computed only when their files are already on this machine (nothing is downloaded):
- SPICE needs the Stanford CoreNLP 3.6.0 jars (`stanford-corenlp-3.6.0.jar` and `-models.jar`) in
  pycocoevalcap's `spice/lib/`. pycocoevalcap's `Spice()` would try to download them, so their presence is
  checked first. SPIDEr = (CIDEr-D + SPICE) / 2 exists only together with SPICE.
- FENSE needs the `aac-metrics` package (its fluency-error detector's model code) plus its checkpoint
  (`echecker_clotho_audiocaps_base.ckpt` in $FENSE_DATA or `<torch hub dir>/fense_data`) and the
  `sentence-transformers/paraphrase-TinyBERT-L6-v2` model in the Hugging Face cache. aac-metrics pins
  transformers<5, so it is not part of this project's environment.
A missing optional metric is reported as {"status": "unavailable", "reason": ...}, never as 0.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from usam.metrics._common import check_pairs, reference_list, unavailable

SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
FENSE_CHECKPOINT = "echecker_clotho_audiocaps_base.ckpt"
FENSE_SBERT = "sentence-transformers/paraphrase-TinyBERT-L6-v2"
OPTIONAL_MODES = ("auto", "off")


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def spice_status() -> tuple[bool, str]:
    """(available, reason): whether SPICE can run here without downloading anything."""
    if shutil.which("java") is None:
        return False, "java is not on PATH (install default-jre-headless)"
    spice_dir = _package_dir("pycocoevalcap.spice")
    if spice_dir is None:
        return False, "pycocoevalcap is not installed"
    missing = [j for j in SPICE_JARS if not (spice_dir / "lib" / j).is_file()]
    if missing:
        return False, (f"Stanford CoreNLP jars missing from {spice_dir / 'lib'}: {', '.join(missing)} "
                       "(pycocoevalcap would download them; copy them there to enable SPICE)")
    return True, "ok"


def fense_status() -> tuple[bool, str]:
    """(available, reason): whether FENSE's code and model files are all present locally."""
    if importlib.util.find_spec("aac_metrics") is None:
        return False, ("the aac-metrics package (FENSE's model code) is not installed; it pins "
                       "transformers<5, which this project cannot use")
    import torch

    data_home = Path(os.path.expanduser(os.environ.get("FENSE_DATA", os.path.join(torch.hub.get_dir(),
                                                                                  "fense_data"))))
    if not (data_home / FENSE_CHECKPOINT).is_file():
        return False, f"FENSE checkpoint {FENSE_CHECKPOINT} not found in {data_home}"
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(FENSE_SBERT, "config.json"), str):
        return False, f"sentence model {FENSE_SBERT} is not in the Hugging Face cache"
    return True, "ok"


@lru_cache(maxsize=1)
def _meteor_scorer():
    """One METEOR Java process per Python process: it takes ~6 s to load its paraphrase tables, and
    pycocoevalcap's Meteor serves any number of compute_score calls (with a lock); its __del__ stops it."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def _meteor(gts: dict, res: dict) -> tuple[float, list[float]]:
    scorer = _meteor_scorer()
    try:
        return scorer.compute_score(gts, res)
    except Exception:
        # pycocoevalcap's Meteor keeps its lock when a call fails, and its __del__ waits for that lock:
        # release it and drop the instance, so that the next call starts a fresh Java process.
        _meteor_scorer.cache_clear()
        if scorer.lock.locked():
            scorer.lock.release()
        raise


def _tokenize(captions: dict[str, list[str]]) -> dict[str, list[str]]:
    """PTB-tokenise {clip id: [caption, ...]}, checking that every caption comes back."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    out = PTBTokenizer().tokenize({k: [{"caption": c} for c in caps] for k, caps in captions.items()})
    for k, caps in captions.items():
        if len(out.get(k, [])) != len(caps):
            raise RuntimeError(f"captioning: the PTB tokenizer returned {len(out.get(k, []))} captions for "
                               f"item {k}, expected {len(caps)}")
    return out


def _spice(gts: dict, res: dict) -> tuple[float, list[float]] | dict:
    from pycocoevalcap.spice.spice import Spice

    try:
        score, per_item = Spice().compute_score(gts, res)
    except Exception as err:  # a present but broken SPICE set-up must not look like a score
        return {"status": "failed", "reason": f"SPICE failed: {err}"}
    return float(score), [float(s["All"]["f"]) for s in per_item]


def _fense(predictions: list[str], refs: list[list[str]]) -> float | dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: the status check said the files are here
    try:
        from aac_metrics.functional.fense import fense
        corpus, _ = fense(predictions, refs, return_all_scores=True)
        return float(corpus["fense"])
    except Exception as err:
        return {"status": "failed", "reason": f"FENSE failed: {err}"}


def caption_metrics(predictions: Sequence[str], references: Sequence, *, spice: str = "auto",
                    fense: str = "auto") -> dict:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (+ SPICE, SPIDEr, FENSE where available) over all references.

    references: a list of reference captions per clip (a single string counts as one reference).
    spice / fense: "auto" (compute when the files are present, else report unavailable) or "off".
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    check_pairs("captioning", predictions, references)
    if shutil.which("java") is None:
        raise RuntimeError("captioning metrics need Java (the PTB tokenizer and METEOR run on it) and `java` "
                           "is not on PATH: install default-jre-headless (scripts/apt-packages.txt)")
    for name, mode in (("spice", spice), ("fense", fense)):
        if mode not in OPTIONAL_MODES:
            raise ValueError(f"captioning: option {name}={mode!r}; expected one of {OPTIONAL_MODES}")
    refs = [reference_list("captioning", i, r) for i, r in enumerate(references)]
    keys = [str(i) for i in range(len(predictions))]
    gts = _tokenize(dict(zip(keys, refs)))
    res = _tokenize({k: [p] for k, p in zip(keys, predictions)})

    bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
    meteor, meteor_items = _meteor(gts, res)
    rouge, rouge_items = Rouge().compute_score(gts, res)
    cider, cider_items = Cider().compute_score(gts, res)

    out = {f"bleu_{k + 1}": float(bleu[k]) for k in range(4)}
    out.update(meteor=float(meteor), rouge_l=float(rouge), cider_d=float(cider))
    per_item = [{"bleu_4": float(bleu_items[3][i]), "meteor": float(meteor_items[i]),
                 "rouge_l": float(rouge_items[i]), "cider_d": float(cider_items[i])} for i in range(len(keys))]

    if spice != "off":
        ok, reason = spice_status()
        result = _spice(gts, res) if ok else unavailable(reason)
        if isinstance(result, tuple):
            out["spice"] = result[0]
            out["spider"] = (out["cider_d"] + result[0]) / 2
            for item, s in zip(per_item, result[1]):
                item["spice"] = s
        else:
            out["spice"] = result
            out["spider"] = dict(result, reason=f"SPIDEr needs SPICE: {result['reason']}")
    if fense != "off":
        ok, reason = fense_status()
        out["fense"] = _fense(list(predictions), refs) if ok else unavailable(reason)
    out["n"] = len(predictions)
    out["details"] = {"tokenizer": "PTBTokenizer (pycocoevalcap)",
                      "min_references": min(map(len, refs)),
                      "max_references": max(map(len, refs))}
    out["per_item"] = per_item
    return out
