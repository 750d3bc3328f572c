"""audio_tokens.mode posterior | hybrid: the LLM reads CTC posteriors times its own input embeddings."""
import pytest
import torch

from conftest import make_tiny_model, tone
from usam.audio_tokens import posterior_tokens
from usam.config import AudioTokenSettings, USAMConfig
from usam.ctc import CTCAlignment


def _sharp_frames(best: list[int | None], embeddings, ctc):
    """Tokens (1, N, D) pointing exactly at embedding rows (None: at the blank), with a scale that makes the
    posteriors nearly one-hot."""
    with torch.no_grad():
        ctc.log_scale.fill_(torch.log(torch.tensor(60.0)))
    rows = [ctc.blank.detach() if b is None else embeddings[b] for b in best]
    return torch.stack(rows)[None]


def test_posterior_tokens_drop_blanks_and_merge_runs_into_embedding_rows():
    torch.manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(40, 16), dim=-1) * 3.0
    ctc = CTCAlignment(16)
    best = [3, 3, None, 5, None, 5, 5, 9]
    tokens = _sharp_frames(best, embeddings, ctc)
    mask = torch.ones(1, len(best), dtype=torch.bool)
    out, keep = posterior_tokens(ctc, tokens, mask, embeddings, AudioTokenSettings(mode="posterior", top_k=1))
    # runs (3,3) and (5,5) collapse to their first frame; blanks drop; the repeated 5 after a blank stays
    assert keep[0].tolist() == [True, False, False, True, False, True, False, True]
    torch.testing.assert_close(out[0, keep[0]], embeddings[[3, 5, 5, 9]])
    out, keep = posterior_tokens(ctc, tokens, mask, embeddings,
                                 AudioTokenSettings(mode="posterior", top_k=1, merge_runs=False))
    assert keep[0].tolist() == [True, True, False, True, False, True, True, True]
    # a blank-best frame is dropped whatever the threshold; a low threshold also drops uncertain word frames
    _, keep = posterior_tokens(ctc, tokens, mask, embeddings,
                               AudioTokenSettings(mode="posterior", top_k=1, blank_threshold=1.0))
    assert keep[0].tolist() == [True, False, False, True, False, True, False, True]
    uncertain = tokens.clone()
    unit = lambda v: v / v.norm()  # noqa: E731
    uncertain[0, 7] = unit(embeddings[9]) + 0.95 * unit(ctc.blank.detach())  # still "9", the blank close behind
    scores = ctc.logits(uncertain, embeddings)[0, 7]
    p_blank = float(scores.softmax(-1)[-1])
    assert int(scores.argmax()) == 9 and 0.01 < p_blank < 0.99
    settings = AudioTokenSettings(mode="posterior", top_k=1, blank_threshold=p_blank - 0.005)
    assert posterior_tokens(ctc, uncertain, mask, embeddings, settings)[1][0].tolist()[7] is False
    settings = AudioTokenSettings(mode="posterior", top_k=1, blank_threshold=p_blank + 0.005)
    assert posterior_tokens(ctc, uncertain, mask, embeddings, settings)[1][0].tolist()[7] is True


def test_posterior_tokens_ignore_padding_and_soft_weights_follow_the_scores():
    torch.manual_seed(1)
    embeddings, ctc = torch.randn(30, 8), CTCAlignment(8)
    tokens = torch.randn(2, 7, 8)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    settings = AudioTokenSettings(mode="posterior", top_k=4, temperature=0.5, blank_threshold=1.0)
    alone, keep_alone = posterior_tokens(ctc, tokens[1:, :4], mask[1:, :4], embeddings, settings)
    padded = tokens.clone()
    padded[1, 4:] = 50.0
    both, keep = posterior_tokens(ctc, padded, mask, embeddings, settings)
    assert not keep[1, 4:].any()
    assert keep[1, :4].tolist() == keep_alone[0].tolist()
    torch.testing.assert_close(both[1, :4][keep[1, :4]], alone[0][keep_alone[0]])
    # top_k covering the vocabulary gives the full softmax's mixture
    full = AudioTokenSettings(mode="posterior", top_k=None, temperature=0.5, blank_threshold=1.0, merge_runs=False)
    wide = AudioTokenSettings(mode="posterior", top_k=30, temperature=0.5, blank_threshold=1.0, merge_runs=False)
    torch.testing.assert_close(posterior_tokens(ctc, tokens, mask, embeddings, full)[0],
                               posterior_tokens(ctc, tokens, mask, embeddings, wide)[0], rtol=1e-4, atol=1e-5)


