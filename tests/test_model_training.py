"""Learning behaviour: the contrastive loss separates matched pairs, and a tiny model overfits 4 samples."""

import pytest
import torch

from conftest import make_tiny_model, tone
from usam.config import SACLSettings
from usam.sacl import SemanticAwareContrastiveLoss


def test_sacl_is_zero_with_a_warning_at_batch_size_one():
    loss = SemanticAwareContrastiveLoss(SACLSettings(score_hidden=8, calib_hidden=8, max_slots=4), 16)
    with pytest.warns(UserWarning, match="at least 2 samples"):
        value = loss(torch.randn(1, 6, 16), torch.ones(1, 6, dtype=torch.bool), torch.randn(1, 3, 16),
                     torch.ones(1, 3, dtype=torch.bool))
    assert float(value) == 0.0


def test_sacl_ignores_padding():
    torch.manual_seed(0)
    loss = SemanticAwareContrastiveLoss(SACLSettings(score_hidden=8, calib_hidden=8, max_slots=4), 16).eval()
    a, t = torch.randn(3, 6, 16), torch.randn(3, 4, 16)
    am, tm = torch.ones(3, 6, dtype=torch.bool), torch.ones(3, 4, dtype=torch.bool)
    base = loss(a, am, t, tm)
    a2 = torch.cat([a, 100 * torch.randn(3, 5, 16)], 1)
    t2 = torch.cat([t, 100 * torch.randn(3, 2, 16)], 1)
    padded = loss(a2, torch.cat([am, torch.zeros(3, 5, dtype=torch.bool)], 1), t2,
                  torch.cat([tm, torch.zeros(3, 2, dtype=torch.bool)], 1))
    torch.testing.assert_close(base, padded)


def test_sacl_gradient_reaches_the_score_mlp():
    loss = SemanticAwareContrastiveLoss(SACLSettings(score_hidden=8, calib_hidden=8, max_slots=4), 16)
    a = torch.randn(3, 6, 16, requires_grad=True)
    value = loss(a, torch.ones(3, 6, dtype=torch.bool), torch.randn(3, 4, 16), torch.ones(3, 4, dtype=torch.bool))
    value.backward()
    assert loss.score_mlp[0].weight.grad.abs().sum() > 0 and a.grad.abs().sum() > 0


def test_sacl_matched_pairs_score_lower_than_shuffled_after_training():
    model, processor = make_tiny_model(seed=5, **{"loss.lambda_sac": 1.0})
    clips = [tone(1.0, f, seed=i) for i, f in enumerate((200, 500, 1100, 2300))]
    answers = ["low hum", "mid beep", "high whistle", "very high squeal"]
    batch = processor(clips, ["Describe the sound."] * 4, answers)
    with torch.no_grad():
        encoded = model.encode_audio(batch["audio"], batch["audio_lengths"])
    opt = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=3e-3)
    model.train()
    for _ in range(30):
        opt.zero_grad()
        out = model(**batch, encoder_outputs=encoded)
        out.sacl_loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        matched = float(model(**batch, encoder_outputs=encoded).sacl_loss)
        shuffled_batch = processor(clips, ["Describe the sound."] * 4, answers[1:] + answers[:1])
        shuffled = float(model(**shuffled_batch, encoder_outputs=encoded).sacl_loss)
    assert matched < shuffled


def test_tiny_model_overfits_four_samples():
    model, processor = make_tiny_model(seed=6, **{"llm.train": "full", "loss.lambda_sac": 0.1})
    clips = [tone(1.0, f, seed=i) for i, f in enumerate((250, 600, 1400, 3000))]
    answers = ["cat", "dog", "bird", "frog"]
    instruction = "Which animal is it?"
    batch = processor(clips, [instruction] * 4, answers)
    with torch.no_grad():
        encoded = model.encode_audio(batch["audio"], batch["audio_lengths"])
    opt = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=3e-3)
    model.train()
    first = None
    for step in range(150):
        opt.zero_grad()
        out = model(**batch, encoder_outputs=encoded)
        out.loss.backward()
        opt.step()
        first = float(out.ce_loss) if first is None else first
        last = float(out.ce_loss)
    assert last < 0.1 * first, (first, last)
    model.eval()
    prompt = processor(clips, [instruction] * 4)
    generated = processor.batch_decode(model.generate(**prompt, max_new_tokens=8))
    assert generated == answers


def test_sacl_at_batch_size_one_still_reaches_every_head():
    loss = SemanticAwareContrastiveLoss(SACLSettings(score_hidden=8, calib_hidden=8, max_slots=4), 16)
    with pytest.warns(UserWarning):
        value = loss(torch.randn(1, 6, 16, requires_grad=True), torch.ones(1, 6, dtype=torch.bool),
                     torch.randn(1, 3, 16), torch.ones(1, 3, dtype=torch.bool))
    value.backward()
    assert all(p.grad is not None for p in loss.parameters())
