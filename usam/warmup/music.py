"""Warm-up of a small music encoder on fresh synthetic music, offline: the library's own MERT module (the code that
loads MERT-v1 checkpoints at scale) learns what the score of each clip says, which the synthesiser knows exactly:
the instrument and tempo class of the clip, and per frame the sounding pitch classes, the note onsets and the beats.

Every step renders new pieces (usam.synth.music.render_many), so nothing can be memorised; the programs held out
for the test_timbre split never play in training and are what the held-out figures measure. The warmed encoder is
saved as a HuBERT-shaped folder that `mert.name_or_path` loads.

Shapes: audio (B, n) at 24 kHz -> MERT features (B, T, D) at its frame rate (75 Hz with MERT-v1's convolutions)
-> frame heads (B, T, 12 + 2 + tempo classes); the instrument head reads the mean of the valid frames.
Measured curves (docs/warmup.md): from the waveform this small MERT learns instruments slowly and tempo not yet in
the demo's 5 minutes; BEATs on its fbank learns its sound targets in 2.
"""
from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr
import torch
from torch import nn

from usam.synth import music
from usam.ragged import masked_mean
from usam.warmup.loop import (WarmupSettings, accuracy, balanced_accuracy, frame_cross_entropy,
                              save_record, train_on_fresh_clips, weighted_frame_bce)


BAND_LIMITED_RATE = 16000
MELODIC_PROGRAMS = range(112)  # General MIDI's melodic programs; 112-127 are percussive and sound effects
GM_FAMILIES = len(MELODIC_PROGRAMS) // 8  # piano, chromatic percussion, organ, guitar, bass, strings, ... pipe, ethnic


@dataclass
class MusicWarmupSettings(WarmupSettings):
    clip_seconds: float = 2.0
    sample_rate: int = 24000
    instruments: list[str] = field(default_factory=lambda: list(music.INSTRUMENTS))
    tempi: list[str] = field(default_factory=lambda: list(music.TEMPO_CLASSES))
    held_out_programs: list[int] = field(default_factory=list)  # the synth config's music.held_out_programs
    # reconstruct each frame's log-mel spectrum (bins; 0: off) beside the score targets, as MERT's own
    # pre-training reconstructs a CQT: a dense target on every frame, where the score targets are sparse
    mel_bins: int = 0
    # share of the pieces rendered at 16 kHz and resampled to sample_rate (nothing above 8 kHz), so the encoder also
    # knows band-limited music: the synthetic corpus (usam synth) stores its clips at 16 kHz
    band_limited: float = 0.0
    # share of the clips played by the other melodic GM programs (not the instruments' own, not held out), which
    # teach only their GM family (program // 8, a target every clip has): many timbres per family, as a music
    # encoder's pre-training hears, so a program never heard may still sit near its family's
    other_programs: float = 0.0


class MusicHeads(nn.Module):
    def __init__(self, dim: int, n_instruments: int, n_tempi: int, mel_bins: int = 0, families: bool = False):
        super().__init__()
        self.mel = nn.Linear(dim, mel_bins) if mel_bins else None
        self.family = nn.Linear(dim, GM_FAMILIES) if families else None
        self.frame = nn.Linear(dim, 12 + 2)  # pitch classes, onset, beat
        self.instrument = nn.Linear(dim, n_instruments)
        # tempo per frame: every frame must carry the clip's tempo (what a frame-wise connector downstream reads),
        # so the encoder learns the periodicity across frames; the clip's tempo is the mean of its frames' logits
        self.tempo = nn.Linear(dim, n_tempi)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        frame_tempo = self.tempo(features)  # (B, T, tempi)
        out = {"frame": self.frame(features), "instrument": self.instrument(masked_mean(features, mask)),
               "frame_tempo": frame_tempo, "tempo": masked_mean(frame_tempo, mask)}
        if self.mel is not None:
            out["mel"] = self.mel(features)  # (B, T, mel_bins)
        if self.family is not None:
            out["family"] = self.family(masked_mean(features, mask))
        return out


def log_mel_frames(audio: torch.Tensor, sample_rate: int, frame_rate: float, bins: int) -> torch.Tensor:
    """(B, n) -> (B, frames, bins): log-mel spectra one hop of sample_rate / frame_rate apart (the encoder's frames),
    floored 8 decades below each clip's peak and scaled to about [-1, 1] as Whisper's front end does."""
    from transformers.audio_utils import mel_filter_bank

    hop = int(round(sample_rate / frame_rate))
    n_fft = 1 << (4 * hop - 1).bit_length()  # a power of two of at least four hops
    filters = torch.from_numpy(mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=bins,
                                               min_frequency=30.0, max_frequency=sample_rate / 2,
                                               sampling_rate=sample_rate, norm="slaney", mel_scale="slaney")).float()
    stft = torch.stft(audio, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)
    log_mel = (filters.T @ stft.abs() ** 2).clamp(min=1e-10).log10()  # (B, bins, frames)
    log_mel = torch.maximum(log_mel, log_mel.amax(dim=(1, 2), keepdim=True) - 8.0)
    return ((log_mel + 4.0) / 4.0).transpose(1, 2)


