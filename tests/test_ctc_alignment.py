"""loss.lambda_ctc (CTC of the audio tokens onto the LLM's input embeddings), loss.lambda_ce 0 (an alignment step
without the LLM) and projector.output_norm (audio tokens at the text embeddings' scale)."""
import pytest
import torch

from conftest import make_tiny_model, tone
from usam.config import USAMConfig
from usam.ctc import CTCAlignment


def test_ctc_alignment_pulls_free_tokens_onto_the_target_embeddings():
    torch.manual_seed(0)
    embeddings = torch.randn(50, 16)
    ctc = CTCAlignment(16)
    tokens = torch.nn.Parameter(torch.randn(1, 12, 16))
    target = torch.tensor([7, 3, 3, 41])  # a repeated label needs a blank between its copies
    mask = torch.ones(1, 12, dtype=torch.bool)
    opt = torch.optim.Adam([tokens, *ctc.parameters()], lr=0.05)
    first = None
    for _ in range(150):
        loss = ctc(tokens, mask, [target], embeddings)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    assert ctc.greedy(tokens.detach(), mask, embeddings) == [target.tolist()]  # the tokens spell the target


def test_ctc_alignment_skips_rows_without_target_and_ignores_padding():
    torch.manual_seed(1)
    embeddings, ctc = torch.randn(30, 8), CTCAlignment(8)
    tokens = torch.randn(2, 10, 8)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    target = torch.tensor([4, 5])
    alone = ctc(tokens[1:, :6], mask[1:, :6], [target], embeddings)
    padded = tokens.clone()
    padded[1, 6:] = 100.0  # padding content must not matter
    both = ctc(padded, mask, [torch.zeros(0, dtype=torch.long), target], embeddings)
    torch.testing.assert_close(both, alone)
    none = ctc(tokens, mask, [torch.zeros(0, dtype=torch.long)] * 2, embeddings)
    assert none.item() == 0.0 and none.requires_grad


def test_sampled_softmax_rows_keep_every_target_and_renumber_them():
    torch.manual_seed(2)
    ctc = CTCAlignment(8, vocab_rows=12)
    targets = [torch.tensor([40, 3, 3]), torch.tensor([7, 40])]
    vocab_ids, renumbered = ctc._rows(targets, 50, "cpu")
    assert vocab_ids.numel() == 12 and vocab_ids.unique().numel() == 12  # 3 needed + 9 distinct others
    for old, new in zip(targets, renumbered):
        assert vocab_ids[new].tolist() == old.tolist()
    embeddings, tokens = torch.randn(50, 8), torch.randn(2, 6, 8)
    mask = torch.ones(2, 6, dtype=torch.bool)
    torch.manual_seed(3)
    sampled = ctc(tokens, mask, targets, embeddings)
    torch.manual_seed(3)
    rows, _ = ctc._rows(targets, 50, "cpu")  # the same draw: the loss is the full CTC on those rows
    full = CTCAlignment(8, vocab_rows=None)
    full.load_state_dict(ctc.state_dict())
    position = {int(v): i for i, v in enumerate(rows)}
    torch.testing.assert_close(sampled, full(tokens, mask, [torch.tensor([position[int(t)] for t in x]) for x in targets],
                                             embeddings[rows]))


def _batch(processor, tasks):
    rate = processor.sampling_rate
    clips = [tone(1.5, sr=rate), tone(2.0, 300, seed=1, sr=rate)]
    return processor(clips, ["Transcribe the speech.", "Describe the sound."], ["a b c", "a tone"], tasks=tasks)


def test_alignment_step_without_the_llm_trains_the_connector(monkeypatch):
    model, processor = make_tiny_model(**{"loss.lambda_ce": 0.0, "loss.lambda_ctc": 1.0,
                                          "loss.ctc_tasks": ["asr", "aac"]})
    model.set_stage(1)
    model.train()

    def no_llm(*args, **kwargs):
        raise AssertionError("the LLM ran in an alignment step")

    monkeypatch.setattr(model.llm, "forward", no_llm)
    out = model(**_batch(processor, ["asr", "aac"]))
    assert out.logits is None and float(out.ce_loss) == 0.0 and float(out.ctc_loss) > 0
    torch.testing.assert_close(out.loss, 1.0 * out.ctc_loss + 0.5 * out.sacl_loss + 0.01 * out.balance_loss)
    out.loss.backward()
    assert model.projector.experts[0][2].weight.grad.abs().sum() > 0 and model.ctc.blank.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.llm.named_parameters())


