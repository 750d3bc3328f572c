"""The probe heads: a linear classifier on pooled frames, and a CTC transcriber on stacked frames.

Both train on cached features only (milliseconds a step), and report a curve of their test score against steps.
"""
from __future__ import annotations

import random

import torch
from torch import nn

from usam.ctc import CTCAlignment


def _fit(params, lr: float, steps: int, eval_at, batch_loss, evaluate) -> list[dict]:
    """AdamW over `params` for `steps` steps of `batch_loss()`; at each step in eval_at (and the last) a curve point
    {"step", "train_loss", **evaluate()}."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    curve = []
    for step in range(1, steps + 1):
        loss = batch_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in eval_at or step == steps:
            with torch.no_grad():
                curve.append({"step": step, "train_loss": round(loss.item(), 4), **evaluate()})
    return curve


def pooled(frames: torch.Tensor) -> torch.Tensor:
    """(T, D) -> (2D,): mean and standard deviation over time (the std keeps what a mean of speech or a beat
    washes out)."""
    std = frames.std(0) if frames.shape[0] > 1 else torch.zeros_like(frames[0])
    return torch.cat([frames.mean(0), std])


def rhythm(frames: torch.Tensor, max_lag: int = 100) -> torch.Tensor:
    """(T, D) -> (max_lag,): autocorrelation at lags 1..max_lag frames (2 s at 50 frames/s) of the frames' rectified
    flux, a novelty curve that peaks at note onsets, normalised by its lag-0 value. Periodicity, not content: the
    beat period shows as a peak whatever the instrument, which a mean and a standard deviation over time lose."""
    flux = (frames[1:] - frames[:-1]).clamp(min=0).sum(-1)  # (T-1,)
    flux = flux - flux.mean()
    energy = flux.pow(2).mean().clamp(min=1e-6)
    lags = [(flux[:-lag] * flux[lag:]).mean() if lag < flux.shape[0] else flux.new_zeros(())
            for lag in range(1, max_lag + 1)]
    return torch.stack(lags) / energy


# the clip summaries a classification probe can read (usam probe --pooling): name -> (summary, what it reads)
POOLINGS = {"meanstd": (pooled, "mean+std"), "rhythm": (rhythm, "the flux autocorrelation")}


def classification_probe(train: list[tuple[torch.Tensor, str]], tests: dict[str, list[tuple[torch.Tensor, str]]],
                         steps: int = 200, eval_at: tuple[int, ...] = (10, 25, 50, 100, 200), lr: float = 1e-2,
                         seed: int = 0) -> dict:
    """Linear softmax classifier on z-scored pooled features, full-batch AdamW. train: [(pooled (F,), label)];
    tests: {split: [(pooled, label)]}. Labels unseen in training count as errors. -> {"labels", "curve":
    [{"step", "<split>": accuracy %}]}."""
    torch.manual_seed(seed)
    labels = sorted({label for _, label in train})
    index = {label: i for i, label in enumerate(labels)}
    x = torch.stack([f for f, _ in train])
    mean, std = x.mean(0), x.std(0).clamp(min=1e-5)
    y = torch.tensor([index[label] for _, label in train])
    head = nn.Linear(x.shape[1], len(labels))

    def accuracies() -> dict:
        point = {}
        for split, rows in tests.items():
            if rows:
                guess = head((torch.stack([f for f, _ in rows]) - mean) / std).argmax(-1).tolist()
                hits = sum(labels[g] == label for g, (_, label) in zip(guess, rows))
                point[split] = round(100.0 * hits / len(rows), 1)
        return point

    curve = _fit(head.parameters(), lr, steps, eval_at,
                 lambda: nn.functional.cross_entropy(head((x - mean) / std), y), accuracies)
    return {"labels": labels, "train_size": len(train), "curve": curve}


class StackedFrameProjector(nn.Module):
    """`stack` consecutive frames concatenated, LayerNorm, then Linear -> GELU -> Linear into the LLM width."""

    def __init__(self, frame_dim: int, stack: int, hidden: int, out_dim: int):
        super().__init__()
        self.stack = stack
        self.net = nn.Sequential(nn.LayerNorm(frame_dim * stack), nn.Linear(frame_dim * stack, hidden), nn.GELU(),
                                 nn.Linear(hidden, out_dim))

    def forward(self, frames: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """frames: B tensors (T_b, D) -> tokens (B, N, out_dim), mask (B, N) with N = ceil(T / stack)."""
        rows = []
        for f in frames:
            pad = (-f.shape[0]) % self.stack
            f = nn.functional.pad(f, (0, 0, 0, pad))
            rows.append(f.reshape(-1, self.stack * f.shape[1]))
        lengths = torch.tensor([r.shape[0] for r in rows])
        x = nn.utils.rnn.pad_sequence(rows, batch_first=True)
        mask = torch.arange(x.shape[1])[None] < lengths[:, None]
        return self.net(x) * mask[..., None], mask


def ctc_probe(train: list[tuple[torch.Tensor, list[int]]], tests: dict[str, list[tuple[torch.Tensor, str]]],
              embeddings: torch.Tensor, decode, steps: int = 500, eval_at: tuple[int, ...] = (100, 200, 300, 500),
              batch_size: int = 16, lr: float = 3e-3, stack: int = 5, hidden: int = 1024, vocab: str = "corpus",
              seed: int = 0) -> dict:
    """A CTC transcriber through the LLM's frozen input embeddings (usam.ctc.CTCAlignment) on stacked frames.

    train: [(frames (T, D), answer token ids)]; tests: {split: [(frames, reference text)]}; embeddings (V, D_llm)
    of the LLM; decode(ids) -> text. vocab "corpus" restricts the softmax to the tokens of the training answers;
    "full" samples rows of the whole vocabulary as training does (loss.ctc_vocab_rows) and decodes over all of it.
    -> {"curve": [{"step", "train_loss", "<split>": WER %}], "vocab_size", "examples"}."""
    from usam.metrics import compute_metrics

    torch.manual_seed(seed)
    rng = random.Random(seed)
    if vocab == "corpus":
        vocab_ids = torch.tensor(sorted({t for _, ids in train for t in ids}))
    else:
        vocab_ids = torch.arange(embeddings.shape[0])
    position = {int(t): i for i, t in enumerate(vocab_ids.tolist())}
    table = embeddings[vocab_ids].float()
    proj = StackedFrameProjector(train[0][0].shape[1], stack, hidden, embeddings.shape[1])
    ctc = CTCAlignment(embeddings.shape[1])
    order: list[int] = []
    examples = {}

    def batch_loss():
        if len(order) < batch_size:
            order.extend(rng.sample(range(len(train)), len(train)))
        batch = [train[order.pop()] for _ in range(batch_size)]
        tokens, mask = proj([f for f, _ in batch])
        targets = [torch.tensor([position[t] for t in ids], dtype=torch.long) for _, ids in batch]
        return ctc(tokens, mask, targets, table)

    def word_error_rates() -> dict:
        point = {}
        for split, rows in tests.items():
            hyps = []
            for start in range(0, len(rows), 32):
                t, m = proj([f for f, _ in rows[start: start + 32]])
                hyps += [decode([int(vocab_ids[i]) for i in ids]) for ids in ctc.greedy(t, m, table)]
            if hyps:
                point[split] = round(compute_metrics("asr", hyps, [r for _, r in rows])["wer"], 1)
                examples[split] = [{"reference": r, "hypothesis": h} for (_, r), h in zip(rows[:3], hyps)]
        return point

    curve = _fit([*proj.parameters(), *ctc.parameters()], lr, steps, eval_at, batch_loss, word_error_rates)
    return {"curve": curve, "vocab_size": int(vocab_ids.numel()), "train_size": len(train), "examples": examples}
