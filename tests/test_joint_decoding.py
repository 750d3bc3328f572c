"""Joint CTC / LLM decoding: prefix probabilities against brute-force path sums, and generation that follows the
audio tokens' spelling as the weight grows."""
import itertools

import pytest
import torch

from usam.joint_decoding import CTCJointLogitsProcessor, CTCPrefixScorer, clip_log_probs


def _collapse(path, blank):
    out, last = [], None
    for s in path:
        if s != last and s != blank:
            out.append(s)
        last = s
    return tuple(out)


def _brute_force(x, blank):
    """{label sequence: probability} over every path of the (T, V + 1) log-probabilities x."""
    T, K = x.shape
    p = x.exp()
    totals = {}
    for path in itertools.product(range(K), repeat=T):
        y = _collapse(path, blank)
        totals[y] = totals.get(y, 0.0) + float(torch.prod(p[torch.arange(T), torch.tensor(path)]))
    return totals


def _prefix_probability(totals, h):
    return sum(v for y, v in totals.items() if y[: len(h)] == h)


@pytest.mark.parametrize("hypothesis", [(), (0,), (1,), (0, 0), (0, 1), (2, 1, 2), (1, 1, 0)])
def test_prefix_and_final_probabilities_match_a_sum_over_every_path(hypothesis):
    torch.manual_seed(0)
    T, V = 5, 3
    x = torch.randn(1, T, V + 1).log_softmax(-1).double()
    blank = V
    totals = _brute_force(x[0], blank)
    scorer = CTCPrefixScorer(x, blank)
    r_n, r_b, psi = scorer.initial()
    sample = torch.zeros(1, dtype=torch.long)
    for i, token in enumerate(hypothesis):
        last = torch.tensor([hypothesis[i - 1] if i else -1])
        psi_all, new_n, new_b = scorer.extend(sample, r_n, r_b, last, torch.tensor([[0, 1, 2]]),
                                              torch.tensor([i == 0]))
        for c in range(V):  # every extension, not only the chosen one
            want = _prefix_probability(totals, hypothesis[:i] + (c,))
            assert psi_all[0, c].exp().item() == pytest.approx(want, rel=1e-6, abs=1e-12)
        r_n, r_b = new_n[:, token], new_b[:, token]
    assert CTCPrefixScorer.final(r_n, r_b).exp().item() == pytest.approx(totals.get(hypothesis, 0.0), rel=1e-6,
                                                                          abs=1e-12)


def test_padding_frames_and_clips_joined_per_sample():
    """Two clips of sample 0 joined in order equal one clip holding both; sample 1's padding changes nothing."""
    torch.manual_seed(1)
    V = 4
    logits = torch.randn(3, 4, V + 1)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    log_probs, lengths = clip_log_probs(logits, mask, torch.tensor([0, 0, 1]), 2, blank=V)
    assert lengths.tolist() == [5, 4]
    joined = torch.cat([logits[0, :2], logits[1, :3]]).log_softmax(-1)
    assert torch.allclose(log_probs[0, :5], joined)
    totals = _brute_force(logits[2].log_softmax(-1).double(), V)
    scorer = CTCPrefixScorer(log_probs.double(), V)
    r_n, r_b, _ = scorer.initial()
    psi, new_n, new_b = scorer.extend(torch.tensor([1]), r_n[1:], r_b[1:], torch.tensor([-1]),
                                      torch.tensor([[2]]), torch.tensor([True]))
    assert psi.exp().item() == pytest.approx(_prefix_probability(totals, (2,)), rel=1e-5)
    assert CTCPrefixScorer.final(new_n[:, 0], new_b[:, 0]).exp().item() == pytest.approx(totals[(2,)], rel=1e-5)


def _greedy(scores_fn, processor, steps, end_id):
    """Greedy decoding of one row with a fixed LLM (scores_fn(prefix) -> (V,) logits) through the processor."""
    ids = torch.zeros(1, 0, dtype=torch.long)
    for _ in range(steps):
        scores = scores_fn(ids[0].tolist())[None]
        if processor is not None:
            scores = processor(ids, scores)
        token = int(scores.argmax(-1))
        ids = torch.cat([ids, torch.tensor([[token]])], 1)
        if token == end_id:
            break
    return ids[0].tolist()


