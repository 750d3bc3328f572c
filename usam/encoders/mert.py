"""MERT-v1 music encoder, run as transformers' `HubertModel`.

MERT-v1 checkpoints are HuBERT-shaped. Their config says `model_type: mert_model` and needs remote code;
we read the config fields that HubertConfig knows, refuse the MERT-only options that change the
computation (CQT features, deep norm, attention relaxation), check that the checkpoint's key names map
onto HubertModel's, and load strictly. Input arrives at the model's input rate, 24 kHz whenever MERT is enabled
(resampled to `sample_rate` only for a model configured otherwise), and is normalised per clip as MERT's
feature extractor does. A learned softmax mixes the hidden states.

A batch runs as one pass, whatever the norm of the first conv. MERT-v1's `feat_extract_norm: group` normalises
each channel over time, which would see the padding: that GroupNorm is swapped for `MaskedGroupNorm` (same
weights and names) whose statistics cover each clip's own frames only, so a clip's features do not depend on
its batch. (One pass per clip would also make the number of passes data-dependent, which ZeRO-3's per-module
parameter gathers cannot follow when ranks hold different numbers of clips.)
"""
from __future__ import annotations

import json

import torch
from torch import nn
from transformers import HubertConfig, HubertModel

from usam.config import SAMPLE_RATE, MERTSettings
from usam.encoders.base import AudioEncoder, EncoderOutput
from usam.loading import load_state_dict, load_strict, resolve_path
from usam.precision import param_dtype

# MERT config fields that would change the computation if set; they must be off for HubertModel to be exact.
_UNSUPPORTED = {"feature_extractor_cqt": False, "deepnorm": False, "conv_pos_batch_norm": False}
# Pre-training heads in MERT checkpoints that the encoder does not use. (`masked_spec_embed` is kept: a trained
# MERT replaces masked frames with it when SpecAugment is on, as with `train: full`.)
_DROPPED_PREFIXES = ("final_proj.", "label_embs_concat", "label_embs")


