"""Rhythm features: a local tempogram of the encoder frames, the periodicity that a window token cannot see.

A frame-stack token covers 0.1 s, and a beat lasts 0.35-1 s, so no single token holds the tempo; the encoders'
frames do hold the note onsets (their features jump). The local tempogram is the classic onset-autocorrelation
tempo feature (as librosa.feature.tempogram computes on an onset envelope): the autocorrelation of the frames'
rectified flux at lags 1..L, averaged over the 2L + 1 frames around each frame and divided by the flux energy
there. Written here rather than taken from librosa because it runs on the model's own frames inside the forward,
batched and masked, on whatever device they are (librosa works on one NumPy signal at a time).

Shapes: frames (B, T, D), mask (B, T) -> (B, T, L); fp32 inside whatever the autocast dtype.
"""
from __future__ import annotations

import torch
from torch import nn


def local_tempogram(frames: torch.Tensor, mask: torch.Tensor, lags: int) -> torch.Tensor:
    """(B, T, D), (B, T) -> (B, T, lags): at each valid frame t, sum_s flux(s) flux(s + lag) / sum_s flux(s)^2 over
    s within `lags` frames of t, for lag = 1..lags, where flux is the centred rectified frame difference. Padded
    frames give 0 and take no part, so a clip gives the same values alone or batched with longer ones."""
    with torch.autocast(device_type=frames.device.type, enabled=False):
        x = frames.float() * mask[..., None]
        pair = mask[:, 1:] & mask[:, :-1]  # (B, T-1): both frames of the difference valid
        flux = (x[:, 1:] - x[:, :-1]).clamp(min=0).sum(-1) * pair  # (B, T-1): large where notes start
        mean = flux.sum(1, keepdim=True) / pair.sum(1, keepdim=True).clamp(min=1)
        flux = nn.functional.pad((flux - mean) * pair, (0, 1))  # (B, T), centred per clip, zero off the clip
        length = flux.shape[1]
        ahead = nn.functional.pad(flux, (0, lags))
        products = torch.stack([flux * ahead[:, lag: lag + length] for lag in range(1, lags + 1)], 1)  # (B, L, T)
        span = 2 * lags + 1

        def local_sum(x: torch.Tensor) -> torch.Tensor:  # (N, T) -> (N, T): the sum over the span around each t
            return nn.functional.avg_pool1d(x[:, None], span, 1, lags, count_include_pad=True)[:, 0] * span

        local = local_sum(products.flatten(0, 1)).view_as(products)  # (B, L, T)
        energy = local_sum(flux.pow(2))  # (B, T)
        tempogram = local / energy[:, None].clamp(min=1e-6)
        return (tempogram * mask[:, None]).transpose(1, 2)  # (B, T, L)
