"""Semantic-aware contrastive loss (docs/architecture.md, "SACL"), with every defect 8 of the paper's code fixed:
per-sample min-max over valid tokens, a straight-through hard selection, softmax over tokens, cosine
similarities, the full B x B score matrix, and no pad rows in the text.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from usam.config import SACLSettings
from usam.precision import run_in
from usam.ragged import masked_mean

EPS = 1e-6


def _masked_minmax(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Min-max normalise x (B, N) within each row over its valid entries."""
    big = torch.finfo(x.dtype).max
    lo = torch.where(mask, x, torch.full_like(x, big)).amin(dim=1, keepdim=True)
    hi = torch.where(mask, x, torch.full_like(x, -big)).amax(dim=1, keepdim=True)
    return (x - lo) / (hi - lo + EPS) * mask


class SemanticAwareContrastiveLoss(nn.Module):
    def __init__(self, settings: SACLSettings, dim: int):
        super().__init__()
        self.s = settings
        self.score_mlp = nn.Sequential(nn.Linear(dim, settings.score_hidden), nn.GELU(), nn.Linear(settings.score_hidden, 1))
        self.calibrator = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, settings.calib_hidden), nn.GELU(),
                                        nn.Linear(settings.calib_hidden, settings.max_slots))

    def significance(self, audio: torch.Tensor, audio_mask: torch.Tensor, text: torch.Tensor,
                     text_mask: torch.Tensor) -> torch.Tensor:
        """s_i = (1-beta) sigmoid(MLP(a_i)) + beta * 0.5 * (rel_i + sal_i), per sample over valid tokens."""
        a = nn.functional.normalize(audio, dim=-1)
        rel = torch.einsum("bnd,bd->bn", a, nn.functional.normalize(masked_mean(nn.functional.normalize(text, dim=-1), text_mask), dim=-1))
        sal = torch.einsum("bnd,bd->bn", a, nn.functional.normalize(masked_mean(a, audio_mask), dim=-1))
        # the heads run in their own dtype (bf16 under DeepSpeed); the scores and all sums below are fp32
        learned = torch.sigmoid(run_in(self.score_mlp, audio).float().squeeze(-1))
        beta = self.s.beta
        s = (1 - beta) * learned + beta * 0.5 * (_masked_minmax(rel, audio_mask) + _masked_minmax(sal, audio_mask))
        return s * audio_mask

    def calibrated_slots(self, audio: torch.Tensor, audio_mask: torch.Tensor, s: torch.Tensor):
        """Select the top ceil(rho N) tokens (straight-through) and mix them into K = ceil(kappa N_sel) slots
        (at most `max_slots`: the calibrator's last Linear gives one logit per token and slot).

        Returns slots (B, K_max, D) and slot mask (B, K_max).
        """
        batch, n, _ = audio.shape
        n_valid = audio_mask.sum(1)
        n_sel = torch.ceil(self.s.rho * n_valid.float()).long().clamp(min=1)
        order = torch.argsort(s.masked_fill(~audio_mask, -1.0), dim=1, descending=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=audio.device).expand(batch, -1))
        hard = ((rank < n_sel[:, None]) & audio_mask).to(s.dtype)
        selected_mask = hard.bool()
        gate = hard + s - s.detach()  # straight-through: forward is the hard mask, gradient flows into s
        selected = audio * gate[..., None]
        n_slots = torch.ceil(self.s.kappa * n_sel.float()).long().clamp(min=1, max=self.s.max_slots)
        k_max = int(n_slots.max())
        slot_logits = run_in(self.calibrator, selected).float()[..., :k_max].transpose(1, 2)  # (B, K, N)
        slot_logits = slot_logits.masked_fill(~selected_mask[:, None, :], float("-inf"))
        weights = torch.softmax(slot_logits, dim=-1)  # over tokens: each slot is a convex mix of selected tokens
        slots = torch.einsum("bkn,bnd->bkd", weights, selected)
        slot_mask = torch.arange(k_max, device=audio.device)[None, :] < n_slots[:, None]
        return slots, slot_mask

    def scores(self, slots, slot_mask, text, text_mask) -> torch.Tensor:
        """Alignment score matrix S (B_audio, B_text): 0.5 (mean_k max_l sim + mean_l max_k sim), cosine sims."""
        c = nn.functional.normalize(slots, dim=-1)
        t = nn.functional.normalize(text, dim=-1)
        sim = torch.einsum("ikd,jld->ijkl", c, t)  # (Ba, Bt, K, L)
        neg = torch.finfo(sim.dtype).min
        both = slot_mask[:, None, :, None] & text_mask[None, :, None, :]
        sim = sim.masked_fill(~both, neg)
        a2t = sim.amax(dim=3)  # (Ba, Bt, K)
        a2t = (a2t * slot_mask[:, None, :]).sum(-1) / slot_mask.sum(-1)[:, None].clamp(min=1)
        t2a = sim.amax(dim=2)  # (Ba, Bt, L)
        t2a = (t2a * text_mask[None, :, :]).sum(-1) / text_mask.sum(-1)[None, :].clamp(min=1)
        return 0.5 * (a2t + t2a)

    def forward(self, audio: torch.Tensor, audio_mask: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor) -> torch.Tensor:
        """audio (B, N, D) projector output, text (B, L, D) detached answer embeddings; masks True on valid."""
        batch = audio.shape[0]
        keep = (audio_mask.any(1) & text_mask.any(1))
        if int(keep.sum()) < 2:
            warnings.warn("SACL needs at least 2 samples with audio and answer text in a batch; it is 0 for this batch",
                          stacklevel=2)
            # 0, but through every head, so that all parameters get a (zero) gradient on every rank:
            # distributed gradient reduction expects the same parameters on each rank
            heads = run_in(self.score_mlp, audio).float().sum() + run_in(self.calibrator, audio).float().sum()
            return heads * 0.0
        if not bool(keep.all()):
            audio, audio_mask, text, text_mask = audio[keep], audio_mask[keep], text[keep], text_mask[keep]
            batch = audio.shape[0]
        audio, text = audio.float(), text.float().detach()
        s = self.significance(audio, audio_mask, text, text_mask)
        slots, slot_mask = self.calibrated_slots(audio, audio_mask, s)
        scores = self.scores(slots, slot_mask, text, text_mask)  # (B, B)
        positive = scores.diagonal()
        margin = self.s.margin
        off = ~torch.eye(batch, dtype=torch.bool, device=audio.device)
        cost_text = (margin + scores - positive[:, None]).clamp(min=0) * off  # audio i vs wrong texts
        cost_audio = (margin + scores - positive[None, :]).clamp(min=0) * off  # text j vs wrong audios
        if self.s.hardest_negative:
            hinge = cost_text.amax(1).mean() + cost_audio.amax(0).mean()
        else:
            hinge = (cost_text.sum(1) + cost_audio.sum(0)).mean() / (batch - 1)
        ratio = (s.sum(1) / audio_mask.sum(1).clamp(min=1)).mean()
        return hinge + (ratio - self.s.rho) ** 2

