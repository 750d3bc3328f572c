"""Validation during training scores generated answers per task (a quality curve beside the loss curve)."""
import json

from usam.training.testing import tiny_train_config, write_corpus
from usam.training.trainer import train


def test_validation_logs_a_score_per_task(tmp_path):
    train_manifest = write_corpus(tmp_path / "data", 6)
    valid_manifest = write_corpus(tmp_path / "data", 6, seed=1, name="valid")
    tasks = {json.loads(line)["task"] for line in valid_manifest.read_text().splitlines()}
    over = {"schedule.max_steps": 2, "logging.eval_every": 2, "logging.score_per_task": 2,
            "logging.num_generate": 0, "logging.max_new_tokens": 4}
    train(tiny_train_config(tmp_path / "run", train_manifest, valid_manifest, overrides=over))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["kind"] == "valid"]
    assert valid, records
    scored = {k.split("/")[0] for k in valid[-1] if "/" in k and not k.startswith("ce/")}
    assert scored == tasks
    if "asr" in tasks:
        assert valid[-1]["asr/wer"] >= 0.0
    from usam.training.plots import plot_run

    assert "scores.png" in {p.name for p in plot_run(tmp_path / "run")}


def test_alignment_validation_scores_what_the_tokens_spell_without_generating(tmp_path, monkeypatch):
    """loss.lambda_ce 0: the LLM has not learned to read audio tokens, so validation scores the CTC transcripts of
    every loss.ctc_tasks task (`<task>/ctc_<score>`) and generates nothing; the samples it logs are CTC texts."""
    import usam.modeling

    def no_generate(*args, **kwargs):
        raise AssertionError("an alignment stage's validation generated through the LLM")

    monkeypatch.setattr(usam.modeling.USAMModel, "generate", no_generate)
    train_manifest = write_corpus(tmp_path / "data", 6)
    valid_manifest = write_corpus(tmp_path / "data", 6, seed=1, name="valid")
    tasks = {json.loads(line)["task"] for line in valid_manifest.read_text().splitlines()}
    spelled = sorted(tasks & {"asr", "cls"})
    assert spelled, tasks
    over = {"schedule.max_steps": 2, "logging.eval_every": 2, "logging.score_per_task": 2,
            "logging.num_generate": 2, "logging.max_new_tokens": 4,
            "model_overrides": {"loss.lambda_ce": 0.0, "loss.lambda_ctc": 1.0, "loss.ctc_tasks": spelled}}
    train(tiny_train_config(tmp_path / "run", train_manifest, valid_manifest, overrides=over))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["kind"] == "valid"][-1]
    scores = {k for k in valid if "/" in k and not k.startswith("ce/")}
    expected = {"asr": "asr/ctc_wer", "cls": "cls/ctc_accuracy"}
    assert scores == {expected[t] for t in spelled}, valid
    assert all(valid[k] >= 0.0 for k in scores)
    assert any(r["kind"] == "samples" for r in records)  # the logged samples came from CTC, not generate
