"""schedule.token_mean step: the LM loss of an optimiser step is the mean over all its answer tokens."""
from types import SimpleNamespace

import pytest
import torch

from conftest import make_tiny_model, tone
from usam.training.trainer import Trainer


def _grads(model):
    return torch.cat([p.grad.flatten().clone() for p in model.parameters() if p.grad is not None])


def test_step_token_mean_gives_the_gradient_of_one_batch_holding_every_micro_batch():
    model, processor = make_tiny_model()
    model.eval()  # no dropout: the same forward however the samples are batched
    clips = [tone(1.0, 300), tone(1.3, 500, seed=1), tone(0.8, 700, seed=2)]
    instructions = ["Transcribe the speech.", "Describe the sound.", "Describe the sound."]
    answers = ["hi", "a long caption about a tone that rises and falls", "another rather long caption here"]
    tasks = ["asr", "aac", "aac"]
    short = processor(clips[:1], instructions[:1], answers[:1], tasks=tasks[:1])  # 2 answer tokens + end
    long = processor(clips[1:], instructions[1:], answers[1:], tasks=tasks[1:])
    both = processor(clips, instructions, answers, tasks=tasks)

    def ce_grad(batches_and_scales, divide):
        model.zero_grad()
        for batch, scale in batches_and_scales:
            (model(**batch).ce_loss * scale / divide).backward()  # DeepSpeed divides by grad_accum
        return _grads(model)

    prepared = [(SimpleNamespace(batch=short), 1.0), (SimpleNamespace(batch=long), 1.0)]
    trainer = SimpleNamespace(cfg=SimpleNamespace(schedule=SimpleNamespace(grad_accum=2, token_mean="step")), world=1)
    scales = Trainer._ce_scales(trainer, prepared)
    n_short, n_long = (int((b["labels"][:, 1:] != -100).sum()) for b in (short, long))
    assert scales == pytest.approx([2 * n_short / (n_short + n_long), 2 * n_long / (n_short + n_long)])
    stepped = ce_grad([(short, scales[0]), (long, scales[1])], divide=2)
    joint = ce_grad([(both, 1.0)], divide=1)
    torch.testing.assert_close(stepped, joint, rtol=1e-4, atol=1e-6)
    averaged = ce_grad([(short, 1.0), (long, 1.0)], divide=2)  # the mean of micro-batch means: not the same
    assert not torch.allclose(averaged, joint, rtol=1e-2, atol=1e-5)

    # an all-skipped micro-batch (weight 0) counts no tokens; micro_batch mode and a single micro-batch change nothing
    assert Trainer._ce_scales(trainer, [(SimpleNamespace(batch=short), 0.0), (SimpleNamespace(batch=long), 1.0)]) \
        == pytest.approx([0.0, 2.0])
    trainer.cfg.schedule.token_mean = "micro_batch"
    assert Trainer._ce_scales(trainer, prepared) == [None, None]
    trainer.cfg.schedule = SimpleNamespace(grad_accum=1, token_mean="step")
    assert Trainer._ce_scales(trainer, prepared[:1]) == [None]


def test_token_mean_is_checked():
    from usam.training.config import ScheduleSettings

    with pytest.raises(ValueError, match="schedule.token_mean': 'tokens' is not one of step, micro_batch"):
        ScheduleSettings(token_mean="tokens")
