"""Warm-up of a small sound encoder on fresh synthetic sound events, offline: the library's own BEATs module (the
code that loads the official BEATs checkpoints at scale) learns what the synthesiser knows about each clip: the
event class, in which frames the sound is active, in which frames an event starts (what a "how many" question
counts), and high or low pitch for the pitched classes.

Every step synthesises new events (usam.synth.sounds), so nothing can be memorised. The held-out figures use the
classes' held-out timbres (usam.synth.sounds.HELD_OUT_TIMBRES: the test_timbre split's synthesis, e.g. a dual-tone
beep), which never play in training. The warmed encoder is saved as an official-format BEATs checkpoint
(`{"cfg", "model"}`) that `beats.name_or_path` loads.

Shapes: audio (B, n) at 16 kHz -> BEATs features (B, T, D) at 6.25 Hz (160 ms steps) -> frame heads
(B, T, classes + 2): each active frame names the class; the clip's class is the mean of its frames' class logits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from usam.synth import sounds
from usam.ragged import masked_mean
from usam.warmup.loop import (WarmupSettings, accuracy, balanced_accuracy, frame_cross_entropy,
                              save_record, train_on_fresh_clips, weighted_frame_bce)

ACTIVE_DBFS = -55.0  # a frame whose RMS is above this is sounding (the synthesiser's noise floor is at -70 dBFS)
PITCHES = ("high", "low")


@dataclass
class SoundWarmupSettings(WarmupSettings):
    classes: list[str] = field(default_factory=lambda: list(sounds.SOUND_CLASSES))
    max_count: int = 5  # counted classes: 1 to max_count events a clip, as the corpus draws them
    continuous_seconds: tuple[float, float] = (2.0, 4.0)
    held_out_timbres: list[str] = field(default_factory=list)  # the synth config's sound.held_out_timbres


class SoundHeads(nn.Module):
    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.frame = nn.Linear(dim, n_classes + 2)  # class logits, active, onset
        self.pitch = nn.Linear(dim, len(PITCHES))

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        frame = self.frame(features)
        return {"frame_class": frame[..., :-2], "events": frame[..., -2:],
                "cls": masked_mean(frame[..., :-2], mask), "pitch": self.pitch(masked_mean(features, mask))}


class FreshSounds:
    """Batches of new sound-event clips (each its whole length, padded to the batch's longest) with their targets
    at `frame_rate`; `held_out` draws the held-out timbres of those classes in turn instead."""

    def __init__(self, settings: SoundWarmupSettings, frame_rate: float, held_out: list[str] | None = None):
        self.s, self.frame_rate, self.held_out = settings, frame_rate, held_out
        self.cfg = {"classes": list(settings.classes), "max_count": settings.max_count,
                    "continuous_seconds": tuple(settings.continuous_seconds)}

    def batch(self, rng, size: int) -> dict[str, torch.Tensor]:
        nrng = np.random.default_rng(rng.getrandbits(64))
        events, clips = [], []
        for i in range(size):
            label = self.held_out[i % len(self.held_out)] if self.held_out else None
            event = sounds.sample_event(rng, self.cfg, held_out_label=label)
            clips.append(sounds.render_event(event, nrng, self.cfg))
            events.append(event)
        n = max(c.size for c in clips)
        hop = sounds.SR / self.frame_rate
        frames = int(np.ceil(n / hop))
        audio = np.zeros((size, n), dtype=np.float32)
        targets = np.zeros((size, frames, 2), dtype=np.float32)  # active, onset
        for b, (event, clip) in enumerate(zip(events, clips)):
            audio[b, : clip.size] = clip
            steps = int(np.ceil(clip.size / hop))
            padded = np.pad(clip, (0, int(steps * hop) - clip.size)).reshape(steps, -1)
            rms_db = 10 * np.log10(np.mean(padded.astype(np.float64) ** 2, axis=1) + 1e-20)
            targets[b, :steps, 0] = rms_db > ACTIVE_DBFS
            for onset in event.onsets:
                targets[b, min(int(onset * self.frame_rate), steps - 1), 1] = 1.0
        return {"audio": torch.from_numpy(audio), "lengths": torch.tensor([c.size for c in clips]),
                "frames": torch.from_numpy(targets),
                "cls": torch.tensor([self.s.classes.index(e.label) for e in events]),
                "pitch": torch.tensor([PITCHES.index(e.pitch) if e.pitch else -100 for e in events]),
                # onsets are only known for counted classes: the others' onset targets are left out of the loss
                "counted": torch.tensor([e.label in sounds.COUNTED for e in events])}


def _frames(out: dict, batch: dict, mask: torch.Tensor):
    t = min(out["events"].shape[1], batch["frames"].shape[1])
    return batch["frames"][:, :t], out["events"][:, :t], mask[:, :t], out["frame_class"][:, :t]


def sound_loss(out: dict, batch: dict, mask: torch.Tensor) -> torch.Tensor:
    frames, logits, valid, frame_class = _frames(out, batch, mask)
    active = valid & (frames[..., 0] > 0.5)
    counted = valid & batch["counted"][:, None]
    pitch = nn.functional.cross_entropy(out["pitch"], batch["pitch"], ignore_index=-100) \
        if bool((batch["pitch"] != -100).any()) else out["pitch"].sum() * 0
    return (weighted_frame_bce(logits[..., :1], frames[..., :1], valid)
            + weighted_frame_bce(logits[..., 1:], frames[..., 1:], counted)
            + frame_cross_entropy(frame_class, batch["cls"], active)
            + nn.functional.cross_entropy(out["cls"], batch["cls"]) + pitch)


def sound_scores(out: dict, batch: dict, mask: torch.Tensor) -> dict[str, float]:
    """Class and pitch accuracy (%) per clip; balanced accuracy (%) of the active frames and (counted classes) of
    the onset frames, at probability 0.5; the share (%) of counted clips whose onset frames the head counts right."""
    frames, logits, valid, _ = _frames(out, batch, mask)
    guess, truth = logits > 0, frames > 0.5
    counted = valid & batch["counted"][:, None]
    right = ((guess[..., 1] & counted).sum(1) == (truth[..., 1] & counted).sum(1))[batch["counted"]]
    return {"class_accuracy": accuracy(out["cls"], batch["cls"]),
            "pitch_accuracy": accuracy(out["pitch"], batch["pitch"]),
            "active_balanced_accuracy": balanced_accuracy(guess[..., 0][valid], truth[..., 0][valid]),
            "onset_balanced_accuracy": balanced_accuracy(guess[..., 1][counted], truth[..., 1][counted]),
            "count_accuracy": float(100 * right.float().mean()) if right.numel() else 0.0}


def save_beats_checkpoint(encoder, path: Path) -> None:
    """The official BEATs layout ({"cfg": the BEATsConfig fields, "model": the state dict}), which
    usam.encoders.beats.load_beats_checkpoint reads with weights_only=True."""
    state = {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}
    torch.save({"cfg": encoder.architecture(), "model": state}, path)


def warm_up_sound_encoder(settings: SoundWarmupSettings, out_dir: str | Path | None = None,
                          progress: bool = True) -> tuple[nn.Module, list[dict]]:
    """Train the encoder and its heads for settings.steps steps on fresh sound events -> (encoder, curve), as
    usam.warmup.music does for music. out_dir: the encoder saved there as BEATs.pt (beats.name_or_path) with
    curve.json and settings.json."""
    from usam.config import BEATsSettings
    from usam.encoders.beats import BEATsAudioEncoder

    s = settings
    sounds.check_held_out_timbres(s.held_out_timbres, s.classes)
    torch.manual_seed(s.seed)
    encoder = BEATsAudioEncoder(BEATsSettings(architecture=dict(s.architecture)))
    heads = SoundHeads(encoder.output_dim, len(s.classes))
    train = FreshSounds(s, encoder.frame_rate)
    evaluation = {"seen": FreshSounds(s, encoder.frame_rate)}
    if s.held_out_timbres:
        evaluation["held_out"] = FreshSounds(s, encoder.frame_rate, held_out=list(s.held_out_timbres))
    curve = train_on_fresh_clips(encoder, heads, s, train, evaluation, sound_loss, sound_scores, progress,
                                 desc="sound warm-up")
    if out_dir is not None:
        out = save_record(out_dir, curve, s)
        save_beats_checkpoint(encoder, out / "BEATs.pt")
    return encoder.eval(), curve
