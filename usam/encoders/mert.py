"""MERT-v1 music encoder, run as transformers' `HubertModel`.

MERT-v1 checkpoints are HuBERT-shaped. Their config says `model_type: mert_model` and needs remote code;
we read the config fields that HubertConfig knows, refuse the MERT-only options that change the
computation (CQT features, deep norm, attention relaxation), check that the checkpoint's key names map
onto HubertModel's, and load strictly. Input is resampled 16 -> 24 kHz (julius, a sinc resampler in torch)
and normalised per clip as MERT's feature extractor does. A learned softmax mixes the hidden states.
"""
from __future__ import annotations

import json

import julius
import torch
from torch import nn
from transformers import HubertConfig, HubertModel

from usam.config import SAMPLE_RATE, MERTSettings
from usam.encoders.base import AudioEncoder, EncoderOutput
from usam.loading import load_state_dict, load_strict, resolve_path

# MERT config fields that would change the computation if set; they must be off for HubertModel to be exact.
_UNSUPPORTED = {"feature_extractor_cqt": False, "deepnorm": False, "conv_pos_batch_norm": False}
# Pre-training heads in MERT checkpoints that the encoder does not use.
_DROPPED_PREFIXES = ("final_proj.", "label_embs_concat", "label_embs", "masked_spec_embed")


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
    if "masked_spec_embed" in model.state_dict():  # unused at inference; keep the model's own
        state.setdefault("masked_spec_embed", model.state_dict()["masked_spec_embed"])
    load_strict(model, state, str(folder))
    return model


class MERTAudioEncoder(AudioEncoder):
    def __init__(self, settings: MERTSettings):
        super().__init__()
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
        # GroupNorm over time in the first conv sees padding: such models run one clip at a time (exact).
        self.per_clip = config.feat_extract_norm == "group"
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

    def _resample(self, audio: torch.Tensor, lengths: torch.Tensor):
        """Each clip resampled over its own valid region, then normalised to zero mean and unit variance."""
        clips = []
        for b, n in enumerate(lengths.tolist()):
            x = julius.resample_frac(audio[b, :n].float(), SAMPLE_RATE, self.sample_rate)
            clips.append((x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7))
        new_lengths = torch.tensor([c.shape[0] for c in clips], device=audio.device)
        return torch.nn.utils.rnn.pad_sequence(clips, batch_first=True), new_lengths

    def _run(self, wave: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """All hidden states (input to layer 0, then each layer's output; the last one is the model's final output,
        as transformers' `hidden_states` define them)."""
        self._states = []
        last = self.model(wave, attention_mask=mask).last_hidden_state
        states, self._states = self._states, []
        return (*states[:-1], last)

    def _hidden_states(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        dtype = next(self.model.parameters()).dtype
        if not self.per_clip:
            mask = (torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]).long()
            return self._run(wave.to(dtype), mask)
        per_clip = [self._run(wave[b: b + 1, : int(n)].to(dtype), None) for b, n in enumerate(lengths.tolist())]
        longest = max(h[0].shape[1] for h in per_clip)
        pad = lambda t: nn.functional.pad(t, (0, 0, 0, longest - t.shape[1]))  # noqa: E731
        return tuple(torch.cat([pad(h[i]) for h in per_clip]) for i in range(len(per_clip[0])))

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        wave, wave_lengths = self._resample(audio, lengths)
        states = torch.stack(self._hidden_states(wave, wave_lengths))  # (S, B, T, D)
        if self.layer_weights is None:
            features = states[-1]
        else:
            weights = torch.softmax(self.layer_weights, dim=0).to(states.dtype)
            features = (weights[:, None, None, None] * states).sum(0)
        frames = self.frames_for(wave_lengths)
        mask = torch.arange(features.shape[1], device=audio.device)[None, :] < frames[:, None]
        return EncoderOutput(features, mask)
