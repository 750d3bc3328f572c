"""Reading practice from text alone (data.reading): simulated posterior tokens of sentences, no audio."""
import json
import random

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, tone
from usam.reading import ReadingPractice, corrupt, oracle_audio, simulate


def test_corruption_rate_and_simulated_posteriors():
    rng = random.Random(0)
    ids = list(range(100, 140))
    changed, total = 0, 0
    for _ in range(200):
        out = corrupt(ids, 0.3, [7, 8, 9], rng)
        total += len(ids)
        # edits: tokens missing (deleted or substituted) plus tokens doubled
        changed += len(ids) - sum(1 for t in set(out) if t in ids) + sum(out.count(t) - 1 for t in set(out) if t in ids)
    assert 0.24 < changed / total < 0.36
    assert corrupt(ids, 0.0, [7], rng) == ids
    sim = simulate([5, 6, 7], 320, 0.2, 4, rng)
    assert sim.ids.shape == (3, 4) and sim.ids[:, 0].tolist() == [5, 6, 7]
    np.testing.assert_allclose(sim.weights.sum(1), 1.0, rtol=1e-6)
    assert sim.weights[0, 0] == pytest.approx(0.8)


def test_draws_are_reproducible_per_step_and_differ_between_steps():
    _, processor = make_tiny_model()
    sentences = [f"sentence number {i} about the weather" for i in range(50)]
    practice = ReadingPractice(processor.tokenizer, sentences, 0.15, 0.1, 4, seed=3)
    a, b, c = practice.draw(4, step=10), practice.draw(4, step=10), practice.draw(4, step=11)
    assert [s.key for s in a] == [s.key for s in b]
    assert all((x.audio.ids == y.audio.ids).all() for x, y in zip(a, b))
    assert [s.key for s in a] != [s.key for s in c]
    assert all(s.target in sentences and s.task == "asr" for s in a)
    with pytest.raises(ValueError, match="error_rate"):
        ReadingPractice(processor.tokenizer, sentences, 1.5, 0.1, 4)


@pytest.mark.parametrize("mode", ["continuous", "posterior", "hybrid"])
def test_oracle_tokens_are_the_text_embeddings_in_a_batch_with_real_audio(mode):
    """A one-hot simulated clip puts exactly the text's input embeddings at its placeholders, beside a real clip,
    and the batch trains (the loss reaches the connector through the real clip)."""
    model, processor = make_tiny_model(**{"audio_tokens.mode": mode})
    model.train()
    text = "hello there"
    chats = [[{"role": "user", "content": [{"type": "audio", "audio": oracle_audio(processor.tokenizer, text)},
                                          {"type": "text", "text": "Transcribe the speech."}]},
              {"role": "assistant", "content": text, "_answer": True}],
             [{"role": "user", "content": [{"type": "audio", "audio": tone(1.5)},
                                          {"type": "text", "text": "Transcribe the speech."}]},
              {"role": "assistant", "content": "a tone", "_answer": True}]]
    batch = processor.apply_chat(chats, add_generation_prompt=False, padding_side="right", tasks=["asr", "asr"])
    ids = processor.tokenizer(text, add_special_tokens=False).input_ids
    assert batch["simulated_ids"].shape[:2] == (1, len(ids)) and batch["simulated_sample_index"].tolist() == [0]
    assert batch["audio_sample_index"].tolist() == [1]
    embeds, _, _ = model._inputs_embeds(batch["input_ids"], batch["attention_mask"], batch["instruction_mask"],
                                        batch["audio"], batch["audio_lengths"], batch["audio_sample_index"], None,
                                        batch["simulated_ids"], batch["simulated_weights"],
                                        batch["simulated_sample_index"])
    slots = batch["input_ids"][0] == processor.audio_token_id
    torch.testing.assert_close(embeds[0, slots], model.embed_tokens(torch.tensor(ids)))
    out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert any(p.grad is not None for p in model.projector.parameters())


def test_training_with_reading_practice_logs_copy_fidelity(tmp_path, monkeypatch):
    """Reading samples join the training batches; validation scores the answers against what the tokens spell
    (here the spelling is made the reference itself, so copy fidelity must equal the answers' own score)."""
    from usam.training.testing import tiny_train_config, write_corpus
    from usam.training.trainer import Trainer, train

    monkeypatch.setattr(Trainer, "_ctc_texts", lambda self, items: [it.target for it in items])

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(f"the {w} sat on the mat" for w in ("cat", "dog", "bird", "fox")) + "\n")
    train_manifest = write_corpus(tmp_path / "data", 6)
    valid_manifest = write_corpus(tmp_path / "data", 6, seed=1, name="valid")
    over = {"schedule.max_steps": 2, "logging.eval_every": 2, "logging.score_per_task": 2,
            "logging.num_generate": 0, "logging.max_new_tokens": 4, "logging.log_keys": True,
            "data.reading": {"per_batch": 2, "sentences": str(sentences), "error_rate": 0.2,
                             "error_rate_end": 0.0},
            "model_overrides": {"audio_tokens.mode": "posterior", "loss.lambda_ctc": 0.3,
                                "loss.ctc_tasks": ["asr", "cls"]}}
    train(tiny_train_config(tmp_path / "run", train_manifest, valid_manifest, overrides=over))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    keys = [k for r in records if r["kind"] == "train" for rank in r.get("keys", []) for k in rank]
    assert any(k.startswith("reading-") for k in keys), keys
    valid = [r for r in records if r["kind"] == "valid"][-1]
    tasks = {json.loads(line)["task"] for line in valid_manifest.read_text().splitlines()}
    assert "asr" in tasks
    for task, score in (("asr", "wer"), ("cls", "accuracy")):
        if task in tasks:
            assert valid[f"{task}/copy_{score}"] == pytest.approx(valid[f"{task}/{score}"]), valid