def test_ctc_only_on_the_configured_tasks_and_batch_independent():
    model, processor = make_tiny_model(**{"loss.lambda_ctc": 0.3})
    model.eval()
    with torch.no_grad():
        mixed = model(**_batch(processor, ["asr", "aac"]))
        nothing = model(**_batch(processor, ["aac", "aac"]))
        single = model(**processor([tone(1.5, sr=processor.sampling_rate)], ["Transcribe the speech."], ["a b c"],
                                   tasks=["asr"]))
    assert float(nothing.ctc_loss) == 0.0
    torch.testing.assert_close(mixed.ctc_loss, single.ctc_loss, rtol=1e-4, atol=1e-5)  # the aac row is not scored
    torch.testing.assert_close(mixed.loss - mixed.ce_loss - 0.5 * mixed.sacl_loss - 0.01 * mixed.balance_loss,
                               0.3 * mixed.ctc_loss, rtol=1e-4, atol=1e-5)


def test_output_norm_starts_audio_tokens_at_the_text_embedding_scale(tmp_path):
    from usam import USAMModel

    model, processor = make_tiny_model(**{"projector.output_norm": True, "loss.lambda_ctc": 0.5})
    model.eval()
    batch = _batch(processor, ["asr", "aac"])
    embed_rms = model.llm.get_input_embeddings().weight.pow(2).mean().sqrt()
    with torch.no_grad():
        embeds, _, info = model._inputs_embeds(batch["input_ids"], batch["attention_mask"], batch["instruction_mask"],
                                               batch["audio"], batch["audio_lengths"], None, None)
        out = model(**batch)
    valid = info["tokens"][info["mask"]]
    torch.testing.assert_close(valid.pow(2).mean(-1).sqrt(), embed_rms.expand(valid.shape[0]), rtol=1e-3, atol=1e-4)
    assert 0.5 < float(out.audio_norm_ratio) < 2.0  # the health figure the trainer logs
    assert -1.0 <= float(out.audio_clip_cosine) <= 1.0
    model.save_pretrained(tmp_path / "m")
    again = USAMModel.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        reloaded = again(**batch)
    torch.testing.assert_close(reloaded.ctc_loss, out.ctc_loss)
    torch.testing.assert_close(again.projector.output_norm.weight, model.projector.output_norm.weight)


def _only_whisper():
    return dict(whisper={"architecture": {}}, beats={"enabled": False}, mert={"enabled": False},
                llm={"architecture": {}})


def test_loss_settings_are_checked():
    with pytest.raises(ValueError, match="loss.lambda_ctc must be >= 0"):
        USAMConfig(**_only_whisper(), loss={"lambda_ctc": -1.0}).validate()
    with pytest.raises(ValueError, match=r"loss.ctc_tasks: unknown task\(s\) \['speech'\]"):
        USAMConfig(**_only_whisper(), loss={"ctc_tasks": ["speech"]}).validate()


def test_vocabulary_embeddings_are_what_the_llm_reads():
    """The (V, D) table the CTC head and the posterior tokens score against: a plain embedding gives its weight
    without copying it; an embedding whose forward scales its rows (as Gemma's does) is read through its forward."""
    from conftest import make_tiny_model
    from torch import nn

    model, _ = make_tiny_model(**{"loss.lambda_ctc": 0.3})
    table = model.llm.get_input_embeddings()
    assert type(table) is nn.Embedding
    rows = model._vocabulary_embeddings()
    assert rows.data_ptr() == table.weight.data_ptr()
    assert torch.equal(rows, table(torch.arange(table.num_embeddings)))

    class Scaled(nn.Embedding):
        def forward(self, ids):
            return super().forward(ids) * 2.0

    scaled = Scaled(table.num_embeddings, table.embedding_dim)
    scaled.weight.data.copy_(table.weight.data)
    model.llm.set_input_embeddings(scaled)
    assert torch.allclose(model._vocabulary_embeddings(), 2.0 * table.weight)
