"""CTC alignment of audio tokens onto the LLM's vocabulary (loss.lambda_ctc; Soundwave, ACL 2025; LegoSLM,
arXiv 2505.11352).

The projector's audio tokens A (B, N, D_llm) are scored against every row of the LLM's input-embedding matrix
E (V, D_llm) plus one learned blank vector, by cosine similarity times a learned scale, and a CTC loss asks
the token sequence to spell the answer's tokens in order. An audio token that wins the CTC path for "dog"
points the way E["dog"] points, so the frozen LLM reads it much as it reads the word: the connector learns to
speak the LLM's language without the LLM in the loop, in steps that cost a projector forward and one
(N x V) matrix product instead of a pass through every LLM layer.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class CTCAlignment(nn.Module):
    def __init__(self, llm_dim: int, init_scale: float = 10.0):
        super().__init__()
        self.blank = nn.Parameter(torch.randn(llm_dim) * 0.02)
        # cosine logits lie in [-1, 1]; a softmax over ~50k rows needs a wider range to become confident
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, targets: list[torch.Tensor],
                embeddings: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D), mask (B, N), targets: B 1-D LongTensors of token ids (an empty one skips its row),
        embeddings (V, D) -> mean CTC loss per target token (fp32 scalar), 0 if no row has a target."""
        rows = [b for b, t in enumerate(targets) if t.numel() > 0 and bool(mask[b].any())]
        if not rows:
            # a zero that keeps the tokens and this module's parameters in the graph (every rank's backward then
            # reaches the same parameters, as DeepSpeed expects)
            return (tokens.float().sum() + self.blank.float().sum() + self.log_scale.float()) * 0.0
        index = torch.tensor(rows, device=tokens.device)
        audio = nn.functional.normalize(tokens.index_select(0, index).float(), dim=-1)  # (R, N, D)
        vocab = torch.cat([embeddings.detach().float(), self.blank[None].float()])  # (V + 1, D); blank = V
        vocab = nn.functional.normalize(vocab, dim=-1)
        logits = audio @ vocab.T * self.log_scale.float().exp()  # (R, N, V + 1)
        log_probs = logits.log_softmax(-1).transpose(0, 1)  # (N, R, V + 1): CTC wants time first
        input_lengths = mask.index_select(0, index).sum(1)
        chosen = [targets[b] for b in rows]
        target_lengths = torch.tensor([t.numel() for t in chosen], device=tokens.device)
        # zero_infinity: a clip too short for its transcript (fewer tokens than labels) adds nothing, not inf
        return nn.functional.ctc_loss(log_probs, torch.cat(chosen).to(tokens.device), input_lengths,
                                      target_lengths, blank=vocab.shape[0] - 1, reduction="mean",
                                      zero_infinity=True)
