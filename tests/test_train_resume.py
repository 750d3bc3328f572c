"""Kill and resume: the resumed run reproduces the uninterrupted one bit for bit on CPU."""
import json

import pytest
from safetensors.torch import load_file

from usam.training.checkpoint import latest_checkpoint, list_checkpoints, safe_load
from usam.training.testing import tiny_train_config, train_losses, write_corpus
from usam.training.trainer import train


def test_kill_and_resume_is_exact(tmp_path):
    manifest = write_corpus(tmp_path / "data", 10, bad=1)
    # dropout on, two micro-batches per step, more than one epoch: every RNG and position matters
    over = {"schedule.max_steps": 6, "schedule.grad_accum": 2, "logging.save_every": 2, "logging.keep_last": 2,
            "model.qformer.dropout": 0.2, "model.llm.lora.dropout": 0.2, "data.max_audio_seconds": 3.0,
            "data.num_workers": 1}
    train(tiny_train_config(tmp_path / "straight", manifest, overrides=over))
    killed = tmp_path / "killed"
    out = train(tiny_train_config(killed, manifest, overrides=over), stop_after=3)  # "killed" after step 3
    assert out["stopped_early"] and latest_checkpoint(killed).name == "step_000002"
    assert not (killed / "final").exists()
    # the killed run logged step 3 after its last checkpoint: resume drops it and redoes it
    assert [s for s, _, _ in train_losses(killed)] == [1, 2, 3]
    train(tiny_train_config(killed, manifest, overrides=over), resume="latest")

    straight = train_losses(tmp_path / "straight")
    resumed = train_losses(killed)
    assert [s for s, _, _ in straight] == list(range(1, 7))
    assert resumed == straight  # losses and learning rates, exactly

    # optimiser, scheduler and sampler states at the last checkpoint are identical too
    ckpts = [p.name for p in list_checkpoints(killed)]
    assert ckpts == [p.name for p in list_checkpoints(tmp_path / "straight")] == ["step_000004", "step_000006"]
    for name in ckpts:
        a_dir, b_dir = tmp_path / "straight" / "checkpoints" / name, killed / "checkpoints" / name
        sa, sb = (json.loads((d / "trainer_state.json").read_text()) for d in (a_dir, b_dir))
        assert sa["sampler"] == sb["sampler"] and sa["micro"] == sb["micro"] == 2 * int(name[-6:])
        oa = safe_load(a_dir / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
        ob = safe_load(b_dir / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
        _assert_same(oa["optimizer_state_dict"], ob["optimizer_state_dict"])
        ma = safe_load(a_dir / "mp_rank_00_model_states.pt")
        mb = safe_load(b_dir / "mp_rank_00_model_states.pt")
        _assert_same(ma["lr_scheduler"], mb["lr_scheduler"])
        _assert_same(ma["module"], mb["module"])
        # only trainable weights in the checkpoint: no frozen encoder or LLM base weight
        assert ma["module"] and all("lora_" in k or not k.startswith("llm.") for k in ma["module"])
        assert not any(k.startswith("encoders.whisper") for k in ma["module"])
    fa = load_file(str(tmp_path / "straight" / "final" / "usam_weights.safetensors"))
    fb = load_file(str(killed / "final" / "usam_weights.safetensors"))
    _assert_same(fa, fb)


def _assert_same(a, b, where="state"):
    import torch

    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif hasattr(a, "__dict__") and type(a) is type(b):  # DeepSpeed's loss scaler object
        _assert_same(vars(a), vars(b), where)
    else:
        assert a == b, where


@pytest.mark.slow
def test_kill_and_resume_is_exact_with_zero3(tmp_path):
    """ZeRO-3 (every weight partitioned): its partitioned optimiser state resumes exactly as well."""
    manifest = write_corpus(tmp_path / "data", 10)
    over = {"deepspeed": "configs/deepspeed/zero3.json", "schedule.max_steps": 4, "logging.save_every": 2,
            "deepspeed_overrides": {"zero_optimization.stage3_param_persistence_threshold": 0},
            "model.qformer.dropout": 0.2}
    train(tiny_train_config(tmp_path / "straight", manifest, overrides=over))
    train(tiny_train_config(tmp_path / "killed", manifest, overrides=over), stop_after=3)
    train(tiny_train_config(tmp_path / "killed", manifest, overrides=over), resume=str(tmp_path / "killed"))
    assert train_losses(tmp_path / "killed") == train_losses(tmp_path / "straight")
    fa = load_file(str(tmp_path / "straight" / "final" / "usam_weights.safetensors"))
    fb = load_file(str(tmp_path / "killed" / "final" / "usam_weights.safetensors"))
    _assert_same(fa, fb)
