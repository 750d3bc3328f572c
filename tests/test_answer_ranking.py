"""Closed-set scoring (model.score_answers, `usam eval --cls-mode rank`): each label's score is the joint score its
complete answer gets, against a brute-force computation from the training forward and a full-vocabulary CTC."""
import json

import pytest
import torch

LABELS = ["dog bark", "siren", "a longer label of five words"]


def _model(**extra):
    from conftest import make_tiny_model

    model, processor = make_tiny_model(**{"loss.lambda_ctc": 0.3, **extra})
    return model.eval(), processor


def _clips():
    from conftest import tone

    return [tone(1.5, 330), tone(2.4, 520, seed=3)], ["Classify the audio.", "Which sound is it?"]


def _answers(processor):
    return [processor.answer_token_ids(label) for label in LABELS]


def test_answer_tokens_are_what_training_labels():
    model, processor = _model()
    clips, prompts = _clips()
    for label, answer in zip(LABELS, _answers(processor)):
        batch = processor(clips[:1], prompts[:1], answers=[label])
        labelled = batch["input_ids"][0][batch["labels"][0] != -100].tolist()
        assert labelled[: len(answer)] == answer  # the answer, then its end-of-turn token
        assert answer[-1] == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert processor.tokenizer.decode(answer[:-1]) == label


def test_llm_scores_equal_the_training_forward_log_likelihood():
    """Weight 0: the sum of log p over the answer tokens and the end token, as the full (prompt + answer) forward
    gives them, for every sample and label."""
    model, processor = _model()
    clips, prompts = _clips()
    answers = _answers(processor)
    with torch.no_grad():
        scores = model.score_answers(**processor(clips, prompts), answers=answers)
        for b in range(2):
            for k, label in enumerate(LABELS):
                batch = processor(clips[b: b + 1], prompts[b: b + 1], answers=[label])
                logits = model(**batch, logits_to_keep="all").logits[0, :-1].float().log_softmax(-1)
                ids = batch["input_ids"][0, 1:]
                start = int((batch["labels"][0] != -100).nonzero()[0]) - 1
                want = sum(float(logits[start + i, ids[start + i]]) for i in range(len(answers[k])))
                assert scores[b, k].item() == pytest.approx(want, abs=1e-3)


def test_ctc_scores_equal_a_full_vocabulary_ctc_and_the_weight_mixes_them():
    model, processor = _model()
    clips, prompts = _clips()
    answers = _answers(processor)
    batch = processor(clips, prompts)
    with torch.no_grad():
        llm = model.score_answers(**batch, answers=answers)
        ctc = model.score_answers(**batch, answers=answers, ctc_weight=1.0)
        half = model.score_answers(**batch, answers=answers, ctc_weight=0.5)
        _, _, info = model._inputs_embeds(batch["input_ids"], None, batch["instruction_mask"], batch["audio"],
                                          batch["audio_lengths"], batch["audio_sample_index"], None, for_llm=False)
        table = model._vocabulary_embeddings()
        log_probs = model.ctc.logits(info["tokens"], table).log_softmax(-1)
    for b in range(2):
        frames = log_probs[b][info["mask"][b]]
        for k, answer in enumerate(answers):
            target = torch.tensor(answer[:-1])
            want = -torch.nn.functional.ctc_loss(frames[:, None], target[None], torch.tensor([frames.shape[0]]),
                                                 torch.tensor([len(target)]), blank=table.shape[0], reduction="sum")
            assert ctc[b, k].item() == pytest.approx(want.item(), rel=1e-4)
    assert torch.allclose(half, 0.5 * llm + 0.5 * ctc, atol=1e-4)


