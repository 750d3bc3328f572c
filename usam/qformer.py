"""Window-level Q-Former (docs/architecture.md, step 4), as in SALMONN: a few learned queries per window of frames.

U (B, T, D_in) is cut into windows of `w` frames every `s` frames. Windows start while their first frame is
valid, so the tail window is kept (masked inside). Each layer: self-attention over the window's queries,
cross-attention to the window's valid frames, FFN (torch's TransformerDecoderLayer does exactly this).
Output Z (B, W*q, D_q) with a mask that drops windows with no valid frame.

`FrameStack` cuts the same windows and concatenates their frames instead (qformer.kind "frame_stack").
"""
from __future__ import annotations

import torch
from torch import nn

from usam.config import QFormerSettings
from usam.ragged import masked_mean
from usam.rhythm import local_tempogram


def cut_windows(frames: torch.Tensor, mask: torch.Tensor, window: int, stride: int):
    """frames (B, T, D), mask (B, T) -> windows (B, W, w, D), window mask (B, W, w).

    Windows start every `stride` frames while their start is valid in some clip; the tail is zero-padded."""
    length = frames.shape[1]
    valid = mask.sum(dim=1)
    n_windows = int(torch.div(valid.max() + stride - 1, stride, rounding_mode="floor"))
    span = (n_windows - 1) * stride + window
    x = nn.functional.pad(frames, (0, 0, 0, max(0, span - length)))[:, :span]
    m = nn.functional.pad(mask, (0, max(0, span - length)))[:, :span]
    return x.unfold(1, window, stride).permute(0, 1, 3, 2), m.unfold(1, window, stride)


