"""The interface every encoder keeps: audio at 16 kHz in, `EncoderOutput(features, mask)` out."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class EncoderOutput(NamedTuple):
    features: torch.Tensor  # (B, T, D) at the encoder's own frame rate
    mask: torch.Tensor  # (B, T) bool, True on valid frames


class AudioEncoder(nn.Module):
    """Base class. Subclasses set `frame_rate` (Hz), `output_dim` and implement `forward`.

    `pretrained` is True when the weights came from `name_or_path` (then a frozen encoder is not saved with
    a U-SAM checkpoint: only its reference is).
    """

    frame_rate: float
    output_dim: int
    pretrained: bool = False

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:  # audio (B, n) at 16 kHz
        raise NotImplementedError

    def architecture(self) -> dict:
        """Config fields that rebuild this encoder with random weights (used by the merged export)."""
        raise NotImplementedError


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
