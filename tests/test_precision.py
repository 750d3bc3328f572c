"""The dtype policy (usam.precision) and stage 1's activation checkpointing: bf16 heads fed by fp32 activations,
a whole-model bf16 cast, and a frozen LLM that must still checkpoint its layers."""
import pytest
import torch
from torch import nn

from tests.conftest import make_tiny_model, tone


def _sacl_inputs(dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(3, 6, dim, generator=g)
    text = torch.randn(3, 5, dim, generator=g)
    audio_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 5 + [0]], dtype=torch.bool)
    text_mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2, [1] * 4 + [0]], dtype=torch.bool)
    return audio, audio_mask, text, text_mask


def test_sacl_heads_in_bf16_take_fp32_activations():
    """DeepSpeed's bf16 engine holds the SACL heads in bf16; the loss casts its inputs up to fp32 first."""
    from usam.config import SACLSettings
    from usam.sacl import SemanticAwareContrastiveLoss

    torch.manual_seed(0)
    fp32 = SemanticAwareContrastiveLoss(SACLSettings(score_hidden=8, calib_hidden=8, max_slots=4), 16)
    bf16 = SemanticAwareContrastiveLoss(SACLSettings(score_hidden=8, calib_hidden=8, max_slots=4), 16)
    bf16.load_state_dict(fp32.state_dict())
    bf16.to(torch.bfloat16)
    audio, audio_mask, text, text_mask = _sacl_inputs(16)
    expected = fp32(audio, audio_mask, text, text_mask)
    got = bf16(audio.bfloat16(), audio_mask, text.bfloat16(), text_mask)
    assert got.dtype == torch.float32  # the loss itself reduces in fp32
    assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=0.05)
    got.backward()
    grads = [p.grad for p in bf16.score_mlp.parameters()] + [p.grad for p in bf16.calibrator.parameters()]
    assert all(g is not None and g.dtype == torch.bfloat16 and torch.isfinite(g).all() for g in grads)
    # the zero loss of a batch with fewer than 2 usable samples also runs the heads in their dtype
    with pytest.warns(UserWarning, match="at least 2 samples"):
        zero = bf16(audio[:1].bfloat16(), audio_mask[:1], text[:1].bfloat16(), text_mask[:1])
    assert float(zero) == 0.0


def test_whole_model_bf16_cast_keeps_front_ends_fp32():
    """`model.to(torch.bfloat16)` rounds every parameter; the filter banks are not buffers, so the Whisper log-mel
    and the BEATs fbank still compute in fp32 and the bf16 model's loss tracks the fp32 one."""
    model, processor = make_tiny_model()
    model.eval()
    batch = processor([tone(1.0, 300), tone(1.5, 600, seed=1)], ["Describe.", "Transcribe the speech."],
                      ["a tone", "la la"])
    with torch.no_grad():
        expected = model(**batch).loss
        model.to(torch.bfloat16)
        got = model(**batch).loss
    assert not [n for n, b in model.named_buffers() if "mel" in n]
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert float(got) == pytest.approx(float(expected), rel=0.05)


def test_front_end_filters_are_fp32_and_shared():
    from usam.features import front_end_filters, whisper_mel_filters

    a = front_end_filters("whisper", 80, torch.device("cpu"))
    assert a.dtype == torch.float32 and a is front_end_filters("whisper", 80, torch.device("cpu"))
    torch.testing.assert_close(a, whisper_mel_filters(80), rtol=0, atol=0)


def test_stage1_checkpoints_the_frozen_llm_layers():
    """Stage 1 backpropagates through every frozen LLM layer to the audio tokens, so with gradient_checkpointing
    each layer must run again in the backward pass (a layer in eval mode is never checkpointed)."""
    model, processor = make_tiny_model(**{"llm.gradient_checkpointing": True})
    model.set_stage(1)
    model.train()
    calls = []
    layers = model.llm.get_base_model().model.layers
    for layer in layers:
        layer.self_attn.register_forward_hook(lambda *_: calls.append(1))
    batch = processor([tone(1.0, 300), tone(1.5, 600, seed=1)], ["Describe.", "Transcribe the speech."],
                      ["a tone", "la la"])
    out = model(**batch)
    assert len(calls) == len(layers)
    out.loss.backward()
    assert len(calls) == 2 * len(layers)  # recomputed once each in the backward pass
    assert all(p.grad is not None for p in model.projector.parameters())
    # the frozen LLM keeps dropout off: only the checkpointed layers themselves are flagged as training
    assert not any(m.training for m in model.llm.modules() if isinstance(m, nn.Dropout))
    assert not any(m.training for layer in layers for m in layer.children())
    model.eval()
    assert not any(m.training for m in model.llm.modules())
