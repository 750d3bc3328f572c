"""The model's structure: distinct experts, token counts, padding invariance, frozen/trainable parts."""
import pytest
import torch

from conftest import make_tiny_model, tone


def test_experts_are_distinct_and_diverge_after_a_step(tiny):
    model, processor = tiny
    experts = model.projector.experts
    assert len(experts) == 3
    ids = {id(p) for e in experts for p in e.parameters()}
    assert len(ids) == sum(len(list(e.parameters())) for e in experts)  # no shared parameters
    before = [e[0].weight.detach().clone() for e in experts]
    opt = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=1e-2)
    batch = processor([tone(1.0, 300), tone(1.5, 600, seed=1)], ["Describe.", "Transcribe the speech."],
                      ["a tone", "hello"])
    model(**batch).loss.backward()
    opt.step()
    after = [e[0].weight.detach() for e in experts]
    for b, a in zip(before, after):
        assert not torch.equal(a, b)
    assert not torch.allclose(after[0], after[1]) and not torch.allclose(after[1], after[2])


def test_audio_tokens_grow_with_duration(tiny):
    model, processor = tiny
    n2, n8 = model.config.num_audio_tokens(2 * 16000), model.config.num_audio_tokens(8 * 16000)
    assert n8 / n2 == pytest.approx(4.0, rel=0.05)
    batch = processor([tone(2.0), tone(8.0)], ["Describe.", "Describe."])
    with torch.no_grad():
        enc = model.encode_audio(batch["audio"], batch["audio_lengths"])
        _, mask, _ = model.project_audio(enc, batch["audio_lengths"], torch.zeros(2, 64))
    assert mask.sum(1).tolist() == [n2, n8]
    assert (batch["input_ids"] == model.audio_token_id).sum(1).tolist() == [n2, n8]


def test_long_audio_is_chunked_not_truncated(tiny):
    model, _ = tiny
    audio = torch.from_numpy(tone(31.0, sr=model.config.input_sample_rate))[None]
    out = model.encoders["whisper"](audio, torch.tensor([audio.shape[1]]))
    assert int(out.mask.sum()) == 31 * 50


@pytest.mark.parametrize("subset", [["whisper"], ["beats"], ["mert"], ["whisper", "beats", "mert"]])
def test_padding_invariance(subset):
    overrides = {f"{name}.enabled": name in subset for name in ("whisper", "beats", "mert")}
    model, processor = make_tiny_model(seed=1, **overrides)
    model.eval()
    short, long = tone(1.3, 500, seed=2), tone(3.7, 900, seed=3)
    instruction = "Describe the sound."
    with torch.no_grad():
        alone = processor([short], [instruction])
        both = processor([short, long], [instruction, instruction])
        tokens = []
        for batch in (alone, both):
            enc = model.encode_audio(batch["audio"], batch["audio_lengths"])
            t, m, _ = model.project_audio(enc, batch["audio_lengths"], torch.zeros(batch["audio"].shape[0], 64))
            tokens.append(t[0][m[0]])
        assert tokens[0].shape == tokens[1].shape
        torch.testing.assert_close(tokens[0], tokens[1], atol=1e-4, rtol=1e-4)
        gen_alone = model.generate(**alone, max_new_tokens=8)
        gen_both = model.generate(**both, max_new_tokens=8)
    assert processor.batch_decode(gen_alone)[0] == processor.batch_decode(gen_both)[0]
    assert gen_alone[0].tolist() == gen_both[0][: gen_alone.shape[1]].tolist()


def test_frozen_parts_unchanged_and_trainable_parts_get_gradients(tiny):
    model, processor = tiny
    model.train()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = dict(model.trainable_parameters())
    assert frozen and trainable
    # stage-2 trainables: connector, SACL heads, MERT layer mix, LLM LoRA; nothing of the base LLM or encoders
    assert any("lora_" in n for n in trainable) and any(n.startswith("projector.") for n in trainable)
    assert "encoders.mert.layer_weights" in trainable
    assert not any(n.startswith("llm.") and "lora_" not in n for n in trainable)
    rate = processor.sampling_rate
    batch = processor([tone(1.0, 300, sr=rate), tone(2.0, 700, seed=1, sr=rate), tone(1.5, 1200, seed=2, sr=rate)],
                      ["Transcribe the speech.", "Describe the sound.", "Describe the music."],
                      ["hello there", "a beep", "piano music"])
    opt = torch.optim.AdamW(trainable.values(), lr=1e-3)
    out = model(**batch)
    out.loss.backward()
    no_grad = [n for n, p in trainable.items() if p.grad is None or not torch.any(p.grad != 0)]
    # LoRA B matrices start at zero, so LoRA A gets no gradient on the first step; everything else must
    assert all("lora_A" in n for n in no_grad), no_grad
    opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


def test_frozen_encoders_stay_in_eval_mode(tiny):
    model, _ = tiny
    model.train()
    assert all(not enc.training for enc in model.encoders.values() if not any(
        p.requires_grad for n, p in enc.named_parameters() if n != "layer_weights"))
    assert model.qformer.training and model.projector.training


def test_stage_one_freezes_the_llm(tiny):
    model, _ = tiny
    model.set_stage(1)
    assert not any(p.requires_grad for p in model.llm.parameters())
    model.set_stage(2)
    assert any(p.requires_grad for n, p in model.llm.named_parameters() if "lora_" in n)


def test_loss_parts_and_ablation_switches():
    model, processor = make_tiny_model(**{"projector.num_experts": 1, "loss.lambda_sac": 0.0, "beats.enabled": False,
                                          "mert.enabled": False})
    assert model.sacl is None and len(model.projector.experts) == 1 and list(model.encoders) == ["whisper"]
    batch = processor([tone(1.0), tone(1.2, seed=1)], ["Describe.", "Describe."], ["a", "b"])
    out = model(**batch)
    assert float(out.sacl_loss) == 0.0 and float(out.balance_loss) == 0.0
    torch.testing.assert_close(out.loss, out.ce_loss)
    assert out.routing_weights.shape[1] == 1


def test_router_depends_on_the_instruction(tiny):
    model, processor = tiny
    model.eval()
    clip = tone(1.0)
    with torch.no_grad():
        a = model(**processor([clip], ["Transcribe the speech."], ["x"])).routing_weights
        b = model(**processor([clip], ["Describe the music in detail please."], ["x"])).routing_weights
    assert a.shape == b.shape and not torch.allclose(a, b)
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[0]))


def test_top_k_routing_uses_k_experts():
    model, processor = make_tiny_model(**{"projector.top_k": 1})
    out = model(**processor([tone(1.0)], ["Describe."], ["a"]))
    assert ((out.routing_weights > 0).sum(-1) == 1).all()


def test_mismatched_placeholders_are_an_error(tiny):
    model, processor = tiny
    batch = processor([tone(1.0)], ["Describe."], ["a"])
    batch["audio_lengths"] = batch["audio_lengths"] * 2
    batch["audio"] = torch.cat([batch["audio"], batch["audio"]], dim=1)
    with pytest.raises(ValueError, match="audio placeholders"):
        model(**batch)
