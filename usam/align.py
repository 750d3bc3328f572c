"""Put every encoder stream on one time axis (docs/architecture.md, step 3).

Each stream is resampled over its own valid region only, by linear interpolation along time, to
ceil(seconds * rate) frames; the masks are recomputed from the clip lengths. Padding never leaks in,
so a clip's aligned features do not depend on its batch (defect 4: the paper stretched 30 s of Whisper
frames over every clip).
"""
from __future__ import annotations

import torch

from usam.encoders.base import EncoderOutput


def resample_valid(features: torch.Tensor, valid: torch.Tensor, target: torch.Tensor, max_len: int) -> torch.Tensor:
    """features (B, T, D) with `valid` (B,) frames -> (B, max_len, D) with `target` (B,) frames, zeros after.

    Sample j of the output reads the input at (j + 0.5) * valid / target - 0.5 (half-pixel centres, as
    `F.interpolate(mode="linear", align_corners=False)`), done for the whole batch with gathers.
    """
    batch, _, dim = features.shape
    j = torch.arange(max_len, device=features.device, dtype=torch.float64)[None, :]
    scale = valid.double()[:, None] / target.double()[:, None]
    pos = ((j + 0.5) * scale - 0.5).clamp(min=0)
    pos = torch.minimum(pos, (valid.double()[:, None] - 1))
    left = pos.floor().long()
    right = torch.minimum(left + 1, valid[:, None] - 1)
    frac = (pos - left.double()).to(features.dtype)[..., None]
    gather = lambda idx: torch.gather(features, 1, idx[..., None].expand(-1, -1, dim))  # noqa: E731
    out = gather(left) * (1 - frac) + gather(right) * frac
    keep = torch.arange(max_len, device=features.device)[None, :] < target[:, None]
    return out * keep[..., None]


def align_streams(streams: dict[str, EncoderOutput], target_frames: torch.Tensor) -> EncoderOutput:
    """Concatenate the streams' channels on the common axis: U (B, T, sum D_e), mask (B, T)."""
    max_len = int(target_frames.max())
    parts = []
    for out in streams.values():
        valid = out.mask.sum(dim=1)
        parts.append(resample_valid(out.features, valid, target_frames, max_len))
    mask = torch.arange(max_len, device=target_frames.device)[None, :] < target_frames[:, None]
    return EncoderOutput(torch.cat(parts, dim=-1), mask)
