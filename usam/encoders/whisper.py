"""Whisper encoder (transformers' `WhisperEncoder`; the decoder is never loaded).

Clips up to 30 s are padded to 30 s (what the weights were trained on) and only the valid output frames,
ceil(seconds * 50), are kept. Longer clips run as consecutive 30 s chunks whose valid frames are
concatenated, so nothing is truncated. `true_length=True` runs each batch only as long as its longest
chunk (position embeddings sliced, padded frames masked): faster on short clips, slightly different features.
"""
from __future__ import annotations

import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from usam.config import SAMPLE_RATE, WhisperSettings
from usam.encoders.base import AudioEncoder, EncoderOutput
from usam.features import WHISPER_CHUNK_SAMPLES, ceil_div, front_end_filters, whisper_log_mel
from usam.loading import load_state_dict, load_strict, resolve_path
from usam.precision import param_dtype

SAMPLES_PER_FRAME = SAMPLE_RATE // 50  # 320: conv stride 2 over a 160-sample hop


class WhisperAudioEncoder(AudioEncoder):
    frame_rate = 50.0
    sample_rate = SAMPLE_RATE

    def __init__(self, settings: WhisperSettings, input_rate: int = SAMPLE_RATE):
        super().__init__()
        self.input_rate = input_rate
        if settings.name_or_path:
            folder = resolve_path(settings.name_or_path, kind="whisper")
            config = WhisperConfig.from_pretrained(folder)
            self.encoder = WhisperEncoder(config)
            state = load_state_dict(folder, prefixes=("model.encoder.", "encoder."))
            load_strict(self.encoder, state, str(folder))
            self.pretrained = True
        else:
            config = WhisperConfig(**settings.architecture)
            self.encoder = WhisperEncoder(config)
        self.config = config
        self.true_length = settings.true_length
        self.output_dim = config.d_model

    def architecture(self) -> dict:
        return self.config.to_diff_dict()

    def _chunks(self, audio: torch.Tensor, lengths: torch.Tensor):
        """Cut every clip into 30 s chunks: (C, 480000) zero-padded, valid samples (C,), owner clip (C,)."""
        chunks, valid, owner = [], [], []
        for b, n in enumerate(lengths.tolist()):
            for start in range(0, max(n, 1), WHISPER_CHUNK_SAMPLES):
                piece = audio[b, start:min(n, start + WHISPER_CHUNK_SAMPLES)]
                chunks.append(torch.nn.functional.pad(piece, (0, WHISPER_CHUNK_SAMPLES - piece.shape[0])))
                valid.append(max(piece.shape[0], 1))
                owner.append(b)
        return torch.stack(chunks), torch.tensor(valid, device=audio.device), owner

    def _run(self, mel: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        if not self.true_length:
            return self.encoder(mel).last_hidden_state  # (C, 1500, D)
        # True-length path: the WhisperEncoder.forward insists on 3000 mel frames, so run its parts here.
        enc = self.encoder
        t_out = int(frames.max())
        # conv2's output frame t reads conv1 frames 2t-1..2t+1, which read mel frames up to 2t+2: keep mel frame
        # 2 t_out, so that the last valid frame of the longest clip reads real mel, not conv padding (its
        # features would otherwise depend on whether a longer clip shares the batch)
        x = torch.nn.functional.gelu(enc.conv1(mel[..., : 2 * t_out + 1]))
        x = torch.nn.functional.gelu(enc.conv2(x))[..., :t_out].permute(0, 2, 1)  # (C, t_out, D)
        # through the module, not `.weight[:t_out]`: ZeRO-3 gathers a partitioned weight only in its forward
        x = x + enc.embed_positions(torch.arange(t_out, device=x.device))
        x = torch.nn.functional.dropout(x, p=enc.dropout, training=self.training)
        keep = torch.arange(t_out, device=x.device)[None, :] < frames[:, None]  # (C, T)
        bias = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(~keep, torch.finfo(x.dtype).min)
        bias = bias[:, None, None, :].expand(-1, 1, t_out, -1)
        for layer in enc.layers:
            x = layer(x, bias)
        return enc.layer_norm(x)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        audio, lengths = self.to_native_rate(audio, lengths)  # (B, n) at 16 kHz
        chunks, valid, owner = self._chunks(audio, lengths)
        filters = front_end_filters("whisper", self.config.num_mel_bins, chunks.device)  # fp32 (usam.precision)
        mel = whisper_log_mel(chunks, filters).to(param_dtype(self.encoder))  # (C, n_mels, 3000)
        frames = ceil_div(valid, SAMPLES_PER_FRAME)  # valid output frames per chunk
        hidden = self._run(mel, frames)
        # concatenate each clip's valid frames over its chunks (one host copy of the frame counts)
        per_clip: list[list[torch.Tensor]] = [[] for _ in range(audio.shape[0])]
        for c, (b, n) in enumerate(zip(owner, frames.tolist())):
            per_clip[b].append(hidden[c, :n])
        seqs = [torch.cat(parts) for parts in per_clip]
        out_len = torch.tensor([s.shape[0] for s in seqs], device=audio.device)
        features = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        mask = torch.arange(features.shape[1], device=audio.device)[None, :] < out_len[:, None]
        return EncoderOutput(features, mask)
