"""BEATs (Chen et al., 2022), our own implementation of the official architecture.

It loads the official checkpoint (`torch.load(weights_only=True)` of a dict with `cfg` and `model`) with
strict key matching: parameter names follow the official module tree (`encoder.layers.N.self_attn.q_proj`, ...).
Tokens come out time-major with 8 frequency patches per 160 ms step; they are mean-pooled over frequency
to a 6.25 Hz time sequence (the paper's code treated frequency-major CED tokens as time: defect 3).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from usam.config import SAMPLE_RATE, BEATsSettings
from usam.encoders.base import AudioEncoder, EncoderOutput
from usam.features import ceil_div, front_end_filters, kaldi_fbank
from usam.loading import load_strict, resolve_path
from usam.precision import param_dtype

FBANK_MEAN = 15.41663  # the official normalisation constants
FBANK_STD = 6.55582


@dataclass
class BEATsArchitecture:
    """The official BEATsConfig fields (same names, same defaults)."""
    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0
    layer_norm_first: bool = False
    deep_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, cfg: dict) -> "BEATsArchitecture":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"BEATs cfg: unknown field(s) {unknown}")
        arch = cls(**cfg)
        if arch.activation_fn != "gelu":
            raise ValueError(f"BEATs cfg: activation_fn {arch.activation_fn!r} is not supported (only gelu)")
        if arch.deep_norm and arch.layer_norm_first:
            raise ValueError("BEATs cfg: deep_norm and layer_norm_first exclude each other")
        return arch


class WeightNormConv1d(nn.Module):
    """Conv1d with weight normalisation over dim 2, keeping the checkpoint's `weight_g`/`weight_v` names."""

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel) * math.sqrt(4 / (kernel * channels)))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.padding, self.groups = kernel // 2, groups
        with torch.no_grad():
            self.weight_g.copy_(torch.norm_except_dim(self.weight_v, 2, dim=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = torch._weight_norm(self.weight_v, self.weight_g, dim=2)
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class TrimLast(nn.Module):
    """Drop the extra frame an even kernel adds ("SamePad")."""

    def __init__(self, kernel: int):
        super().__init__()
        self.remove = 1 if kernel % 2 == 0 else 0

    def forward(self, x):
        return x[..., :-self.remove] if self.remove else x


class RelativeSelfAttention(nn.Module):
    def __init__(self, arch: BEATsArchitecture, has_bias_table: bool):
        super().__init__()
        dim, heads = arch.encoder_embed_dim, arch.encoder_attention_heads
        self.heads, self.head_dim = heads, dim // heads
        self.scaling = self.head_dim ** -0.5
        self.num_buckets, self.max_distance = arch.num_buckets, arch.max_distance
        self.dropout = arch.attention_dropout
        if has_bias_table:
            self.relative_attention_bias = nn.Embedding(arch.num_buckets, heads)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gated = arch.gru_rel_pos
        if self.gated:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def _buckets(self, relative: torch.Tensor) -> torch.Tensor:
        """T5-style bidirectional log buckets of relative positions."""
        half = self.num_buckets // 2
        buckets = (relative > 0).long() * half
        distance = relative.abs()
        exact = half // 2
        large = exact + (torch.log(distance.float().clamp(min=1) / exact) / math.log(self.max_distance / exact)
                         * (half - exact)).long()
        large = large.clamp(max=half - 1)
        return buckets + torch.where(distance < exact, distance, large)

    def position_bias(self, length: int, device) -> torch.Tensor:
        pos = torch.arange(length, device=device)
        return self.relative_attention_bias(self._buckets(pos[None, :] - pos[:, None])).permute(2, 0, 1)  # (H, T, T)

    def forward(self, x, key_padding: torch.Tensor | None, pos_bias: torch.Tensor | None):
        batch, length, _ = x.shape
        split = lambda t: t.view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))  # (B, H, T, d)
        # No dense (B, H, T, T) tensor unless the relative position bias needs one: without it the mask is None
        # (SDPA may pick its flash kernel) or a broadcast boolean key mask (B, 1, 1, T). BEATs' gated relative
        # bias is dense by design (a per-query gate times the shared (H, T, T) table), as in the official code.
        mask = None
        if pos_bias is not None:
            mask = pos_bias[None].to(x.dtype)  # (1, H, T, T)
            if self.gated:  # gate the shared bias per query, as the official gated relative position bias
                gate_a, gate_b = torch.sigmoid(self.grep_linear(q).view(batch, self.heads, length, 2, 4).sum(-1)).chunk(2, dim=-1)
                mask = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * mask  # (B, H, T, T)
        if key_padding is not None:
            if mask is None:
                mask = ~key_padding[:, None, None, :]  # True: attend
            else:
                mask = mask.masked_fill(key_padding[:, None, None, :], float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0, scale=self.scaling)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))


