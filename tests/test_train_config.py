"""Every training and DeepSpeed config loads; overrides, validation errors and the saved resolved config."""
from pathlib import Path

import pytest

from usam.training.config import TrainConfig, load_deepspeed_config, load_train_config, parse_overrides

REPO = Path(__file__).resolve().parents[1]
TRAIN_CONFIGS = sorted((REPO / "configs" / "train").glob("*.yaml"))
DS_CONFIGS = sorted((REPO / "configs" / "deepspeed").glob("*.json"))


def test_config_folders_are_not_empty():
    assert {p.name for p in TRAIN_CONFIGS} >= {"stage1_tiny.yaml", "stage2_tiny.yaml", "stage1.yaml", "stage2.yaml"}
    assert {p.name for p in DS_CONFIGS} == {"zero2.json", "zero3.json", "zero3_offload.json"}


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_every_train_config_loads(path):
    cfg = load_train_config(path)
    assert cfg.model and cfg.stage in (1, 2)
    assert cfg.model_config().enabled_encoders
    if path.name.startswith("stage"):  # the recipe's own configs (demo configs get their data filled in)
        assert cfg.data.train and cfg.optim.weight_decay == 1e-6 and cfg.schedule.warmup_ratio == 0.13
    ds = load_deepspeed_config(cfg, world_size=2, cuda=False)
    assert ds["train_batch_size"] == 2 * cfg.schedule.grad_accum


@pytest.mark.parametrize("path", DS_CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("cuda", [False, True])
def test_every_deepspeed_config_loads(path, cuda):
    cfg = load_train_config("configs/train/stage1_tiny.yaml", {"deepspeed": str(path), "schedule.grad_accum": 4})
    ds = load_deepspeed_config(cfg, world_size=8, cuda=cuda)
    assert ds["zero_optimization"]["stage"] in (2, 3)
    assert ds["gradient_accumulation_steps"] == 4 and ds["train_batch_size"] == 32
    assert ds["gradient_clipping"] == 1.0
    assert ds["bf16"]["enabled"] is cuda  # bf16 on GPU, fp32 on CPU
    params = ds["optimizer"]["params"]
    assert ds["optimizer"]["type"] == "AdamW" and params["weight_decay"] == 1e-6
    offload = "offload_optimizer" in ds["zero_optimization"]
    assert params["torch_adam"] is (not offload)  # tiny config asks for torch's AdamW; offload needs CPU Adam
    assert "auto" not in str(ds)


def test_overrides_reach_every_section_and_the_model(tmp_path):
    cfg = load_train_config("configs/train/stage1_tiny.yaml", [
        "optim.lr=1e-4", "schedule.max_steps=7", "model.llm.gradient_checkpointing=true", "data.train=[a.jsonl]",
        f"output_dir={tmp_path}", "deepspeed_overrides={zero_optimization.stage: 3}"])
    assert cfg.optim.lr == 1e-4 and cfg.schedule.max_steps == 7
    assert cfg.model["llm"]["gradient_checkpointing"] is True
    assert cfg.model_config().llm.gradient_checkpointing is True
    assert [s.manifest for s in cfg.data.train] == ["a.jsonl"] and cfg.data.train[0].weight == 1.0
    assert load_deepspeed_config(cfg, 1, False)["zero_optimization"]["stage"] == 3
    cfg.save(tmp_path / "resolved.yaml")
    again = load_train_config(tmp_path / "resolved.yaml")
    assert again == cfg and isinstance(again, TrainConfig)


def test_bad_configs_fail_with_the_key_named():
    with pytest.raises(ValueError, match="unknown key.*'lrr'"):
        load_train_config("configs/train/stage1_tiny.yaml", ["optim.lrr=1"])
    with pytest.raises(ValueError, match="qformer.*unknown key.*'widht'"):
        load_train_config("configs/train/stage1_tiny.yaml", ["model.qformer.widht=3"])
    with pytest.raises(ValueError, match="stage"):
        load_train_config("configs/train/stage1_tiny.yaml", ["stage=3"])
    with pytest.raises(ValueError, match="unknown task"):
        load_train_config("configs/train/stage1_tiny.yaml", ["data.task_weights={speech: 2}"])
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["optim.lr"])
    assert parse_overrides(["a.b=1e-5", "c=[1, 2]", "d=null"]) == {"a.b": 1e-5, "c": [1, 2], "d": None}