def test_soft_posterior_tokens_pass_gradients_to_the_projector_tokens():
    torch.manual_seed(2)
    embeddings, ctc = torch.randn(30, 8), CTCAlignment(8)
    tokens = torch.randn(1, 6, 8, requires_grad=True)
    mask = torch.ones(1, 6, dtype=torch.bool)
    out, keep = posterior_tokens(ctc, tokens, mask, embeddings, AudioTokenSettings(mode="posterior", top_k=5,
                                                                                   blank_threshold=1.0))
    out[keep].pow(2).sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert ctc.log_scale.grad is not None


def test_audio_token_settings_are_checked_and_hybrid_doubles_the_placeholders():
    with pytest.raises(ValueError, match="audio_tokens.mode"):
        AudioTokenSettings(mode="words")
    with pytest.raises(ValueError, match="blank_threshold"):
        AudioTokenSettings(blank_threshold=0.0)
    with pytest.raises(ValueError, match="top_k"):
        AudioTokenSettings(top_k=0)
    base = USAMConfig.from_yaml("configs/model/tiny.yaml")
    hybrid = USAMConfig.from_yaml("configs/model/tiny.yaml", overrides={"audio_tokens.mode": "hybrid"})
    assert hybrid.num_audio_tokens(32000) == 2 * base.num_audio_tokens(32000)
    assert USAMConfig.from_dict(hybrid.to_dict()).audio_tokens.mode == "hybrid"


def _model(mode, **extra):
    model, processor = make_tiny_model(**{"audio_tokens.mode": mode, "audio_tokens.top_k": 4, **extra})
    with torch.no_grad():  # a scale that makes some frames clearly blank and others clearly words
        model.ctc.log_scale.fill_(3.0)
    return model.eval(), processor


def _threshold_dropping_some(model, batch):
    """A blank threshold that drops about half of this batch's frames (random weights: no fixed value does)."""
    with torch.no_grad():
        _, _, info = model._inputs_embeds(batch["input_ids"], batch["attention_mask"], batch["instruction_mask"],
                                          batch["audio"], batch["audio_lengths"], None, None)
        table = model._vocabulary_embeddings()
        p_blank = model.ctc.logits(info["tokens"], table).softmax(-1)[..., -1][info["mask"]]
    return float(p_blank.median()) + 1e-6


@pytest.mark.parametrize("mode", ["posterior", "hybrid"])
def test_generation_with_dropped_frames_equals_generation_without_them(mode):
    """The dropped and merged frames are attention holes: generating from the holed sequence gives what the LLM
    generates from the same sequence with those positions removed, for each clip of a left-padded batch."""
    model, processor = _model(mode)
    clips = [tone(1.5, 330), tone(2.4, 520, seed=3)]
    batch = processor(clips, ["Transcribe the speech.", "What is said?"])
    model.config.audio_tokens.blank_threshold = _threshold_dropping_some(model, batch)
    with torch.no_grad():
        embeds, attention, info = model._inputs_embeds(batch["input_ids"], batch["attention_mask"],
                                                       batch["instruction_mask"], batch["audio"],
                                                       batch["audio_lengths"], None, None)
        assert int((attention == 0).sum()) > int((batch["attention_mask"] == 0).sum())  # some frames dropped
        together = model.generate(**batch, max_new_tokens=6)
        for row in range(2):
            kept = attention[row].bool()
            compact = embeds[row][kept][None]
            alone = model.llm.generate(inputs_embeds=compact, attention_mask=torch.ones(1, compact.shape[1],
                                       dtype=torch.long), max_new_tokens=6, do_sample=False,
                                       pad_token_id=model.tokenizer.pad_token_id,
                                       eos_token_id=model.tokenizer.eos_token_id)
            n = alone.shape[1]
            assert together[row, :n].tolist() == alone[0].tolist()