def _hubert_key(name: str) -> str:
    for prefix in ("mert.", "hubert.", "model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    # checkpoints saved with torch's old weight_norm name the positional conv's factors weight_g / weight_v
    return (name.replace("pos_conv_embed.conv.weight_g", "pos_conv_embed.conv.parametrizations.weight.original0")
                .replace("pos_conv_embed.conv.weight_v", "pos_conv_embed.conv.parametrizations.weight.original1"))


def load_mert(folder) -> HubertModel:
    raw = json.loads((folder / "config.json").read_text())
    for key, ok in _UNSUPPORTED.items():
        if raw.get(key, ok) != ok:
            raise ValueError(f"{folder}/config.json: {key}={raw[key]!r} is not supported by the HubertModel path")
    if raw.get("attention_relax", -1.0) > 0:
        raise ValueError(f"{folder}/config.json: attention_relax={raw['attention_relax']} is not supported")
    known = HubertConfig().to_dict().keys()
    config = HubertConfig(**{k: v for k, v in raw.items() if k in known and k not in ("model_type", "architectures")})
    model = HubertModel(config)
    state = {}
    for name, tensor in load_state_dict(folder).items():
        key = _hubert_key(name)
        if not key.startswith(_DROPPED_PREFIXES):
            state[key] = tensor
    if "masked_spec_embed" in model.state_dict() and "masked_spec_embed" not in state:
        state["masked_spec_embed"] = model.state_dict()["masked_spec_embed"]  # a checkpoint saved without it
    load_strict(model, state, str(folder))
    return model


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm over time (x: (B, C, T)) whose statistics read only each clip's first `frames[b]` frames.
    `frames` (B,) is set by the encoder around each pass; None behaves as nn.GroupNorm. Computes in fp32."""

    frames: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frames is None:
            return super().forward(x)
        batch, channels, length = x.shape
        keep = (torch.arange(length, device=x.device)[None, :] < self.frames[:, None]).float()  # (B, T)
        grouped = x.float().view(batch, self.num_groups, channels // self.num_groups, length)  # (B, G, C/G, T)
        m = keep[:, None, None, :]
        count = m.sum((2, 3), keepdim=True) * (channels // self.num_groups)
        mean = (grouped * m).sum((2, 3), keepdim=True) / count
        var = ((grouped - mean).pow(2) * m).sum((2, 3), keepdim=True) / count
        y = ((grouped - mean) * torch.rsqrt(var + self.eps)).view(batch, channels, length)
        if self.affine:
            y = y * self.weight.float()[None, :, None] + self.bias.float()[None, :, None]
        return y.to(x.dtype)


def _masked_group_norm(model: HubertModel) -> MaskedGroupNorm | None:
    """Swap the first conv layer's GroupNorm (feat_extract_norm: group) for a MaskedGroupNorm; returns it."""
    first = model.feature_extractor.conv_layers[0]
    norm = getattr(first, "layer_norm", None)
    if not isinstance(norm, nn.GroupNorm):
        return None
    masked = MaskedGroupNorm(norm.num_groups, norm.num_channels, norm.eps, norm.affine).to(norm.weight)
    masked.load_state_dict(norm.state_dict())
    first.layer_norm = masked
    return masked


class MERTAudioEncoder(AudioEncoder):
    def __init__(self, settings: MERTSettings, input_rate: int = SAMPLE_RATE):
        super().__init__()
        self.input_rate = input_rate
        if settings.name_or_path:
            self.model = load_mert(resolve_path(settings.name_or_path, kind="mert"))
            self.pretrained = True
        else:
            self.model = HubertModel(HubertConfig(**settings.architecture))
        config = self.model.config
        self.sample_rate = settings.sample_rate
        self.output_dim = config.hidden_size
        self.hop = 1
        for stride in config.conv_stride:
            self.hop *= stride
        self.frame_rate = self.sample_rate / self.hop  # 75 Hz for MERT-v1
        n_states = config.num_hidden_layers + 1
        self.layer_weights = nn.Parameter(torch.zeros(n_states)) if settings.layer_mix else None
        # GroupNorm over time in the first conv would see padding: its statistics are masked per clip instead
        self.group_norm = _masked_group_norm(self.model)
        # input samples one output frame reads (400 at 24 kHz for MERT-v1); shorter clips are zero-padded to it
        self.receptive_field, step = config.conv_kernel[0], config.conv_stride[0]
        for kernel, stride in zip(config.conv_kernel[1:], config.conv_stride[1:]):
            self.receptive_field += (kernel - 1) * step
            step *= stride
        # The hidden states are collected with our own hooks on the encoder layers: transformers 5's
        # `output_hidden_states` capture intermittently returned an empty tuple inside our training step.
        self._states: list[torch.Tensor] = []
        # The layer mix needs every layer's state: layerdrop would skip layers (and their hooks) at random.
        self.model.config.layerdrop = 0.0
        layers = self.model.encoder.layers
        layers[0].register_forward_pre_hook(self._record_input)  # bound methods: a deepcopy stays self-contained
        for layer in layers:
            layer.register_forward_hook(self._record_output)

    def _record_input(self, _module, args):
        self._states.append(args[0])

    def _record_output(self, _module, _args, out):
        self._states.append(out[0] if isinstance(out, tuple) else out)

    def architecture(self) -> dict:
        return self.model.config.to_diff_dict()

    def frames_for(self, samples: torch.Tensor) -> torch.Tensor:
        """Output frames of the conv feature extractor for `samples` input samples (at 24 kHz)."""
        for kernel, stride in zip(self.model.config.conv_kernel, self.model.config.conv_stride):
            samples = torch.div(samples - kernel, stride, rounding_mode="floor") + 1
        return samples.clamp(min=1)

    def _model_input(self, audio: torch.Tensor, lengths: torch.Tensor):
        """(B, n) at `input_rate` -> (B, m) at `sample_rate` (each clip over its own valid region, see
        `resample_clips`; a no-op when the rates agree), normalised to zero mean and unit variance over its valid
        samples, zero after them, and zero-padded to at least the receptive field. In fp32."""
        wave, new_lengths = self.to_native_rate(audio, lengths)
        wave = wave.float()
        valid = (torch.arange(wave.shape[1], device=wave.device)[None, :] < new_lengths[:, None]).float()
        count = valid.sum(1, keepdim=True).clamp(min=1)
        mean = (wave * valid).sum(1, keepdim=True) / count
        var = ((wave - mean).pow(2) * valid).sum(1, keepdim=True) / count
        wave = (wave - mean) / torch.sqrt(var + 1e-7) * valid
        if wave.shape[1] < self.receptive_field:
            wave = nn.functional.pad(wave, (0, self.receptive_field - wave.shape[1]))
        return wave, new_lengths.clamp(min=self.receptive_field)

    def _run(self, wave: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """All hidden states (input to layer 0, then each layer's output; the last one is the model's final output,
        as transformers' `hidden_states` define them)."""
        self._states = []
        last = self.model(wave, attention_mask=mask).last_hidden_state
        states, self._states = self._states, []
        return (*states[:-1], last)

    def _hidden_states(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One pass over the batch; every clip's valid frames as if it ran alone."""
        mask = (torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]).long()
        if self.group_norm is None:
            return self._run(wave.to(param_dtype(self.model)), mask)
        kernel, stride = self.model.config.conv_kernel[0], self.model.config.conv_stride[0]
        self.group_norm.frames = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        try:
            return self._run(wave.to(param_dtype(self.model)), mask)
        finally:
            self.group_norm.frames = None

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        wave, wave_lengths = self._model_input(audio, lengths)
        states = torch.stack(self._hidden_states(wave, wave_lengths))  # (S, B, T, D)
        if self.layer_weights is None:
            features = states[-1]
        else:
            weights = torch.softmax(self.layer_weights, dim=0).to(states.dtype)
            features = (weights[:, None, None, None] * states).sum(0)
        frames = self.frames_for(wave_lengths)
        mask = torch.arange(features.shape[1], device=audio.device)[None, :] < frames[:, None]
        return EncoderOutput(features, mask)