class WindowQFormer(nn.Module):
    def __init__(self, settings: QFormerSettings, input_dim: int, window_frames: int, stride_frames: int):
        super().__init__()
        self.window, self.stride, self.num_queries = window_frames, stride_frames, settings.num_queries
        self.query_init = settings.query_init
        dim = settings.hidden_size
        self.input_proj = nn.Sequential(nn.LayerNorm(input_dim), nn.Linear(input_dim, dim))
        self.queries = nn.Parameter(torch.randn(settings.num_queries, dim) * 0.02)
        self.frame_position = nn.Parameter(torch.zeros(window_frames, dim))  # order of frames inside a window
        self.layers = nn.ModuleList([
            nn.TransformerDecoderLayer(dim, settings.num_heads, settings.ffn_size, settings.dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(settings.num_layers)
        ])
        self.norm = nn.LayerNorm(dim)
        self.output_dim = dim
        if self.query_init == "window_mean":
            # Residual branches start at zero, so an untrained Q-Former passes the window means straight through
            # (mean pooling, which the LLM can read from the first steps) and learns attention from there.
            # Measured on the demo (sound classes, tiny.en features, 60 steps): random branches left every clip
            # with the same answer; mean pooling reached 27.5% accuracy and rising.
            for layer in self.layers:
                for linear in (layer.self_attn.out_proj, layer.multihead_attn.out_proj, layer.linear2):
                    nn.init.zeros_(linear.weight)
                    nn.init.zeros_(linear.bias)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, D_in), mask (B, T) -> tokens (B, W*q, D_q), token mask (B, W*q)."""
        batch = frames.shape[0]
        x, m = cut_windows(self.input_proj(frames), mask, self.window, self.stride)  # (B, W, w, D), (B, W, w)
        n_windows = x.shape[1]
        window_ok = m.any(dim=-1)  # (B, W)
        memory = (x + self.frame_position).reshape(batch * n_windows, self.window, -1)
        # an empty window attends to its (padded) frames rather than to nothing (NaN); it is masked below
        key_padding = (~m & window_ok[..., None]).reshape(batch * n_windows, self.window)
        q = self.queries.expand(batch * n_windows, -1, -1)
        if self.query_init == "window_mean":
            # (B*W, 1, D): the window's own content in the residual stream from the start; the learned queries
            # alone give every window nearly the same token until the cross-attention has learned to differ
            frame_ok = (~key_padding).unsqueeze(-1).to(memory.dtype)
            q = q + (memory * frame_ok).sum(1, keepdim=True) / frame_ok.sum(1, keepdim=True).clamp(min=1)
        for layer in self.layers:
            q = layer(q, memory, memory_key_padding_mask=key_padding)
        q = self.norm(q).reshape(batch, n_windows * self.num_queries, -1)
        token_mask = window_ok.repeat_interleave(self.num_queries, dim=1)
        return q * token_mask[..., None], token_mask


class FrameStack(nn.Module):
    """Each window's frames concatenated in order, then LayerNorm: (B, W, w*D_in), one token per window.

    No learned layer besides the LayerNorm's scale and shift, so the projector's experts read the encoder frames
    directly; unlike a mean, the stack keeps the order of the frames inside the window, which ASR needs.
    stream_dims (the encoders' widths, in the order of the common axis' channels): each encoder's stack is
    normalised on its own, so an encoder whose features are larger does not set the scale of the others'; the norms
    of the encoders after the first start at scale added_stream_scale."""

    def __init__(self, input_dim: int, window_frames: int, stride_frames: int, stream_dims: list[int] | None = None,
                 added_stream_scale: float = 1.0, rhythm_lags: int = 0):
        super().__init__()
        self.window, self.stride, self.rhythm_lags = window_frames, stride_frames, rhythm_lags
        self.output_dim = window_frames * input_dim + rhythm_lags
        # rhythm_lags > 0: each token also carries the frames' local tempogram (usam.rhythm), layer-normalised
        self.rhythm_norm = nn.LayerNorm(rhythm_lags) if rhythm_lags else None
        if stream_dims is not None and sum(stream_dims) != input_dim:
            raise ValueError(f"stream widths {stream_dims} do not add up to the input width {input_dim}")
        self.stream_dims = list(stream_dims) if stream_dims and len(stream_dims) > 1 else None
        if self.stream_dims is None:
            self.norm = nn.LayerNorm(window_frames * input_dim)
        else:
            self.norms = nn.ModuleList(nn.LayerNorm(window_frames * d) for d in self.stream_dims)
            with torch.no_grad():
                for norm in self.norms[1:]:  # the encoders added to the first start at this share of the token
                    norm.weight.fill_(added_stream_scale)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, D_in), mask (B, T) -> tokens (B, W, w*D_in), token mask (B, W)."""
        x, m = cut_windows(frames, mask, self.window, self.stride)  # (B, W, w, D_in), (B, W, w)
        x = x * m[..., None].to(x.dtype)  # padded frames of a partial window count as zeros
        window_ok = m.any(dim=-1)
        if self.stream_dims is None:
            parts = [self.norm(x.flatten(2))]
        else:  # per encoder: its w frames stacked (B, W, w*D_e) and normalised, then the encoders side by side
            parts = [norm(part.flatten(2)) for norm, part in zip(self.norms, x.split(self.stream_dims, dim=-1))]
        if self.rhythm_norm is not None:  # the window's mean tempogram (B, W, L): the beat period around it
            tempo, _ = cut_windows(local_tempogram(frames, mask, self.rhythm_lags), mask, self.window, self.stride)
            parts.append(self.rhythm_norm(masked_mean(tempo, m, dim=2).to(parts[0].dtype)))
        return torch.cat(parts, dim=-1) * window_ok[..., None], window_ok


def build_window_connector(settings: QFormerSettings, input_dim: int, window_frames: int, stride_frames: int,
                           stream_dims: list[int] | None = None, rhythm_lags: int = 0) -> nn.Module:
    """The module between the common time axis and the projector, chosen by qformer.kind. stream_dims: the
    encoders' widths, which a frame stack with qformer.stream_norm normalises apart; rhythm_lags: the frame stack's
    tempogram lags (qformer.rhythm_s in frames of the common axis; 0: none)."""
    if settings.kind == "frame_stack":
        return FrameStack(input_dim, window_frames, stride_frames, stream_dims if settings.stream_norm else None,
                          settings.added_stream_scale, rhythm_lags)
    return WindowQFormer(settings, input_dim, window_frames, stride_frames)