def test_posterior_forward_trains_with_holes_and_hybrid_keeps_routing_on_the_continuous_tokens():
    model, processor = _model("hybrid", **{"loss.lambda_ctc": 0.3, "loss.ctc_tasks": ["asr"]})
    model.train()
    batch = processor([tone(1.5), tone(2.0, 300, seed=1)], ["Transcribe the speech.", "Describe the sound."],
                      ["a b c", "a tone"], tasks=["asr", "aac"])
    out = model(**batch)
    assert torch.isfinite(out.loss)
    windows = sum(model.config.num_windows(int(n)) for n in batch["audio_lengths"])
    assert out.routing_weights.shape[0] == windows  # the router sees each window once, not its posterior slot
    out.loss.backward()
    assert model.ctc.log_scale.grad is not None  # the LM loss reaches the CTC head through the posteriors


def test_hide_continuous_masks_the_continuous_half_of_chosen_tasks_in_training_only():
    model, processor = _model("hybrid", **{"audio_tokens.hide_continuous": 1.0})
    batch = processor([tone(1.5), tone(2.0, 300, seed=1)], ["Transcribe the speech.", "Describe the sound."],
                      ["a b c", "a tone"], tasks=["asr", "aac"])
    inputs = [batch[k] for k in ("input_ids", "attention_mask", "instruction_mask", "audio", "audio_lengths")]

    def attended():
        with torch.no_grad():
            _, attention, info = model._inputs_embeds(*inputs, None, None, tasks=batch["tasks"])
        placeholder = batch["input_ids"] == processor.audio_token_id
        n = info["mask"].sum(1).tolist()  # each clip's continuous tokens: the first n of its 2n placeholders
        return [attention[row][placeholder[row]][:n[row]].tolist() for row in range(2)]

    model.train()
    asr, aac = attended()
    assert not any(asr) and all(aac)  # the ASR clip reads only its spelling; the caption clip keeps both halves
    model.eval()
    assert all(all(row) for row in attended())  # inference always shows both halves
    model.train()
    model.config.audio_tokens.hide_continuous_tasks = ["aac"]
    asr, aac = attended()
    assert all(asr) and not any(aac)
    with pytest.raises(ValueError, match="hide_continuous needs mode hybrid"):
        AudioTokenSettings(mode="posterior", hide_continuous=0.5)
    with pytest.raises(ValueError, match=r"hide_continuous must be in \[0, 1\]"):
        AudioTokenSettings(mode="hybrid", hide_continuous=1.5)


def test_posterior_mode_round_trips_through_save_and_load(tmp_path):
    from usam import USAMModel

    model, processor = _model("posterior")
    batch = processor([tone(1.2, 410)], ["Transcribe the speech."])
    model.save_pretrained(tmp_path / "m")
    again = USAMModel.from_pretrained(tmp_path / "m").eval()
    assert again.config.audio_tokens.mode == "posterior"
    with torch.no_grad():
        assert model.generate(**batch, max_new_tokens=5).tolist() == again.generate(**batch, max_new_tokens=5).tolist()


def test_token_mode_probe_scores_each_reading_and_the_oracle(tmp_path):
    import subprocess
    import sys

    from usam.training.testing import write_corpus

    model, _ = make_tiny_model(**{"loss.lambda_ctc": 0.3})
    model.save_pretrained(tmp_path / "m")
    manifest = write_corpus(tmp_path / "data", 6)
    out = tmp_path / "modes.json"
    run = subprocess.run([sys.executable, "scripts/audio_token_modes.py", "--model", str(tmp_path / "m"),
                          "--manifest", str(manifest), "--limit", "3", "--max-new-tokens", "4",
                          "--reading", "top1=posterior,top_k=1", "--reading", "mixed=hybrid,temperature=0.5",
                          "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    import json

    results = json.loads(out.read_text())
    assert set(results) == {"ctc", "own", "top1", "mixed", "oracle"}
    assert all(r["wer"] >= 0 and r["n"] >= 1 for r in results.values())
    assert "oracle" in run.stdout and "top1" in run.stdout
