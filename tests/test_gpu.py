"""Checks that need CUDA (`pytest -m gpu`, run by scripts/gpu_check.sh); each skips without a GPU."""
import pytest
import torch

from tests.conftest import make_tiny_model, tone

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_tiny_recipe_trains_in_bf16_with_torch_fused_adamw(tmp_path):
    from usam.training.testing import tiny_train_config, train_losses, write_corpus
    from usam.training.trainer import Trainer

    manifest = write_corpus(tmp_path / "data", 6)
    cfg = tiny_train_config(tmp_path / "run", manifest, {"optim.torch_adam": None, "data.bucketing": False,
                                                         "data.batch_size": 3})
    trainer = Trainer(cfg)
    trainer.run()
    assert trainer.ds_config["bf16"]["enabled"] is True
    assert next(trainer.model.qformer.parameters()).dtype == torch.bfloat16
    inner = getattr(trainer.engine.optimizer, "optimizer", trainer.engine.optimizer)
    assert isinstance(inner, torch.optim.AdamW) and inner.defaults.get("fused") is True
    losses = [loss for _, loss, _ in train_losses(tmp_path / "run")]
    assert len(losses) == 3 and all(loss == loss for loss in losses)


def test_llm_uses_a_fused_attention_kernel():
    model, _ = make_tiny_model()
    assert model.llm.config._attn_implementation in ("sdpa", "flash_attention_2")


def test_bf16_model_on_gpu_tracks_fp32():
    model, processor = make_tiny_model()
    model.eval().cuda()
    batch = {k: v.cuda() if isinstance(v, torch.Tensor) else v
             for k, v in processor([tone(1.0, 300), tone(1.5, 600, seed=1)], ["Describe.", "Describe."],
                                   ["a tone", "la la"]).items()}
    with torch.no_grad():
        expected = model(**batch).loss
        got = model.to(torch.bfloat16)(**batch).loss
    assert float(got) == pytest.approx(float(expected), rel=0.05)


def test_collated_batches_pin():
    from usam.training.collate import Collated

    collated = Collated(samples=[], skipped=[], batch={"audio": torch.zeros(2, 16000)}).pin_memory()
    assert collated.batch["audio"].is_pinned()
