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
    def __init__(self, llm_dim: int, init_scale: float = 10.0, vocab_rows: int | None = 4096):
        """vocab_rows: the softmax runs over the batch's target tokens plus random other rows of the vocabulary,
        this many in all (a sampled softmax); None: every row. On 2 CPU cores a full 49k-row softmax over 16 clips
        costs about 9 s a step in fp32, 4,096 rows about 0.5 s."""
        super().__init__()
        self.vocab_rows = vocab_rows
        self.blank = nn.Parameter(torch.randn(llm_dim) * 0.02)
        # cosine logits lie in [-1, 1]; a softmax over ~50k rows needs a wider range to become confident.
        # Shape (1,), not (): DeepSpeed's broadcast of parameters views each one as bytes, which a 0-d one refuses
        self.log_scale = nn.Parameter(torch.full((1,), math.log(init_scale)))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, targets: list[torch.Tensor],
                embeddings: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D), mask (B, N), targets: B 1-D LongTensors of token ids (an empty one skips its row),
        embeddings (V, D) -> mean CTC loss per target token (fp32 scalar), 0 if no row has a target."""
        has_frames = mask.any(1).tolist()  # one host copy, not one per row
        rows = [b for b, t in enumerate(targets) if t.numel() > 0 and has_frames[b]]
        if not rows:
            # a zero that keeps the tokens and this module's parameters in the graph (every rank's backward then
            # reaches the same parameters, as DeepSpeed expects)
            return (tokens.float().sum() + self.blank.float().sum() + self.log_scale.float().sum()) * 0.0
        index = torch.tensor(rows, device=tokens.device)
        chosen = [targets[b].to(tokens.device) for b in rows]
        vocab_ids, chosen = self._rows(chosen, embeddings.shape[0], tokens.device)
        # fp32 whatever the autocast: a bf16 softmax over thousands of rows and its CTC backward are both
        # imprecise and (on CPU) orders of magnitude slower
        with torch.autocast(tokens.device.type, enabled=False):
            audio = nn.functional.normalize(tokens.index_select(0, index).float(), dim=-1)  # (R, N, D)
            table = embeddings.detach().index_select(0, vocab_ids).float()
            vocab = nn.functional.normalize(torch.cat([table, self.blank[None].float()]), dim=-1)  # (K + 1, D)
            logits = audio @ vocab.T * self.log_scale.float().exp()  # (R, N, K + 1); blank = K
            log_probs = logits.log_softmax(-1).transpose(0, 1)  # (N, R, K + 1): CTC wants time first
            input_lengths = mask.index_select(0, index).sum(1)
            target_lengths = torch.tensor([t.numel() for t in chosen], device=tokens.device)
            # zero_infinity: a clip too short for its answer (fewer tokens than labels) adds nothing, not inf
            return nn.functional.ctc_loss(log_probs, torch.cat(chosen), input_lengths, target_lengths,
                                          blank=vocab.shape[0] - 1, reduction="mean", zero_infinity=True)

    def logits(self, tokens: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D), embeddings (V, D) -> fp32 logits (B, N, V + 1) over every vocabulary row and the blank
        (last): cosine times the learned scale, as the loss scores them."""
        with torch.autocast(tokens.device.type, enabled=False):
            vocab = nn.functional.normalize(torch.cat([embeddings.float(), self.blank[None].float()]), dim=-1)
            return nn.functional.normalize(tokens.float(), dim=-1) @ vocab.T * self.log_scale.float().exp()

    @torch.no_grad()
    def greedy(self, tokens: torch.Tensor, mask: torch.Tensor, embeddings: torch.Tensor) -> list[list[int]]:
        """Best path of each row over every vocabulary row and the blank, repeats merged and blanks dropped:
        tokens (B, N, D), mask (B, N), embeddings (V, D) -> B lists of vocabulary ids (what the tokens spell)."""
        best = self.logits(tokens, embeddings).argmax(-1)  # (B, N)
        blank = embeddings.shape[0]
        out = []
        for row, valid in zip(best.tolist(), mask.tolist()):
            ids, last = [], None
            for b, ok in zip(row, valid):
                if not ok:
                    continue
                if b != last and b != blank:
                    ids.append(b)
                last = b
            out.append(ids)
        return out

    def _rows(self, targets: list[torch.Tensor], vocab_size: int, device):
        """(vocabulary ids of the softmax rows (K,), targets renumbered into those rows)."""
        needed = torch.unique(torch.cat(targets))
        if self.vocab_rows is None or self.vocab_rows >= vocab_size:
            return torch.arange(vocab_size, device=device), targets
        extra = max(self.vocab_rows - needed.numel(), 0)
        others = torch.randperm(vocab_size, device=device)[: extra + needed.numel()]
        others = others[~torch.isin(others, needed)][:extra]
        vocab_ids = torch.cat([needed, others])
        position = torch.full((vocab_size,), -1, dtype=torch.long, device=device)
        position[vocab_ids] = torch.arange(vocab_ids.numel(), device=device)
        return vocab_ids, [position[t] for t in targets]
