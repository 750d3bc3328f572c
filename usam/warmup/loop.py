"""The training loop both warm-ups share: an encoder and its target heads trained on batches a stream renders fresh
for every step (in a background thread, so rendering overlaps the step before it), scored every `eval_every` steps
on fixed evaluation batches (the same clips at every point of the curve)."""
from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import nn


@dataclass
class WarmupSettings:
    """What every warm-up shares; MusicWarmupSettings and SoundWarmupSettings add their own targets."""
    architecture: dict  # the encoder's architecture fields (a HubertConfig for MERT, a BEATs cfg for BEATs)
    steps: int = 300
    batch_size: int = 16
    lr: float = 5e-4
    warmup_steps: int = 20  # linear learning-rate warm-up, then constant
    seed: int = 0
    eval_every: int = 50
    eval_clips: int = 48


class FreshStream(Protocol):
    def batch(self, rng: random.Random, size: int) -> dict[str, torch.Tensor]:
        """`size` new clips ("audio" (B, n), "lengths" (B,)) with their targets."""


Loss = Callable[[dict, dict, torch.Tensor], torch.Tensor]  # (head outputs, batch, frame mask) -> scalar
Scores = Callable[[dict, dict, torch.Tensor], dict[str, float]]  # (head outputs, batch, frame mask) -> figures


def train_on_fresh_clips(encoder: nn.Module, heads: nn.Module, settings: WarmupSettings, train: FreshStream,
                         evaluation: dict[str, FreshStream], loss_of: Loss, scores_of: Scores,
                         progress: bool = True, desc: str = "warm-up") -> list[dict]:
    """Train encoder and heads for settings.steps steps -> the curve: rows of {"step", "minutes", and per
    evaluation stream name "name/figure"}, at step 0, every eval_every steps and at the last step."""
    from tqdm import tqdm

    s = settings
    torch.manual_seed(s.seed)
    rng = random.Random(s.seed)
    params = [*encoder.parameters(), *heads.parameters()]
    optimiser = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / s.warmup_steps))
    eval_rng = random.Random(s.seed + 1)
    eval_batches = {name: stream.batch(eval_rng, s.eval_clips) for name, stream in evaluation.items()}
    curve: list[dict] = []
    start = time.monotonic()

    @torch.no_grad()
    def point(step: int) -> None:
        encoder.eval()
        heads.eval()
        row = {"step": step, "minutes": round((time.monotonic() - start) / 60, 2)}
        for name, batch in eval_batches.items():
            features, mask = encoder(batch["audio"], batch["lengths"])
            figures = scores_of(heads(features, mask), batch, mask)
            row.update({f"{name}/{k}": round(v, 2) for k, v in figures.items()})
        curve.append(row)

    point(0)
    with ThreadPoolExecutor(1) as pool:
        upcoming = pool.submit(train.batch, rng, s.batch_size)
        for step in tqdm(range(1, s.steps + 1), desc=desc, disable=not progress):
            batch = upcoming.result()
            if step < s.steps:
                upcoming = pool.submit(train.batch, rng, s.batch_size)
            encoder.train()
            heads.train()
            features, mask = encoder(batch["audio"], batch["lengths"])
            loss = loss_of(heads(features, mask), batch, mask)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            schedule.step()
            if step % s.eval_every == 0 or step == s.steps:
                point(step)
    return curve


def weighted_frame_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """logits, targets (B, T, K), mask (B, T): binary cross-entropy per frame and target, each target's positives
    weighing as much as its negatives (onsets fill a few frames in a hundred), averaged over valid frames."""
    m = mask[..., None].to(logits.dtype)
    positives = (targets * m).sum((0, 1))
    negatives = ((1 - targets) * m).sum((0, 1))
    pos_weight = (negatives / positives.clamp(min=1)).clamp(1.0, 50.0)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none", pos_weight=pos_weight)
    return (loss * m).sum() / (m.sum() * targets.shape[-1]).clamp(min=1)


def frame_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """logits (B, T, C), one label per clip (B,), mask (B, T): the mean over valid frames of each frame's loss.
    Labels of -100 are ignored (clips the target does not apply to)."""
    per_frame = nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, None].expand(mask.shape),
                                            reduction="none", ignore_index=-100)
    valid = mask & (labels[:, None] != -100)
    return (per_frame * valid).sum() / valid.sum().clamp(min=1)


def balanced_accuracy(guess: torch.Tensor, truth: torch.Tensor) -> float:
    """The mean of the true-positive and true-negative rates (%), of bool tensors of one shape."""
    tpr = (guess & truth).sum() / truth.sum().clamp(min=1)
    tnr = (~guess & ~truth).sum() / (~truth).sum().clamp(min=1)
    return float(50 * (tpr + tnr))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Clip accuracy (%) over the clips whose label is not -100."""
    valid = labels != -100
    return float(100 * (logits.argmax(-1)[valid] == labels[valid]).float().mean()) if bool(valid.any()) else 0.0


def save_record(out_dir: str | Path, curve: list[dict], settings: WarmupSettings) -> Path:
    """The warm-up's record beside its encoder: curve.json (the scores against steps and minutes) and
    settings.json -> the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(curve, indent=1) + "\n")
    (out / "settings.json").write_text(json.dumps(asdict(settings), indent=1) + "\n")
    return out
