"""Stage 1 -> stage 2 hand-off, bad samples, `usam train` / `usam plot` end to end."""
import json

import torch
from safetensors.torch import load_file

from usam.training.testing import tiny_train_config, train_losses, write_corpus
from usam.training.trainer import train


def _frozen_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


def test_stage1_to_stage2_handoff(tmp_path):
    from usam.modeling import USAMModel

    manifest = write_corpus(tmp_path / "data", 8)
    s1 = tmp_path / "s1"
    train(tiny_train_config(s1, manifest, overrides={"schedule.max_steps": 2}))
    stage1 = USAMModel.from_pretrained(s1 / "final")
    stage1.set_stage(1)
    s2 = tmp_path / "s2"
    # (stage 2 also runs with gradient checkpointing of the LLM)
    overrides = {"stage": 2, "init_from": str(s1 / "final"), "schedule.max_steps": 2,
                 "model.llm.gradient_checkpointing": True}
    cfg = tiny_train_config(s2, manifest, overrides=overrides)

    # the stage-2 model starts from exactly the stage-1 weights
    from usam.training.trainer import build_model, seed_everything
    seed_everything(cfg.seed)
    start = build_model(cfg)
    w1 = load_file(str(s1 / "final" / "usam_weights.safetensors"))
    own = start.state_dict()
    assert w1 and all(torch.equal(own[k], v) for k, v in w1.items())
    assert start.llm.is_gradient_checkpointing
    lora = [n for n, p in start.named_parameters() if p.requires_grad and "lora_" in n]
    assert lora and all(n.startswith("llm.") for n in lora)  # stage 2 trains the LLM's LoRA

    train(cfg)
    stage2 = USAMModel.from_pretrained(s2 / "final")
    # trained parts moved, frozen parts (encoders, LLM base weights) are bit-identical to stage 1
    w2 = load_file(str(s2 / "final" / "usam_weights.safetensors"))
    assert any(not torch.equal(w1[k], w2[k]) for k in w1 if k.startswith(("qformer.", "projector.")))
    frozen1 = _frozen_state(stage1)
    stage2.set_stage(2)
    frozen2 = _frozen_state(stage2)
    base_keys = [k for k in frozen2 if "lora_" not in k]
    assert len(base_keys) > 10
    for key in base_keys:
        assert torch.equal(frozen1[key], frozen2[key]), key
    a1 = {n: p for n, p in stage1.named_parameters() if "lora_B" in n}
    a2 = {n: p for n, p in stage2.named_parameters() if "lora_B" in n}
    assert any(not torch.equal(a1[k], a2[k]) for k in a1)  # LoRA trained in stage 2 only


def test_bad_samples_are_skipped_counted_and_the_run_finishes(tmp_path):
    manifest = write_corpus(tmp_path / "data", 6, bad=3)
    with open(manifest, "a") as f:  # a line whose file is missing: skipped when it is loaded, like a broken one
        f.write(json.dumps({"key": "gone", "audio": str(tmp_path / "nope.wav"), "task": "asr", "text": "x",
                            "duration": 1.0}) + "\n")
        f.write("{not json\n")  # a malformed line: dropped when the manifest is read
    out = tmp_path / "run"
    summary = train(tiny_train_config(out, manifest, overrides={
        "schedule.max_steps": None, "schedule.epochs": 1, "data.bucketing": False, "data.batch_size": 3}))
    assert summary["skipped"] == {"empty_audio": 1, "missing_file": 1, "nan_inf": 1, "not_audio": 1}
    assert summary["manifest_problems"] == {"malformed_json": 1}
    assert summary["seen"] == 10
    assert any("train_bad1.wav" in text and "empty_audio" in text for text in summary["skip_examples"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["kind"] == "train"][-1]
    assert last["skipped"] == summary["skipped"] and last["step"] == summary["step"] == 4
    assert (out / "final" / "config.json").exists()


def test_cli_train_and_plot(tmp_path, monkeypatch):
    from usam.cli import main

    manifest = write_corpus(tmp_path / "data", 6)
    valid = write_corpus(tmp_path / "data", 3, name="valid", seed=2)
    out = tmp_path / "run"
    argv = ["train", "--config", "configs/train/stage1_tiny.yaml", "--no-progress", f"output_dir={out}",
            f"data.train=[{manifest}]", f"data.valid=[{valid}]", "schedule.max_steps=2", "logging.log_every=1",
            "logging.eval_every=1", "data.max_audio_seconds=4", "optim.lr=5e-3"]
    assert main(argv) == 0
    saved = (out / "train_config.yaml").read_text()
    assert "lr: 0.005" in saved and "max_steps: 2" in saved and "whisper:" in saved  # resolved, model inline
    kinds = [json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"train", "valid", "samples", "summary"} <= set(kinds)
    train_rec = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][0]
    for key in ("loss", "ce", "sacl", "balance", "lr", "audio_s_per_s", "tokens_per_s", "peak_mem_mb", "experts"):
        assert key in train_rec
    assert list((out / "tensorboard").glob("events.*"))
    assert main(["plot", str(out)]) == 0
    assert (out / "plots" / "loss.png").stat().st_size > 1000
    assert (out / "plots" / "experts.png").stat().st_size > 1000
    assert len(train_losses(out)) == 2


def test_training_does_not_stat_every_audio_path(tmp_path, monkeypatch):
    """Every rank reads every manifest: with durations in it, reading opens and stats no audio file."""
    import os

    from usam.training.data import read_entries

    manifest = write_corpus(tmp_path / "data", 5)
    calls = []
    real_isfile, real_exists = os.path.isfile, os.path.exists
    monkeypatch.setattr(os.path, "isfile", lambda p: calls.append(p) or real_isfile(p))
    monkeypatch.setattr(os.path, "exists", lambda p: calls.append(p) or real_exists(p))
    entries, problems = read_entries(str(manifest))
    assert len(entries) == 5 and not problems
    assert not [c for c in calls if str(c).endswith(".wav")]


def test_every_training_step_runs_in_training_mode_after_validations(tmp_path, monkeypatch):
    """The loop switches the model to training mode only when it is not (at the start and after a validation):
    every training forward still runs in training mode, every validation forward in eval mode."""
    from usam.modeling import USAMModel
    from usam.training.testing import tiny_train_config
    from usam.training.trainer import train

    train_manifest = write_corpus(tmp_path / "data", 12)
    valid_manifest = write_corpus(tmp_path / "data", 4, seed=1, name="valid")
    cfg = tiny_train_config(tmp_path / "run", train_manifest, valid_manifest,
                            {"schedule.max_steps": 4, "logging.eval_every": 2, "logging.num_generate": 0})
    modes = []
    real_forward = USAMModel.forward

    def recording_forward(self, *args, **kwargs):
        now = [m.training for m in self.modules()]
        self.train()  # what training mode is: frozen parts stay in eval (USAMModel.train)
        wanted = [m.training for m in self.modules()]
        for module, mode in zip(self.modules(), now):
            module.training = mode
        modes.append((torch.is_grad_enabled(), now == wanted, not any(now)))
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(USAMModel, "forward", recording_forward)
    train(cfg, progress=False)
    steps = [as_trained for grad, as_trained, _ in modes if grad]
    validations = [all_eval for grad, _, all_eval in modes if not grad]
    assert len(steps) == 4 and all(steps)
    assert validations and all(validations)  # a validation at step 2 and after the last step
