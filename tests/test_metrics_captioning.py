"""COCO captioning metrics (pycocoevalcap, Java PTB tokenizer and METEOR) against hand-computed values and an
independent CIDEr-D written here from the paper's formula."""
import math
from collections import Counter

import pytest

from usam.metrics import captioning
from usam.metrics.captioning import caption_metrics, spice_status

# Two clips; clip 0 has 2 references, clip 1 has 3 (ragged), all scored together.
PREDS = ["A dog barks loudly outside.", "rain falls on a tin roof"]
REFS = [["A dog barks loudly.", "A dog is barking outside."],
        ["Rain falls on a tin roof.", "Heavy rain on a metal roof.", "Water drips on a roof."]]
# The same captions after PTB tokenisation (lower case, punctuation dropped).
TOK_PREDS = ["a dog barks loudly outside", "rain falls on a tin roof"]
TOK_REFS = [["a dog barks loudly", "a dog is barking outside"],
            ["rain falls on a tin roof", "heavy rain on a metal roof", "water drips on a roof"]]


def ngrams(words, n):
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def cider_d(preds, refs, sigma=6.0):
    """CIDEr-D (Vedantam et al. 2015) as the coco-caption server defines it: tf-idf n-gram vectors with idf
    from the references of the test set, candidate weights clipped by the reference's, a Gaussian length
    penalty, the mean over references and over n = 1..4, times 10."""
    n_clips = len(refs)
    scores = []
    for pred, clip_refs in zip(preds, refs):
        total = 0.0
        for n in range(1, 5):
            df = Counter()
            for rs in refs:
                df.update(set().union(*(ngrams(r.split(), n).keys() for r in rs)))

            def vec(text):
                return {g: c * math.log(n_clips / max(1.0, df[g])) for g, c in ngrams(text.split(), n).items()}

            c = vec(pred)
            for ref in clip_refs:
                s = vec(ref)
                dot = sum(min(w, s.get(g, 0.0)) * s.get(g, 0.0) for g, w in c.items())
                norms = math.sqrt(sum(w * w for w in c.values())) * math.sqrt(sum(w * w for w in s.values()))
                penalty = math.exp(-((len(pred.split()) - len(ref.split())) ** 2) / (2 * sigma ** 2))
                total += (dot / norms if norms else 0.0) * penalty / 4
        scores.append(10.0 * total / len(clip_refs))
    return sum(scores) / len(scores), scores


@pytest.fixture(scope="module")
def scores():
    return caption_metrics(PREDS, REFS, fense="off")


def test_bleu_is_corpus_level_with_closest_reference_length(scores):
    # Clipped n-gram matches summed over both clips: 11/11, 8/9, 6/7, 4/5; hypothesis length 5 + 6 equals
    # the closest reference lengths 5 + 6, so no brevity penalty.
    p = [1.0, 8 / 9, 6 / 7, 4 / 5]
    for k in range(1, 5):
        assert scores[f"bleu_{k}"] == pytest.approx(math.prod(p[:k]) ** (1 / k), rel=1e-6)


def test_rouge_l_takes_best_precision_and_recall_over_references(scores):
    # Clip 0: LCS 4 with ref 1 (P 4/5, R 4/4), 3 with ref 2 (P 3/5, R 3/5) -> P 0.8, R 1, beta 1.2.
    clip0 = (1 + 1.2 ** 2) * 0.8 * 1.0 / (1.0 + 1.2 ** 2 * 0.8)
    assert scores["rouge_l"] == pytest.approx((clip0 + 1.0) / 2, rel=1e-6)  # clip 1 equals a reference
    assert scores["per_item"][0]["rouge_l"] == pytest.approx(clip0, rel=1e-6)


def test_cider_d_matches_an_independent_implementation_over_all_references(scores):
    expected, per_clip = cider_d(TOK_PREDS, TOK_REFS)
    assert scores["cider_d"] == pytest.approx(expected, rel=1e-9)
    assert [p["cider_d"] for p in scores["per_item"]] == pytest.approx(per_clip, rel=1e-9)
    # Scoring against the first references only gives a different (independently checked) number.
    first = caption_metrics(PREDS, [r[:1] for r in REFS], spice="off", fense="off")
    assert first["cider_d"] == pytest.approx(cider_d(TOK_PREDS, [r[:1] for r in TOK_REFS])[0], rel=1e-9)
    assert first["cider_d"] != pytest.approx(scores["cider_d"])


def test_perfect_captions_with_distinct_words_get_cider_d_10_and_beat_wrong_ones():
    refs = [["a dog barks loudly"], ["rain falls on roof"]]
    perfect = caption_metrics(["a dog barks loudly", "rain falls on roof"], refs, spice="off", fense="off")
    wrong = caption_metrics(["rain falls on roof", "a dog barks loudly"], refs, spice="off", fense="off")
    assert perfect["cider_d"] == pytest.approx(10.0)
    assert wrong["cider_d"] == pytest.approx(0.0)
    assert 0.0 <= wrong["meteor"] < perfect["meteor"] <= 1.0


def test_spice_spider_and_fense_are_unavailable_without_their_files(tmp_path, monkeypatch):
    # Detection without downloading: a SPICE folder without the CoreNLP jars, and no FENSE checkpoint.
    (tmp_path / "lib").mkdir()
    monkeypatch.setattr(captioning, "_package_dir", lambda module: tmp_path)
    monkeypatch.setenv("FENSE_DATA", str(tmp_path / "no_fense"))
    ok, reason = spice_status()
    assert not ok and "stanford-corenlp-3.6.0-models.jar" in reason
    out = caption_metrics(["a dog barks"], [["a dog barks"]])
    for name in ("spice", "spider", "fense"):
        assert out[name]["status"] == "unavailable" and out[name]["reason"], name
    assert "CoreNLP" in out["spider"]["reason"]
    assert out["bleu_1"] == pytest.approx(1.0)  # the other metrics are still computed
    assert "spice" not in caption_metrics(["a dog barks"], [["a dog barks"]], spice="off", fense="off")
    # With the jars in place SPICE counts as available (it is not run here).
    for jar in captioning.SPICE_JARS:
        (tmp_path / "lib" / jar).write_bytes(b"")
    assert spice_status() == (True, "ok")


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="reference 1 is an empty list"):
        caption_metrics(["a", "b"], [["a"], []], spice="off", fense="off")
    with pytest.raises(ValueError, match="option spice='yes'"):
        caption_metrics(["a"], [["a"]], spice="yes")


def test_a_failed_meteor_call_does_not_block_the_next_one(monkeypatch):
    broken = captioning._meteor_scorer()
    monkeypatch.setattr(broken, "_stat", lambda *a: (_ for _ in ()).throw(BrokenPipeError("java died")))
    with pytest.raises(BrokenPipeError):
        caption_metrics(["a dog barks"], [["a dog barks"]], spice="off", fense="off")
    assert not broken.lock.locked()
    assert captioning._meteor_scorer() is not broken  # a fresh process serves the next call
    out = caption_metrics(["a dog barks"], [["a dog barks"]], spice="off", fense="off")
    assert 0.0 < out["meteor"] <= 1.0


def test_missing_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(captioning.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="install default-jre-headless"):
        caption_metrics(["a"], [["a"]])
    assert spice_status() == (False, "java is not on PATH (install default-jre-headless)")