def test_a_batch_scores_as_each_sample_alone():
    model, processor = _model()
    clips, prompts = _clips()
    answers = _answers(processor)
    with torch.no_grad():
        together = model.score_answers(**processor(clips, prompts), answers=answers, ctc_weight=0.3)
        for b in range(2):
            alone = model.score_answers(**processor(clips[b: b + 1], prompts[b: b + 1]), answers=answers,
                                        ctc_weight=0.3)
            assert torch.allclose(together[b], alone[0], atol=1e-3)
        # one prompt x answer row per pass (the cap on the repeated KV cache) scores the same
        assert torch.allclose(model.score_answers(**processor(clips, prompts), answers=answers, ctc_weight=0.3,
                                                  max_rows=1), together, atol=1e-3)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_answers_score_as_repeated_prompt_caches(attention):
    """The packed continuation (every answer after one copy of the prompt's KV cache, behind a 4D mask) gives the
    scores of K repeated caches, for answers of 1 to 7 tokens, in hybrid mode (whose inference reuses the CTC
    head's logits) at CTC weights 0 and 0.4."""
    model, processor = _model(**{"audio_tokens.mode": "hybrid"})
    model.llm.config._attn_implementation = attention
    assert model._takes_custom_masks()
    clips, prompts = _clips()
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    answers = [[end], *_answers(processor)]  # the empty answer: its end token alone
    assert sorted({len(a) for a in answers})[0] == 1 and max(len(a) for a in answers) >= 5
    batch = processor(clips, prompts)
    with torch.no_grad():
        for weight in (0.0, 0.4):
            packed = model.score_answers(**batch, answers=answers, ctc_weight=weight)
            model._takes_custom_masks = lambda: False
            repeated = model.score_answers(**batch, answers=answers, ctc_weight=weight)
            del model._takes_custom_masks
            assert packed.shape == (2, len(answers))
            assert torch.allclose(packed, repeated, atol=1e-4), (packed, repeated)


def test_inference_ctc_logits_equal_the_heads_own():
    """Under no_grad the audio path keeps the CTC head's full logits, which joint decoding and answer scores
    read; they are the head's logits of the same tokens (and training keeps none: it needs its own graph)."""
    model, processor = _model(**{"audio_tokens.mode": "hybrid"})
    clips, prompts = _clips()
    batch = processor(clips, prompts)
    args = (batch["input_ids"], batch["attention_mask"], batch["instruction_mask"], batch["audio"],
            batch["audio_lengths"], batch["audio_sample_index"], None)
    with torch.no_grad():
        _, _, info = model._inputs_embeds(*args)
        assert torch.equal(info["ctc_logits"], model.ctc.logits(info["tokens"], model._vocabulary_embeddings()))
    _, _, trained = model._inputs_embeds(*args)
    assert "ctc_logits" not in trained


def test_bad_arguments_are_refused():
    from usam.evaluation.generation import GenerationSettings

    model, processor = _model()
    plain, _ = _model(**{"loss.lambda_ctc": 0.0})
    clips, prompts = _clips()
    batch = processor(clips, prompts)
    with pytest.raises(ValueError, match="at least one answer"):
        model.score_answers(**batch, answers=[])
    with pytest.raises(ValueError, match="CTC alignment head"):
        plain.score_answers(**batch, answers=_answers(processor), ctc_weight=0.5)
    with pytest.raises(ValueError, match="cls_mode"):
        GenerationSettings(cls_mode="vote")
    with pytest.raises(ValueError, match="cls_ctc_weight"):
        GenerationSettings(cls_ctc_weight=-0.1)
    # ranked labels: their own weight when set, else the transcripts'; none when cls is not decoded with the CTC
    settings = GenerationSettings(cls_mode="rank", ctc_weight=0.5, ctc_tasks=("asr", "cls"), cls_ctc_weight=0.8)
    assert settings.rank_ctc_weight("cls") == 0.8
    assert GenerationSettings(cls_mode="rank", ctc_weight=0.5, ctc_tasks=("cls",)).rank_ctc_weight("cls") == 0.5
    assert GenerationSettings(cls_mode="rank", ctc_weight=0.5, cls_ctc_weight=0.8).rank_ctc_weight("cls") == 0.0


