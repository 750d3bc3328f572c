"""`usam probe`: cheap heads on cached features (no LLM) that learn what the features carry."""
import json
import random

import torch

from usam.metrics import compute_metrics
from usam.probes.heads import classification_probe, ctc_probe, pooled, rhythm


def test_classification_probe_learns_separable_labels_and_scores_unseen_labels_as_errors():
    torch.manual_seed(0)
    centres = {"dog": torch.randn(6), "bell": torch.randn(6), "rain": torch.randn(6)}

    def clip(label):  # (T, D) frames around the label's centre
        return centres[label] + 0.3 * torch.randn(20, 6)

    train = [(pooled(clip(y)), y) for y in ["dog", "bell", "rain"] * 10]
    tests = {"test": [(pooled(clip(y)), y) for y in ["dog", "bell", "rain"] * 3],
             "unseen": [(pooled(clip("dog")), "siren")]}
    result = classification_probe(train, tests, steps=50, eval_at=(1, 50))
    assert result["labels"] == ["bell", "dog", "rain"] and [p["step"] for p in result["curve"]] == [1, 50]
    last = result["curve"][-1]
    assert last["test"] == 100.0 and last["unseen"] == 0.0 and last["train_loss"] < result["curve"][0]["train_loss"]


def test_rhythm_summary_peaks_at_the_beat_period():
    """Clips with an onset every 25 or every 40 frames: the rhythm summary peaks at each clip's own period and at
    no shorter lag, and a linear probe on it tells fast from slow."""
    torch.manual_seed(0)

    def clip(period, length=400, dim=8):
        frames = 0.05 * torch.randn(length, dim)
        frames[::period] += 1.0  # an onset: every feature jumps for one frame
        return frames

    fast, slow = rhythm(clip(25)), rhythm(clip(40))
    assert fast.shape == (100,)  # lags 1..100: lag L at index L - 1
    assert fast[25 - 1] > 0.5 > fast[: 25 - 1].max() and slow[40 - 1] > 0.5 > slow[: 40 - 1].max()
    train = [(rhythm(clip(p)), "fast") for p in range(22, 29)] + [(rhythm(clip(p)), "slow") for p in range(37, 44)]
    tests = {"test": [(rhythm(clip(25)), "fast"), (rhythm(clip(40)), "slow")]}
    assert classification_probe(train, tests, steps=50, eval_at=(50,))["curve"][-1]["test"] == 100.0


def test_ctc_probe_learns_to_spell_words_from_frames():
    """Each word of a 6-word vocabulary is 10 noisy frames of its own pattern; sentences of 2-4 words."""
    torch.manual_seed(0)
    rng = random.Random(0)
    words = ["red", "green", "blue", "cat", "dog", "sun"]
    patterns = {w: torch.randn(8) for w in words}
    embeddings = torch.randn(20, 16)  # token id = word index + 10

    def sentence(n):
        ws = [rng.choice(words) for _ in range(n)]
        frames = torch.cat([patterns[w] + 0.2 * torch.randn(10, 8) for w in ws])
        return frames, ws

    train = [(f, [words.index(w) + 10 for w in ws]) for f, ws in (sentence(rng.randint(2, 4)) for _ in range(64))]
    tests = {"test": [(f, " ".join(ws)) for f, ws in (sentence(3) for _ in range(16))]}
    decode = lambda ids: " ".join(words[i - 10] for i in ids)  # noqa: E731
    result = ctc_probe(train, tests, embeddings, decode, steps=150, eval_at=(150,), batch_size=8, lr=3e-3,
                       hidden=64)
    assert result["vocab_size"] == 6 and result["curve"][-1]["test"] < 20.0
    hyps = [row["hypothesis"] for row in result["examples"]["test"]]
    refs = [row["reference"] for row in result["examples"]["test"]]
    assert compute_metrics("asr", hyps, refs)["wer"] < 34.0


def test_usam_probe_command_on_a_tiny_corpus(tmp_path):
    from usam.cli import main
    from usam.synth import generate_corpus, load_config

    data = tmp_path / "data"
    generate_corpus(data, load_config("configs/synth/tiny.yaml"), jobs=2, progress=False)
    out = tmp_path / "probe.json"
    code = main(["probe", "--data", str(data), "--cache", str(tmp_path / "cache"), "--model", "configs/model/tiny.yaml",
                 "--classify", "sound", "--classify-steps", "5", "--ctc-steps", "4", "--ctc-eval", "2",
                 "--batch-size", "2", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["classify"]["sound"]) == {"meanstd", "rhythm"}
    sound = report["classify"]["sound"]["meanstd"]
    assert [p["step"] for p in sound["curve"]] == [5] and {"test", "timbre"} <= set(sound["curve"][0])
    assert [p["step"] for p in report["ctc"]["curve"]] == [2, 4] and "general" in report["ctc"]["curve"][0]
    # a second run reads the cache it built; a cache that lacks samples is refused with the reason
    assert main(["probe", "--data", str(data), "--cache", str(tmp_path / "cache"), "--model",
                 "configs/model/tiny.yaml", "--classify", "--ctc-steps", "0", "--out", str(out)]) == 0
    # several encoders: each classifier reads their summaries side by side; no CTC probe (frame rates differ)
    assert main(["probe", "--data", str(data), "--cache", str(tmp_path / "cache"), "--encoder", "whisper", "beats",
                 "--classify", "sound", "--pooling", "meanstd", "--classify-steps", "5", "--ctc-steps", "4",
                 "--out", str(out)]) == 0
    joint = json.loads(out.read_text())
    assert joint["encoder"] == "whisper + beats" and joint["ctc"] is None
    assert joint["classify"]["sound"]["meanstd"]["curve"] != sound["curve"]
    assert main(["probe", "--data", str(data), "--cache", str(tmp_path / "cache"), "--encoder", "whisper", "clap",
                 "--classify", "sound", "--ctc-steps", "0"]) == 2
    lines = (data / "test.jsonl").read_text().splitlines()
    renamed = json.loads(lines[0])
    renamed["key"] = "not-cached"
    (data / "test.jsonl").write_text("\n".join([json.dumps(renamed)] + lines[1:]) + "\n")
    assert main(["probe", "--data", str(data), "--cache", str(tmp_path / "cache"), "--model",
                 "configs/model/tiny.yaml", "--classify", "--ctc-steps", "0"]) == 2
