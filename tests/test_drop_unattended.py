"""The LLM runs only on attended positions (usam.ragged.drop_unattended): with hybrid reading most spelled-token slots
are unattended, and the training loss, its gradients and the per-position scores must not change when they go."""
import pytest
import torch

from conftest import make_tiny_model, tone


def test_rows_keep_their_attended_positions_in_order_right_aligned():
    from usam.ragged import drop_unattended

    torch.manual_seed(0)
    embeds = torch.randn(3, 6, 2, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 0], [0, 0, 1, 0, 1, 1]])
    labels = torch.full((3, 6), -100)
    labels[0, 1], labels[1, 4], labels[2, 5] = 7, 8, 9
    out, out_mask, out_labels = drop_unattended(embeds, mask, labels)
    assert out.shape == (3, 5, 2) and out_mask.tolist() == [[0, 0, 1, 1, 1], [1] * 5, [0, 0, 1, 1, 1]]
    for b in range(3):
        kept = mask[b].bool()
        n = int(kept.sum())
        assert torch.equal(out[b, 5 - n:], embeds[b, kept]) and not out[b, : 5 - n].any()
        assert torch.equal(out_labels[b, 5 - n:], labels[b, kept]) and (out_labels[b, : 5 - n] == -100).all()
    out.sum().backward()  # differentiable: the kept positions get gradient 1, the dropped ones none
    assert torch.equal(embeds.grad[..., 0], mask.float())


def test_a_label_the_dropping_would_move_is_refused():
    from usam.ragged import drop_unattended

    embeds, mask = torch.zeros(1, 4, 2), torch.tensor([[1, 0, 1, 1]])
    labels = torch.tensor([[-100, -100, 5, -100]])  # its predictor (position 1) is unattended
    with pytest.raises(ValueError, match="unattended"):
        drop_unattended(embeds, mask, labels)


def test_rows_of_very_different_lengths_run_in_two_groups():
    from usam.ragged import length_groups

    assert length_groups([40, 120, 38, 118, 45, 110]) == [[2, 0, 4], [5, 3, 1]]  # two padded passes: 3x45 + 3x120
    assert length_groups([100, 110, 95, 120]) == [[0, 1, 2, 3]]  # 15% or more saved, or one pass in batch order
    assert length_groups([7]) == [[0]]


@pytest.mark.parametrize("mode,clips,answers,passes", [
    ("hybrid", (1.0, 1.1, 1.2), ("a dog", "a cat", "a cow"), 1),  # alike: one pass
    ("continuous", (1.0, 1.1, 1.2), ("a dog", "a cat", "a cow"), 1),
    # short rows beside long ones: the LLM runs twice (short rows, long rows)
    ("hybrid", (0.6, 1.9, 1.2), ("a dog", "the cat sat on the mat", "hi"), 2),
    ("continuous", (0.2, 3.0, 2.8), ("hi", "the cat sat on the mat all day long", "a dog barks twice"), 2),
])
def test_training_loss_gradients_and_scores_match_the_full_sequence(mode, clips, answers, passes, monkeypatch):
    import usam.modeling

    groups = []
    real_groups = usam.modeling.length_groups
    monkeypatch.setattr(usam.modeling, "length_groups", lambda lengths: groups.append(real_groups(lengths)) or
                        groups[-1])
    model, processor = make_tiny_model(**{"loss.lambda_ctc": 0.3, "audio_tokens.mode": mode})
    model.set_stage(2)
    model.train()
    for module in model.modules():  # dropout off: both passes must see the same function
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    waves = [tone(seconds, 300 + 150 * i, seed=i) for i, seconds in enumerate(clips)]
    batch = dict(processor(waves, ["Transcribe the speech."] * 3, answers=list(answers), tasks=["asr"] * 3))
    tasks = batch.pop("tasks")
    results = []
    for keep in ("labels", "all"):
        model.zero_grad()
        out = model(**batch, tasks=tasks, logits_to_keep=keep)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (short, short_grads), (full, full_grads) = results
    assert len(groups[0]) == passes, groups
    if passes == 2:  # switched off (ZeRO-3 with several ranks): one pass, the same loss
        model.set_llm_row_groups(False)
        model.zero_grad()
        single = model(**batch, tasks=tasks)
        assert len(groups) == 1 and single.ce_loss.item() == pytest.approx(full.ce_loss.item(), rel=1e-5)
    assert short.logits.shape[1] < full.logits.shape[1] - 1
    assert short.ce_loss.item() == pytest.approx(full.ce_loss.item(), rel=1e-5)
    assert short_grads.keys() == full_grads.keys() and len(short_grads) > 0
    for name, grad in short_grads.items():
        torch.testing.assert_close(grad, full_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # every labelled score of the short pass is the full pass's score at that label's position
    labels = batch["labels"][:, 1:]
    for b in range(3):
        want = full.logits[b, :-1][labels[b] != -100]
        got = short.logits[b][short.logit_labels[b] != -100]
        assert torch.equal(short.logit_labels[b][short.logit_labels[b] != -100], labels[b][labels[b] != -100])
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
