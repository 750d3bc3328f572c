"""`autocast: bf16` (CPU training under torch.autocast): the same run, bf16-rounded, and a bad value named."""
import math

import pytest

from usam.training.config import load_train_config
from usam.training.testing import tiny_train_config, train_losses, write_corpus
from usam.training.trainer import train


def test_bf16_autocast_tracks_the_fp32_run(tmp_path):
    manifest = write_corpus(tmp_path / "data", 6)
    over = {"schedule.max_steps": 3, "data.batch_size": 3, "data.bucketing": False}
    train(tiny_train_config(tmp_path / "fp32", manifest, overrides=over))
    train(tiny_train_config(tmp_path / "bf16", manifest, overrides={**over, "autocast": "bf16"}))
    fp32, bf16 = train_losses(tmp_path / "fp32"), train_losses(tmp_path / "bf16")
    assert len(fp32) == len(bf16) == 3
    for (_, a, _), (_, b, _) in zip(fp32, bf16):
        assert math.isfinite(b) and b == pytest.approx(a, rel=0.05)
    assert any(a != b for (_, a, _), (_, b, _) in zip(fp32, bf16))  # bf16 matmuls really ran


def test_unknown_autocast_is_named():
    with pytest.raises(ValueError, match="autocast.*bf17"):
        load_train_config("configs/train/stage1_tiny.yaml", ["autocast=bf17"])