def test_eval_ranks_cls_items_over_the_label_set(tmp_path):
    """`usam eval --cls-mode rank` answers every cls item with a label of the set (nothing unmapped), the label
    the model scores best; the other tasks of a mixed manifest are still generated."""
    import soundfile as sf
    from conftest import tone

    from usam.evaluation.generation import BatchGenerator, GenerationSettings
    from usam.evaluation.runner import evaluate

    model, processor = _model()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    rows = []
    for i, (label, freq) in enumerate([("dog bark", 300), ("siren", 700), ("dog bark", 450), ("siren", 900)]):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, tone(1.0 + 0.3 * i, freq, seed=i), 16000)
        rows.append({"key": f"c{i}", "audio": str(path), "task": "cls", "text": label})
    rows.append({"key": "a0", "audio": str(tmp_path / "c0.wav"), "task": "asr", "text": "hello there"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = GenerationSettings(cls_mode="rank", ctc_weight=0.5, ctc_tasks=("cls",), max_new_tokens=4)
    report = evaluate(folder, None, tmp_path / "out", manifest=manifest, settings=settings, progress=False)
    predictions = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    cls = [p for p in predictions if p["task"] == "cls"]
    assert all(p["prediction"] in ("dog bark", "siren") for p in cls)
    assert report["metrics"]["cls"]["unmapped_rate"] == 0.0
    assert report["generation"]["cls_mode"] == "rank"
    with torch.no_grad():
        best = BatchGenerator(model, processor, settings).rank([tone(1.0, 300, seed=0)], ["Classify the audio. "
                                                              "Answer with the label only."], ["dog bark", "siren"])
    assert best.texts[0] == cls[0]["prediction"] and best.finished == [True]


def test_rank_weights_script_scores_every_weight_from_one_pass(tmp_path):
    """scripts/rank_weights.py: the accuracy at each weight, from the LLM and CTC scores it writes."""
    import importlib.util
    from pathlib import Path

    import soundfile as sf
    from conftest import tone

    model, _ = _model()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    rows = []
    for i, (label, freq) in enumerate([("dog bark", 300), ("siren", 700), ("rain", 450)]):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, tone(1.0 + 0.2 * i, freq, seed=i), 16000)
        rows.append({"key": f"c{i}", "audio": str(path), "task": "cls", "text": label})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    script = Path(__file__).resolve().parents[1] / "scripts" / "rank_weights.py"
    spec = importlib.util.spec_from_file_location("rank_weights", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "w.json"
    assert module.main([str(folder), str(manifest), "--weights", "0", "0.5", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    llm, ctc = torch.tensor(result["llm"]), torch.tensor(result["ctc"])
    assert llm.shape == ctc.shape == (3, 3) and result["labels"] == ["dog bark", "rain", "siren"]
    truth = torch.tensor([0, 2, 1])
    for w in ("0", "0.5", "1"):
        best = ((1 - float(w)) * llm + float(w) * ctc).argmax(-1)
        assert result["accuracy"][w] == pytest.approx(100.0 * float((best == truth).float().mean()), abs=0.01)


def test_pick_rank_weight_chooses_on_validation_and_reports_the_tests(tmp_path):
    """scripts/pick_rank_weight.py: the best mean validation accuracy over models picks the weight (ties: the
    smaller), and each test set is summarised at it (mean and range over the models)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "pick_rank_weight.py"
    spec = importlib.util.spec_from_file_location("pick_rank_weight", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def write(name, accuracy):
        path = tmp_path / name
        path.write_text(json.dumps({"accuracy": accuracy}))
        return str(path)

    valid = [write("v0.json", {"0": 80.0, "0.5": 90.0, "1": 90.0}),
             write("v1.json", {"0": 70.0, "0.5": 96.0, "1": 96.0})]
    test = [write("t0.json", {"0": 50.0, "0.5": 81.0, "1": 99.0}),
            write("t1.json", {"0": 60.0, "0.5": 85.5, "1": 98.0})]
    out = tmp_path / "pick.json"
    assert module.main(["--valid", *valid, "--test", f"held-out={','.join(test)}", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["chosen_weight"] == 0.5  # tied with 1 on validation: the smaller weight
    assert report["test"]["held-out"]["0.5"] == {"values": [81.0, 85.5], "mean": 83.25, "range": 4.5}
    with pytest.raises(SystemExit):
        module.main(["--valid", *valid, "--test", f"held-out={test[0]}"])  # one test file for two models