class EncoderLayer(nn.Module):
    def __init__(self, arch: BEATsArchitecture, has_bias_table: bool):
        super().__init__()
        dim = arch.encoder_embed_dim
        self.self_attn = RelativeSelfAttention(arch, has_bias_table)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, arch.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(arch.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.pre_norm = arch.layer_norm_first
        self.alpha = math.pow(2 * arch.encoder_layers, 0.25) if arch.deep_norm else 1.0
        self.dropout, self.activation_dropout = arch.dropout, arch.activation_dropout

    def _ffn(self, x):
        x = F.dropout(F.gelu(self.fc1(x)), self.activation_dropout, self.training)
        return F.dropout(self.fc2(x), self.dropout, self.training)

    def forward(self, x, key_padding, pos_bias):
        if self.pre_norm:
            x = x + F.dropout(self.self_attn(self.self_attn_layer_norm(x), key_padding, pos_bias), self.dropout, self.training)
            return x + self._ffn(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x * self.alpha + F.dropout(self.self_attn(x, key_padding, pos_bias), self.dropout, self.training))
        return self.final_layer_norm(x * self.alpha + self._ffn(x))


class TransformerEncoder(nn.Module):
    def __init__(self, arch: BEATsArchitecture):
        super().__init__()
        dim = arch.encoder_embed_dim
        self.pos_conv = nn.Sequential(WeightNormConv1d(dim, arch.conv_pos, arch.conv_pos_groups), TrimLast(arch.conv_pos), nn.GELU())
        rel = arch.relative_position_embedding
        self.layers = nn.ModuleList([EncoderLayer(arch, has_bias_table=rel and i == 0) for i in range(arch.encoder_layers)])
        if rel:  # one bias table shared by all layers, registered under every layer as in the checkpoint
            for layer in self.layers[1:]:
                layer.self_attn.relative_attention_bias = self.layers[0].self_attn.relative_attention_bias
        self.relative = rel
        self.layer_norm = nn.LayerNorm(dim)
        self.pre_norm, self.dropout, self.layerdrop = arch.layer_norm_first, arch.dropout, arch.encoder_layerdrop

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
        if key_padding is not None:  # zero the padding so that the positional conv sees what a lone clip sees
            x = x.masked_fill(key_padding[..., None], 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.pre_norm:
            x = self.layer_norm(x)
        x = F.dropout(x, self.dropout, self.training)
        pos_bias = self.layers[0].self_attn.position_bias(x.shape[1], x.device) if self.relative else None
        for layer in self.layers:
            if self.training and self.layerdrop > 0 and torch.rand(()) < self.layerdrop:
                continue
            x = layer(x, key_padding, pos_bias)
        return self.layer_norm(x) if self.pre_norm else x


class BEATsModel(nn.Module):
    """The official module tree: patch_embedding -> layer_norm -> post_extract_proj -> encoder (-> predictor)."""

    def __init__(self, arch: BEATsArchitecture):
        super().__init__()
        self.arch = arch
        p = arch.input_patch_size
        self.patch_embedding = nn.Conv2d(1, arch.embed_dim, kernel_size=p, stride=p, bias=arch.conv_bias)
        self.layer_norm = nn.LayerNorm(arch.embed_dim)
        self.post_extract_proj = (nn.Linear(arch.embed_dim, arch.encoder_embed_dim)
                                  if arch.embed_dim != arch.encoder_embed_dim else None)
        self.encoder = TransformerEncoder(arch)
        self.predictor = nn.Linear(arch.encoder_embed_dim, arch.predictor_class) if arch.finetuned_model else None

    def forward(self, fbank: torch.Tensor, frame_padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fbank (B, frames, 128) normalised, frames a multiple of the patch size -> tokens (B, steps*8, D)."""
        p = self.arch.input_patch_size
        x = self.patch_embedding(fbank.unsqueeze(1))  # (B, E, steps, 8)
        batch, dim, steps, freq = x.shape
        x = x.permute(0, 2, 3, 1).reshape(batch, steps * freq, dim)  # time-major: 8 frequency tokens per step
        x = self.layer_norm(x)
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        step_padding = frame_padding.view(batch, steps, p).all(-1)  # a step is padding only if all its frames are
        token_padding = step_padding.repeat_interleave(freq, dim=1)
        # no key mask when nothing is padded: SDPA then gets attn_mask=None (flash-eligible without relative positions)
        return self.encoder(x, token_padding if bool(token_padding.any()) else None), step_padding


def load_beats_checkpoint(path) -> tuple[BEATsModel, dict]:
    """Build BEATs from an official checkpoint file; the key names must match exactly."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "cfg" not in checkpoint or "model" not in checkpoint:
        raise ValueError(f"{path}: not an official BEATs checkpoint (expected a dict with 'cfg' and 'model')")
    arch = BEATsArchitecture.from_dict(dict(checkpoint["cfg"]))
    model = BEATsModel(arch)
    load_strict(model, dict(checkpoint["model"]), str(path))
    return model, asdict(arch)


class BEATsAudioEncoder(AudioEncoder):
    sample_rate = SAMPLE_RATE

    def __init__(self, settings: BEATsSettings, input_rate: int = SAMPLE_RATE):
        super().__init__()
        self.input_rate = input_rate
        if settings.name_or_path:
            path = resolve_path(settings.name_or_path, kind="beats")
            self.model, cfg = load_beats_checkpoint(path)
            self.pretrained = True
        else:
            self.model = BEATsModel(BEATsArchitecture.from_dict(settings.architecture))
        arch = self.model.arch
        self.patch = arch.input_patch_size
        self.output_dim = arch.encoder_embed_dim
        self.frame_rate = 100.0 / self.patch  # 10 ms fbank frames, one step per patch: 6.25 Hz

    def architecture(self) -> dict:
        return asdict(self.model.arch)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        audio, lengths = self.to_native_rate(audio, lengths)  # (B, n) at 16 kHz
        # fbank of the int16-scaled wave; frames past a clip's end take the normalised value 0
        banks = front_end_filters("kaldi", 128, audio.device)  # fp32 whatever the model's dtype (usam.precision)
        fbank, frames = kaldi_fbank(audio.float() * 2 ** 15, banks, lengths, pad_value=FBANK_MEAN)
        fbank = (fbank - FBANK_MEAN) / (2 * FBANK_STD)
        steps = ceil_div(frames, self.patch)  # the tail step is kept (padded), not dropped
        total = int(steps.max()) * self.patch
        fbank = F.pad(fbank[:, :total], (0, 0, 0, max(0, total - fbank.shape[1])))
        frame_padding = torch.arange(total, device=audio.device)[None, :] >= frames[:, None]
        tokens, step_padding = self.model(fbank.to(param_dtype(self.model)), frame_padding)
        batch, n_steps = step_padding.shape
        features = tokens.view(batch, n_steps, -1, tokens.shape[-1]).mean(dim=2)  # pool the 8 frequency tokens
        return EncoderOutput(features, ~step_padding)