class FreshMusic:
    """Batches of new clips with their targets: `clip_seconds` cut at random from pieces drawn for the programs
    allowed, rendered at `sample_rate`, targets at the encoder's `frame_rate`."""

    def __init__(self, settings: MusicWarmupSettings, frame_rate: float, programs: list[int], soundfont: str,
                 workdir: Path, others: list[int] = ()):
        self.s, self.frame_rate, self.programs, self.others = settings, frame_rate, programs, list(others)
        self.soundfont, self.workdir = soundfont, workdir

    def _piece(self, rng) -> music.Piece:
        s = self.s
        piece = music.sample_piece(rng, {"seconds": (s.clip_seconds, s.clip_seconds)}, min_seconds=s.clip_seconds,
                                   program=rng.choice(self.programs), tempi=tuple(s.tempi))
        if self.others and rng.random() < s.other_programs:
            # the score a label's program would play, played by another program: only its family is a target
            piece = dataclasses.replace(piece, program=rng.choice(self.others))
        return piece

    def batch(self, rng, size: int) -> dict[str, torch.Tensor]:
        s = self.s
        pieces = [self._piece(rng) for _ in range(size)]
        rendered = []
        for i in range(0, size, music.MAX_PIECES_PER_CALL):  # one fluidsynth call per chunk, at one rate
            rate = BAND_LIMITED_RATE if rng.random() < s.band_limited else s.sample_rate
            chunk = music.render_many(pieces[i: i + music.MAX_PIECES_PER_CALL], rng, self.soundfont,
                                      self.workdir, rate)
            if rate != s.sample_rate:
                chunk = [(soxr.resample(clip, rate, s.sample_rate).astype(np.float32), score)
                         for clip, score in chunk]
            rendered += chunk
        n = int(s.clip_seconds * s.sample_rate)
        frames = int(np.ceil(s.clip_seconds * self.frame_rate))
        audio = np.zeros((size, n), dtype=np.float32)
        targets = np.zeros((size, frames, 14), dtype=np.float32)
        for b, (piece, (clip, score)) in enumerate(zip(pieces, rendered)):
            start = rng.uniform(0.0, max(0.0, piece.seconds - s.clip_seconds))
            first = int(start * s.sample_rate)
            audio[b, : min(n, clip.size - first)] = clip[first: first + n]
            t = music.frame_targets(score, piece.seconds + 1.0, self.frame_rate)
            offset = int(round(start * self.frame_rate))
            # an onset or beat also marks the frame after it (an attack spreads over a frame boundary at 75 Hz)
            events = np.stack([t["onsets"], t["beats"]], 1)
            events[1:] |= events[:-1].copy()
            window = np.concatenate([t["pitch_classes"], events], 1)
            window = window[offset: offset + frames]
            targets[b, : len(window)] = window
        batch = {"audio": torch.from_numpy(audio), "lengths": torch.full((size,), n, dtype=torch.long),
                 "frames": torch.from_numpy(targets),
                 "instrument": torch.tensor([s.instruments.index(p.instrument) if p.program in self.programs
                                             else -100 for p in pieces]),
                 "family": torch.tensor([p.program // 8 for p in pieces]),
                 "tempo": torch.tensor([s.tempi.index(p.tempo) for p in pieces])}
        if s.mel_bins:
            batch["mel"] = log_mel_frames(batch["audio"], s.sample_rate, self.frame_rate, s.mel_bins)
        return batch


def _frames(out: dict, batch: dict, mask: torch.Tensor):
    """The frame targets, logits and mask cut to the frames both the encoder and the targets have."""
    t = min(out["frame"].shape[1], batch["frames"].shape[1])
    return batch["frames"][:, :t], out["frame"][:, :t], mask[:, :t]


def music_loss(out: dict, batch: dict, mask: torch.Tensor) -> torch.Tensor:
    frames, logits, valid = _frames(out, batch, mask)
    loss = weighted_frame_bce(logits, frames, valid) + frame_cross_entropy(out["frame_tempo"], batch["tempo"], mask)
    if bool((batch["instrument"] != -100).any()):  # a batch of other programs only has no instrument target
        loss = loss + nn.functional.cross_entropy(out["instrument"], batch["instrument"], ignore_index=-100)
    if "family" in out:
        loss = loss + nn.functional.cross_entropy(out["family"], batch["family"])
    if "mel" in out:
        t = min(out["mel"].shape[1], batch["mel"].shape[1])
        error = (out["mel"][:, :t] - batch["mel"][:, :t]).pow(2).mean(-1)  # (B, t)
        loss = loss + (error * mask[:, :t]).sum() / mask[:, :t].sum().clamp(min=1)
    return loss


def music_scores(out: dict, batch: dict, mask: torch.Tensor) -> dict[str, float]:
    """Instrument and tempo accuracy (%), and per-frame balanced accuracy (%) of onsets and beats and F1 (%) of the
    sounding pitch classes, at probability 0.5."""
    frames, logits, valid = _frames(out, batch, mask)
    guess, truth = (logits > 0)[valid], (frames > 0.5)[valid]
    p, t = guess[:, :12], truth[:, :12]
    f1 = 2 * (p & t).sum() / (p.sum() + t.sum()).clamp(min=1)
    scores = {"instrument_accuracy": accuracy(out["instrument"], batch["instrument"]),
              "tempo_accuracy": accuracy(out["tempo"], batch["tempo"]),
              "onset_balanced_accuracy": balanced_accuracy(guess[:, 12], truth[:, 12]),
              "beat_balanced_accuracy": balanced_accuracy(guess[:, 13], truth[:, 13]),
              "pitch_class_f1": float(100 * f1)}
    if "family" in out:
        scores["family_accuracy"] = accuracy(out["family"], batch["family"])
    if "mel" in out:  # the reconstruction's share of the log-mel variance left unexplained (%)
        t = min(out["mel"].shape[1], batch["mel"].shape[1])
        target, m = batch["mel"][:, :t][mask[:, :t]], mask[:, :t]
        scores["mel_unexplained"] = float(100 * (out["mel"][:, :t][m] - target).pow(2).mean()
                                          / target.var(0).mean().clamp(min=1e-8))
    return scores


def warm_up_music_encoder(settings: MusicWarmupSettings, out_dir: str | Path | None = None,
                          soundfont: str | None = None, progress: bool = True) -> tuple[nn.Module, list[dict]]:
    """Train the encoder and its heads for settings.steps steps on fresh music -> (encoder, curve). The curve holds,
    every eval_every steps, the minutes so far and the scores on fresh in-domain clips (`seen/...`) and on fresh
    clips of the held-out programs (`held_out/...`; absent when none is held out). out_dir: the encoder saved there
    (model.safetensors + config.json, loadable as mert.name_or_path) with curve.json and settings.json."""
    from usam.config import MERTSettings
    from usam.encoders.mert import MERTAudioEncoder
    from usam.synth.tools import find_soundfont

    s = settings
    torch.manual_seed(s.seed)
    encoder = MERTAudioEncoder(MERTSettings(architecture=dict(s.architecture), sample_rate=s.sample_rate,
                                            layer_mix=False), s.sample_rate)
    heads = MusicHeads(encoder.output_dim, len(s.instruments), len(s.tempi), s.mel_bins, s.other_programs > 0)
    held = set(s.held_out_programs)
    seen = [p for label in s.instruments for p in music.PROGRAMS[label] if p not in held]
    unseen = [p for label in s.instruments for p in music.PROGRAMS[label] if p in held]
    others = [p for p in MELODIC_PROGRAMS if p not in held and p not in music.LABEL_OF_PROGRAM] \
        if s.other_programs > 0 else []
    soundfont = soundfont or find_soundfont(None)
    with tempfile.TemporaryDirectory() as tmp:
        train_dir, eval_dir = Path(tmp) / "train", Path(tmp) / "eval"
        train_dir.mkdir()
        eval_dir.mkdir()
        train = FreshMusic(s, encoder.frame_rate, seen, soundfont, train_dir, others)
        evaluation = {"seen": FreshMusic(s, encoder.frame_rate, seen, soundfont, eval_dir)}
        if unseen:
            evaluation["held_out"] = FreshMusic(s, encoder.frame_rate, unseen, soundfont, eval_dir)
        curve = train_on_fresh_clips(encoder, heads, s, train, evaluation, music_loss, music_scores, progress,
                                     desc="music warm-up")
    if out_dir is not None:
        out = save_record(out_dir, curve, s)
        encoder.model.save_pretrained(out)
    return encoder.eval(), curve