def test_weight_moves_greedy_output_from_the_llm_to_the_spelling():
    """An LLM that prefers 1 1 1 ... against frames that clearly spell 2 0 3: weight 0 keeps the LLM's text, a
    large weight writes the spelling and then ends."""
    V, end = 5, 4  # token 4 ends the answer; the CTC head has V = 5 rows and the blank 5
    spelled = [2, 5, 0, 5, 3, 5]
    x = torch.full((1, len(spelled), V + 1), -9.0)
    x[0, torch.arange(len(spelled)), torch.tensor(spelled)] = 0.0
    x = x.log_softmax(-1)

    def llm(prefix):
        s = torch.zeros(V)
        s[1] = 2.0
        s[end] = 1.0 if len(prefix) >= 3 else -5.0
        return s

    assert _greedy(llm, None, 6, end) == [1, 1, 1, 1, 1, 1]
    proc = CTCJointLogitsProcessor(x, torch.tensor([True]), 0.8, [end], blank=V, candidates=5)
    assert _greedy(llm, proc, 6, end) == [2, 0, 3, 4]
    off = CTCJointLogitsProcessor(x, torch.tensor([False]), 0.8, [end], blank=V, candidates=5)
    assert _greedy(llm, off, 6, end) == [1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("weight", [0.0, 1.5])
def test_weight_out_of_range_is_refused(weight):
    with pytest.raises(ValueError, match="ctc_weight"):
        CTCJointLogitsProcessor(torch.zeros(1, 2, 3), torch.tensor([True]), weight, [0], blank=2)


def _ctc_model(**extra):
    from conftest import make_tiny_model

    model, processor = make_tiny_model(**{"loss.lambda_ctc": 0.3, **extra})
    return model.eval(), processor


def _clips():
    from conftest import tone

    return [tone(1.5, 330), tone(2.4, 520, seed=3)], ["Transcribe the speech.", "What is said?"]


def test_joint_decoding_of_a_batch_equals_each_sample_alone():
    model, processor = _ctc_model()
    clips, prompts = _clips()
    with torch.no_grad():
        together = model.generate(**processor(clips, prompts), max_new_tokens=8, ctc_weight=0.5, ctc_candidates=4)
        for row in range(2):
            alone = model.generate(**processor([clips[row]], [prompts[row]]), max_new_tokens=8, ctc_weight=0.5,
                                   ctc_candidates=4)
            assert together[row, : alone.shape[1]].tolist() == alone[0].tolist()


def test_samples_left_out_of_joint_decoding_generate_as_without_it_and_beams_run():
    model, processor = _ctc_model()
    clips, prompts = _clips()
    batch = processor(clips, prompts)
    with torch.no_grad():
        plain = model.generate(**batch, max_new_tokens=6)
        off = model.generate(**batch, max_new_tokens=6, ctc_weight=0.5, ctc_samples=torch.tensor([False, False]))
        beams = model.generate(**batch, max_new_tokens=6, ctc_weight=0.5, num_beams=2)
    assert off.tolist() == plain.tolist()
    assert beams.shape[0] == 2


def test_heavy_weight_writes_what_sharp_audio_tokens_spell():
    """With near one-hot CTC posteriors, weight 0.9 and every token a candidate, greedy joint decoding writes the
    greedy CTC spelling and ends; the LLM alone writes something else."""
    model, processor = _ctc_model()
    clips, prompts = _clips()
    batch = processor(clips, prompts)
    with torch.no_grad():
        model.ctc.log_scale.fill_(torch.log(torch.tensor(400.0)))
        spelled = model.ctc_transcribe(**batch)
        plain = model.generate(**batch, max_new_tokens=40)
        joint = model.generate(**batch, max_new_tokens=40, ctc_weight=0.9,
                               ctc_candidates=model.llm.get_input_embeddings().num_embeddings)
    end_ids = {model.tokenizer.eos_token_id, model.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    for row, spelling in enumerate(spelled):
        assert 0 < len(spelling) < 39 and not end_ids & set(spelling)
        assert joint[row, : len(spelling)].tolist() == spelling
        assert int(joint[row, len(spelling)]) in end_ids
    assert plain.tolist() != joint.tolist()


def test_joint_decoding_needs_the_ctc_head():
    from conftest import make_tiny_model

    model, processor = make_tiny_model()
    clips, prompts = _clips()
    with pytest.raises(ValueError, match="CTC alignment head"):
        model.generate(**processor(clips, prompts), max_new_tokens=2, ctc_weight=0.5)


def test_batch_generator_decodes_jointly_only_the_samples_of_ctc_tasks():
    from usam.evaluation.generation import BatchGenerator, GenerationSettings

    model, processor = _ctc_model()
    clips, prompts = _clips()
    vocab = model.llm.get_input_embeddings().num_embeddings
    with torch.no_grad():
        model.ctc.log_scale.fill_(torch.log(torch.tensor(400.0)))
        spelled = model.ctc_transcribe(**processor(clips, prompts))
        plain = BatchGenerator(model, processor)(clips, prompts, 40)
        settings = GenerationSettings(ctc_weight=0.9, ctc_candidates=vocab, ctc_tasks=["asr"])
        mixed = BatchGenerator(model, processor, settings)(clips, prompts, 40, tasks=["asr", "aac"])
    assert mixed.texts[0] == processor.batch_decode(torch.tensor([spelled[0]]))[0]
    assert mixed.texts[0] != plain.texts[0] and mixed.texts[1] == plain.texts[1]
    assert settings.as_dict()["ctc_tasks"] == ["asr"]
    with pytest.raises(ValueError, match="ctc_weight must be in"):
        GenerationSettings(ctc_weight=2.0)


def test_greedy_spellings_merge_repeats_drop_blanks_and_padding():
    from usam.joint_decoding import greedy_spellings

    blank = 3
    best = torch.tensor([[0, 0, 3, 0, 1, 1, 3, 3], [2, 3, 2, 2, 3, 3, 3, 3]])  # row 1: padding frames are blank
    x = torch.full((2, 8, 4), -9.0).scatter(-1, best[..., None], 0.0)
    assert greedy_spellings(x, blank) == [[0, 0, 1], [2, 2]]


@pytest.mark.parametrize("answer", [(), (0,), (1, 1), (2, 0, 1)])
def test_sequence_log_probs_match_a_sum_over_every_path(answer):
    from usam.joint_decoding import sequence_log_probs

    torch.manual_seed(2)
    T, V = 5, 3
    x = torch.randn(1, T, V + 1).log_softmax(-1).double()
    want = _brute_force(x[0], V).get(answer, 0.0)
    got = sequence_log_probs(x, torch.tensor([T]), [[list(answer)]], blank=V)
    assert got.shape == (1, 1) and got.exp().item() == pytest.approx(want, rel=1e-6, abs=1e-12)


def _joint_score(model, processor, clip, prompt, answer, weight):
    """The joint score of one whole answer (with its end token) by score_answers, an independent path."""
    with torch.no_grad():
        return model.score_answers(**processor([clip], [prompt]), answers=[answer], ctc_weight=weight)[0, 0].item()


def test_rescoring_keeps_the_better_of_the_decoded_answer_and_the_spelling():
    """Per sample, the rescored answer is whichever of the search's answer and the greedy CTC spelling scores
    higher as a whole answer (checked through score_answers); without rescoring generate is the search alone."""
    model, processor = _ctc_model()
    clips, prompts = _clips()
    batch = processor(clips, prompts)
    end_ids = {model.tokenizer.eos_token_id, model.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    vocab = model.llm.get_input_embeddings().num_embeddings  # every token a candidate, so the searches end
    chosen = {"searched": 0, "spelled": 0}
    for scale, weight in itertools.product((3.0, 400.0), (0.3, 0.9)):  # flat CTC posteriors to sharp ones
        with torch.no_grad():
            model.ctc.log_scale.fill_(torch.log(torch.tensor(scale)))
            spelled = model.ctc_transcribe(**batch)
            searched = model.generate(**batch, max_new_tokens=40, ctc_weight=weight, ctc_candidates=vocab,
                                      ctc_rescore=False)
            rescored = model.generate(**batch, max_new_tokens=40, ctc_weight=weight, ctc_candidates=vocab)
        for row in range(2):
            said = searched[row].tolist()
            end = next((i for i, t in enumerate(said) if t in end_ids), None)
            if end is None:  # an unfinished answer is not rescored
                assert rescored[row].tolist()[: len(said)] == said
                chosen["unfinished"] = chosen.get("unfinished", 0) + 1
                continue
            said = said[: end + 1]
            spelt = spelled[row] + [said[-1]]
            got = rescored[row].tolist()[: max(len(said), len(spelt))]
            scores = [_joint_score(model, processor, clips[row], prompts[row], a, weight) for a in (said, spelt)]
            best = spelt if scores[1] > scores[0] else said
            assert got[: len(best)] == best
            chosen["spelled" if best is spelt and spelt != said else "searched"] += 1
    assert chosen["spelled"] and chosen["searched"] and "unfinished" not in chosen  # both outcomes were exercised


def test_rescoring_of_a_batch_equals_each_sample_alone():
    model, processor = _ctc_model()
    clips, prompts = _clips()
    joint = {"max_new_tokens": 20, "ctc_weight": 0.3,
             "ctc_candidates": model.llm.get_input_embeddings().num_embeddings}
    with torch.no_grad():
        model.ctc.log_scale.fill_(torch.log(torch.tensor(3.0)))  # flat posteriors: one sample takes its spelling
        together = model.generate(**processor(clips, prompts), **joint)
        assert together.tolist() != model.generate(**processor(clips, prompts), **joint, ctc_rescore=False).tolist()
        for row in range(2):
            alone = model.generate(**processor([clips[row]], [prompts[row]]), **joint)
            assert together[row, : alone.shape[1]].tolist() == alone[0].tolist()


def test_eval_cli_turns_rescoring_off():
    import argparse

    from usam.commands.eval import add_generation_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_generation_arguments(parser)
    on = settings_from_args(parser.parse_args(["--ctc-weight", "0.5"]))
    off = settings_from_args(parser.parse_args(["--ctc-weight", "0.5", "--no-ctc-rescore"]))
    assert on.ctc_rescore and not off.ctc_rescore
    assert on.joint_kwargs(["asr"], 1)["ctc_rescore"] and not off.joint_kwargs(["asr"], 1)["ctc_rescore"]


def test_answer_scores_after_a_kept_prompt_cache_equal_a_fresh_prompt_pass():
    """Rescoring reuses generation's KV cache (cut back to the prompt but its last position) instead of running
    the prompts again; both give the same answer log-likelihoods."""
    from usam.ragged import drop_unattended

    model, processor = _ctc_model()
    clips, prompts = _clips()
    batch = processor(clips, prompts)
    answers = torch.tensor([[[5, 9, 2], [7, 0, 0]], [[3, 3, 4], [8, 6, 1]]])  # (B, K, A) per-sample answers
    valid = torch.tensor([[[1, 1, 1], [1, 0, 0]], [[1, 1, 1], [1, 1, 1]]], dtype=torch.bool)
    with torch.no_grad():
        embeds, mask, _ = model._inputs_embeds(batch["input_ids"], batch["attention_mask"],
                                               batch.get("instruction_mask"), batch["audio"], batch["audio_lengths"],
                                               batch.get("audio_sample_index"), None)
        embeds, mask, _ = drop_unattended(embeds, mask)
        fresh = model._answer_log_likelihoods(embeds, mask, answers, valid)
        out = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=4, do_sample=False,
                                 return_dict_in_generate=True, pad_token_id=model.tokenizer.pad_token_id)
        cache = out.past_key_values
        cache.crop(embeds.shape[1] - 1 - cache.get_seq_length())
        kept = model._answer_log_likelihoods(embeds, mask, answers, valid, cache)
    torch.testing.assert_close(kept, fresh, atol=1e-4, rtol=1e-4)
