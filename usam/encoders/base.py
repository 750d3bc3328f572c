"""The interface every encoder keeps: audio at the model's input rate in, `EncoderOutput(features, mask)` out.

The model's input rate (`USAMConfig.input_sample_rate`) is the highest native rate of its enabled encoders
(16 kHz for Whisper and BEATs, 24 kHz for MERT-v1), so no encoder hears a band-limited upsampled clip. An
encoder whose native rate is lower resamples its input itself (`resample_clips`).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import julius
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
    sample_rate: int  # the rate the weights were trained at
    input_rate: int  # the rate `forward` receives (the model's input rate)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:  # audio (B, n) at input_rate
        raise NotImplementedError

    def to_native_rate(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n) at `input_rate` -> (B, m) at `sample_rate` and the new lengths; unchanged when they agree."""
        if self.input_rate == self.sample_rate:
            return audio, lengths
        return resample_clips(audio, lengths, self.input_rate, self.sample_rate)

    def architecture(self) -> dict:
        """Config fields that rebuild this encoder with random weights (used by the merged export)."""
        raise NotImplementedError


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


@functools.lru_cache(maxsize=None)
def _resampler(old_sr: int, new_sr: int, device: torch.device) -> julius.ResampleFrac:
    """julius' windowed-sinc resampler (its kernel built once per rate pair and device), fp32. Used rather than
    soxr because it runs on the batch where it lies (GPU included), inside the model's forward."""
    return julius.ResampleFrac(old_sr, new_sr).to(device)


def resample_clips(audio: torch.Tensor, lengths: torch.Tensor, old_sr: int, new_sr: int):
    """(B, n) at `old_sr` -> ((B, m) fp32 at `new_sr`, new lengths (B,)). Each clip is resampled over its own
    valid region as a lone clip would be (julius pads with the edge sample, so the padding here repeats each
    clip's last sample), and its samples after floor(length * new / old) are zero."""
    n = audio.shape[1]
    keep = torch.arange(n, device=audio.device)[None, :] < lengths[:, None]  # (B, n)
    last = audio.gather(1, (lengths - 1).clamp(min=0)[:, None])  # (B, 1)
    wave = _resampler(old_sr, new_sr, audio.device)(torch.where(keep, audio, last).float())
    new_lengths = torch.div(lengths * new_sr, old_sr, rounding_mode="floor").clamp(min=1)
    valid = torch.arange(wave.shape[1], device=wave.device)[None, :] < new_lengths[:, None]
    return wave * valid, new_lengths
