"""Posterior-weighted audio tokens (audio_tokens.mode posterior | hybrid; LegoSLM, arXiv 2505.11352).

The CTC head (usam/ctc.py) scores every projector token A (C, N, D) against the LLM's input embeddings E (V, D)
and a blank. Instead of A, the LLM then reads p @ E: the token's posterior over the vocabulary times E, a point
among the text embeddings the LLM was trained on, so it reads the audio much as it reads the words the tokens
spell. The sequence keeps its length (C, N): a dropped frame (mostly blank) or a frame merged into its run's
first frame is only masked out (`keep` False), and the model turns that into holes in the LLM's attention mask,
so batches, placeholders and left padding stay as they are.

Choices (all measured in docs/demo.md): frames whose best row is the blank, or whose blank probability is at least
`blank_threshold`, are dropped, so with threshold 1.0 the kept frames are those of the greedy CTC path;
runs of consecutive frames with the same best non-blank token are averaged into the run's first frame
(`merge_runs`); the posterior is renormalised over the `top_k` best non-blank rows at `temperature` (top_k 1 is
the best token's embedding row). Gradients reach the projector through the top-k weights; the argmax, the top-k
choice and the blank decision are not differentiable.
"""
from __future__ import annotations

import torch
from torch import nn

from usam.config import AudioTokenSettings


@torch.no_grad()
def _frame_scores(ctc, tokens: torch.Tensor, embeddings: torch.Tensor, top_k: int | None,
                  logits: torch.Tensor | None = None):
    """(blank probability (C, N), best row incl. blank (C, N), top-k non-blank rows (C, N, k) or None) over the whole
    vocabulary, without gradients: the full (C*N x V) product is the costly part, so it is not kept for backward.
    logits: ctc.logits(tokens, embeddings) where the caller already has them."""
    if logits is None:
        logits = ctc.logits(tokens, embeddings)  # (C, N, V + 1), blank last
    vocab = embeddings.shape[0]
    top = None if top_k is None else logits[..., :vocab].topk(min(top_k, vocab), dim=-1).indices
    return logits.softmax(-1)[..., vocab], logits.argmax(-1), top


def _run_starts(best: torch.Tensor, mask: torch.Tensor, blank: int) -> torch.Tensor:
    """(C, N) bool: the frame begins a run (a non-blank best token differing from the previous valid frame's, or
    any blank frame). Runs never cross padding."""
    previous = torch.cat([torch.full_like(best[:, :1], -1), best[:, :-1]], dim=1)
    return mask & ((best != previous) | (best == blank))


def posterior_tokens(ctc, tokens: torch.Tensor, mask: torch.Tensor, embeddings: torch.Tensor,
                     settings: AudioTokenSettings, logits: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (C, N, D) projector output, mask (C, N), embeddings (V, D) the LLM's input embeddings ->
    (posterior tokens (C, N, D) in the embeddings' dtype, keep (C, N) bool: the frames the LLM attends to).
    logits: the CTC head's ctc.logits(tokens, embeddings) (C, N, V + 1) without gradients, where the caller
    already computed them (inference reuses them for joint decoding and answer scores)."""
    vocab = embeddings.shape[0]
    table = embeddings.detach().float()
    p_blank, best, top = _frame_scores(ctc, tokens, embeddings, settings.top_k, logits)
    with torch.autocast(tokens.device.type, enabled=False):
        if settings.top_k is None:  # the whole vocabulary, with gradients through the full product
            weights = (ctc.logits(tokens, embeddings)[..., :vocab] / settings.temperature).softmax(-1)
            mixed = weights @ table
        else:
            # the top-k logits again, with gradients: a gather of k rows per frame, not the whole vocabulary
            rows = table[top]  # (C, N, k, D)
            audio = nn.functional.normalize(tokens.float(), dim=-1)
            logits = torch.einsum("cnd,cnkd->cnk", audio, nn.functional.normalize(rows, dim=-1))
            weights = (logits * ctc.log_scale.float().exp() / settings.temperature).softmax(-1)
            mixed = torch.einsum("cnk,cnkd->cnd", weights, rows)  # (C, N, D): where the text embeddings lie
        if settings.merge_runs:
            starts = _run_starts(best, mask, vocab)
            run = starts.long().cumsum(1) - 1  # (C, N): run index of each frame
            same = (run[:, :, None] == run[:, None, :]) & mask[:, None, :]  # (C, N_start, N): frames of each run
            same = same & starts[:, :, None]
            count = same.sum(-1, keepdim=True).clamp(min=1)
            mixed = (same.float() @ mixed) / count  # each run's mean at its first frame
            p_blank = ((same.float() @ p_blank[..., None].float()) / count).squeeze(-1)
            kept = starts
        else:
            kept = mask
    # a frame whose best row is the blank spells nothing in greedy CTC: dropped, or its non-blank rows (each far
    # less likely than the blank) would reach the LLM as noise
    keep = kept & mask & (best != vocab)
    if settings.blank_threshold < 1.0:
        keep = keep & (p_blank < settings.blank_threshold)
    return mixed.to(embeddings.dtype), keep
