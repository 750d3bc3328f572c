"""Batched audio front ends in torch (they run inside the model, on the model's device).

- `whisper_log_mel`: the log-mel spectrogram of transformers' `WhisperFeatureExtractor` (tested to 1e-4),
  computed for a whole batch at once rather than per sample in numpy (defect 10 of the paper's code).
- `kaldi_fbank`: Kaldi-style log mel filterbank, as BEATs was trained on. Written here because torchaudio
  (whose `compliance.kaldi.fbank` BEATs uses) does not load with current torch builds; it follows Kaldi's
  defaults (povey window, pre-emphasis 0.97, DC removal, 512-point FFT, no dither) and is tested against
  the `kaldi-native-fbank` package.
"""
from __future__ import annotations

import functools
import math

import torch
from transformers.audio_utils import mel_filter_bank

WHISPER_N_FFT = 400
WHISPER_HOP = 160
WHISPER_CHUNK_SAMPLES = 30 * 16000


def whisper_mel_filters(num_mel_bins: int, sampling_rate: int = 16000) -> torch.Tensor:
    """(n_freq=201, num_mel_bins) Slaney filters, the ones WhisperFeatureExtractor builds."""
    filters = mel_filter_bank(
        num_frequency_bins=1 + WHISPER_N_FFT // 2, num_mel_filters=num_mel_bins, min_frequency=0.0,
        max_frequency=8000.0, sampling_rate=sampling_rate, norm="slaney", mel_scale="slaney",
    )
    return torch.from_numpy(filters).float()


def whisper_log_mel(waveforms: torch.Tensor, mel_filters: torch.Tensor) -> torch.Tensor:
    """waveforms (B, n) float32 at 16 kHz, already padded to 30 s -> log-mel (B, n_mels, n // 160)."""
    window = torch.hann_window(WHISPER_N_FFT, device=waveforms.device)
    stft = torch.stft(waveforms.float(), WHISPER_N_FFT, WHISPER_HOP, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2  # (B, 201, frames); the extractor drops the last frame
    mel = mel_filters.to(waveforms.device, torch.float32).T @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    # dynamic range of 8 (log10) below each clip's own maximum, as the extractor does per sample
    peak = log_spec.amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0


# ---------------------------------------------------------------------------------------------------
# Kaldi fbank
KALDI_FRAME = 400  # 25 ms at 16 kHz
KALDI_SHIFT = 160  # 10 ms
KALDI_NFFT = 512  # the frame rounded up to a power of two


def _kaldi_mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(freq / 700.0)


def kaldi_mel_banks(num_bins: int, sample_rate: int = 16000, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> torch.Tensor:
    """(num_bins, KALDI_NFFT // 2 + 1) triangular filters on Kaldi's mel scale (no VTLN)."""
    nyquist = 0.5 * sample_rate
    high_freq = high_freq + nyquist if high_freq <= 0 else high_freq
    mel_low, mel_high = _kaldi_mel(torch.tensor(low_freq, dtype=torch.float64)), _kaldi_mel(
        torch.tensor(high_freq, dtype=torch.float64))
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    fft_mel = _kaldi_mel(sample_rate / KALDI_NFFT * torch.arange(KALDI_NFFT // 2, dtype=torch.float64)).unsqueeze(0)
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    # Kaldi's banks cover bins 0..255; the Nyquist bin gets a zero column
    return torch.nn.functional.pad(banks, (0, 1)).float()


def kaldi_num_frames(num_samples: torch.Tensor | int):
    """Frames Kaldi makes with snip_edges: 1 + (n - 400) // 160 (clips shorter than a frame count as one)."""
    if isinstance(num_samples, torch.Tensor):
        return 1 + torch.clamp(num_samples - KALDI_FRAME, min=0) // KALDI_SHIFT
    return 1 + max(num_samples - KALDI_FRAME, 0) // KALDI_SHIFT


def kaldi_fbank(waveforms: torch.Tensor, banks: torch.Tensor, lengths: torch.Tensor | None = None,
                pad_value: float = 0.0, preemphasis: float = 0.97) -> tuple[torch.Tensor, torch.Tensor]:
    """waveforms (B, n) in Kaldi's int16 scale -> log mel (B, frames, num_bins), valid frames (B,).

    Frames past each clip's own length are set to `pad_value`, so a clip's features do not depend on
    what else is in its batch.
    """
    batch, n = waveforms.shape
    if n < KALDI_FRAME:
        waveforms = torch.nn.functional.pad(waveforms, (0, KALDI_FRAME - n))
    frames = waveforms.float().unfold(1, KALDI_FRAME, KALDI_SHIFT)  # (B, m, 400)
    frames = frames - frames.mean(dim=-1, keepdim=True)  # remove DC offset
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # x[t-1], with x[-1] = x[0]
    frames = frames - preemphasis * previous
    window = torch.hann_window(KALDI_FRAME, periodic=False, device=frames.device).pow(0.85)  # povey
    frames = torch.nn.functional.pad(frames * window, (0, KALDI_NFFT - KALDI_FRAME))
    power = torch.fft.rfft(frames).abs().pow(2)  # (B, m, 257)
    mel = power @ banks.to(power.device, torch.float32).T
    log_mel = torch.log(torch.clamp(mel, min=torch.finfo(torch.float32).eps))
    if lengths is None:
        valid = torch.full((batch,), log_mel.shape[1], dtype=torch.long, device=log_mel.device)
    else:
        valid = kaldi_num_frames(lengths.to(log_mel.device))
        keep = torch.arange(log_mel.shape[1], device=log_mel.device)[None, :] < valid[:, None]
        log_mel = torch.where(keep[..., None], log_mel, torch.full_like(log_mel, pad_value))
    return log_mel, valid


@functools.lru_cache(maxsize=None)
def front_end_filters(kind: str, num_bins: int, device: torch.device) -> torch.Tensor:
    """The fp32 filter bank of a front end on `device`, built once per process. Kept out of the encoders'
    buffers on purpose: a whole-model cast (`model.to(torch.bfloat16)`) would round them (usam.precision)."""
    build = {"whisper": whisper_mel_filters, "kaldi": kaldi_mel_banks}[kind]
    return build(num_bins).to(device)


def ceil_div(a, b):
    if isinstance(a, torch.Tensor):
        return torch.div(a + b - 1, b, rounding_mode="floor")
    return math.ceil(a / b)
