"""The dtype policy: which dtype each part of U-SAM computes in, decided here and nowhere else.

- A learned module computes in its own parameters' dtype, whatever set it: DeepSpeed's bf16 engine (every
  parameter bf16, buffers fp32), `llm.dtype`, or a whole-model `model.to(torch.bfloat16)`. Callers cast a
  module's inputs at its entry with `run_in`, so fp32 activations may meet bf16 weights anywhere.
- Front ends (Whisper log-mel, Kaldi fbank, resampling, per-clip normalisation) always compute in fp32 from
  fp32 filter banks that are not module buffers (`usam.features.front_end_filters`): no cast of the model
  rounds them, and a log of a bf16 power spectrum would lose the quiet bins.
- Losses reduce in fp32: logits, SACL similarities and router statistics are cast up before any sum, softmax or
  log (`modeling`, `sacl`, `projector`).
"""
from __future__ import annotations

import torch
from torch import nn


def param_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of the module's first floating-point parameter (fp32 when it has none). Under ZeRO-3 a
    partitioned parameter keeps its dtype, so this also holds there."""
    for param in module.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def run_in(module: nn.Module, *inputs: torch.Tensor):
    """module(*inputs) with floating inputs cast to the module's parameter dtype."""
    dtype = param_dtype(module)
    return module(*(x.to(dtype) if x.is_floating_point() else x for x in inputs))
