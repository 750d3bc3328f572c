"""What a GPU user gets by default: torch's fused AdamW (DeepSpeed's CPU Adam only under optimiser offload), the
LLM's attention kernel chosen by `llm.attn_implementation`, pinned batches copied without blocking, and a ZeRO-3
final save that gathers only the weights it writes."""
import contextlib
import types

import pytest
import torch

from tests.conftest import make_tiny_model
from usam.training.config import load_deepspeed_config, load_train_config


def _optimizer(cuda: bool, *overrides):
    cfg = load_train_config("configs/train/stage1_tiny.yaml", list(overrides))
    return load_deepspeed_config(cfg, 1, cuda)["optimizer"]["params"]


def test_cuda_defaults_to_torch_fused_adamw_not_a_jit_build():
    gpu = _optimizer(True, "optim.torch_adam=null")
    assert gpu["torch_adam"] is True and gpu["fused"] is True
    cpu = _optimizer(False, "optim.torch_adam=null")
    assert cpu["torch_adam"] is True and "fused" not in cpu
    offload = _optimizer(True, "optim.torch_adam=null", "deepspeed=configs/deepspeed/zero3_offload.json")
    assert offload["torch_adam"] is False and "fused" not in offload  # ZeRO-Offload needs DeepSpeed's CPU Adam
    assert _optimizer(True, "optim.torch_adam=false")["torch_adam"] is False  # FusedAdam only when asked


def test_llm_attn_implementation_is_a_setting():
    model, _ = make_tiny_model()
    assert model.llm.config._attn_implementation == "sdpa"  # auto without CUDA / flash-attn
    model, _ = make_tiny_model(**{"llm.attn_implementation": "eager"})
    assert model.llm.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="attn_implementation.*flash3"):
        make_tiny_model(**{"llm.attn_implementation": "flash3"})


def test_auto_attention_prefers_flash_attention_on_cuda(monkeypatch):
    import importlib.util

    from usam.llm import resolve_attn_implementation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else None)
    assert resolve_attn_implementation("auto") == "flash_attention_2"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert resolve_attn_implementation("auto") == "sdpa"
    assert resolve_attn_implementation("eager") == "eager"


def test_batches_are_pinned_on_gpu_and_copied_without_blocking(tmp_path, monkeypatch):
    from usam.training.collate import Collated
    from usam.training.data import TrainData
    from usam.training.testing import tiny_train_config, write_corpus
    from usam.training.trainer import _to_device

    cfg = tiny_train_config(tmp_path / "run", write_corpus(tmp_path / "data", 4))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    loader, _ = TrainData(cfg, lambda items: items, 0, 1).loader(0)
    assert loader.pin_memory
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a: pinned.append(self) or self)
    collated = Collated(samples=[], skipped=[], batch={"audio": torch.zeros(2, 3), "tasks": ["asr", "aac"]})
    assert collated.pin_memory() is collated and len(pinned) == 1
    calls = []
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: calls.append(k) or self)
    _to_device(collated.batch, "cpu")
    assert calls == [{"non_blocking": True}]


def test_zero3_final_save_gathers_only_what_it_writes(tmp_path, monkeypatch):
    import deepspeed

    from usam.training.trainer import Trainer

    model, _ = make_tiny_model()
    model.llm_pretrained = True  # as with a hub LLM: the folder only references the base weights
    model.set_stage(1)
    gathered = []

    @contextlib.contextmanager
    def record(params, modifier_rank=None):
        gathered.extend(params)
        yield

    monkeypatch.setattr(deepspeed.zero, "GatheredParameters", record)
    trainer = types.SimpleNamespace(out=tmp_path, zero_stage=3, model=model, main=True, config_text="x: 1\n",
                                    _fp32_master_weights=contextlib.nullcontext)  # fp32 engine: nothing to swap
    trainer._write_model = lambda folder: Trainer._write_model(trainer, folder)
    Trainer.save_final(trainer)
    names = {n for n, p in model.named_parameters() if any(p is g for g in gathered)}
    assert any(n.startswith("qformer.") for n in names) and any("lora_" in n for n in names)
    assert not any(n.startswith("llm.") and "lora_" not in n for n in names)  # the save does not gather the base
    assert (tmp_path / "final" / "usam_weights.safetensors").exists()
