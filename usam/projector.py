"""Task-aware mixture-of-experts projector (docs/architecture.md, step 5).

E independent expert MLPs (an nn.ModuleList, never `[m] * E`: defect 1) map each Q-Former token into the
LLM's space. The router sees the token and the instruction embedding g (one per sample, the same for all
its windows: defect 7 paired window t with prompt token t). The mixture sums over experts, per token, never
over time (defect 2).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from usam.config import ProjectorSettings


class ProjectorOutput(NamedTuple):
    tokens: torch.Tensor  # (B, N, D_llm)
    weights: torch.Tensor  # (B, N, E) routing weights actually used (0 for experts outside the top-k)
    balance_loss: torch.Tensor  # scalar, Switch-style E * sum_e f_e * P_e over valid tokens
    z_loss: torch.Tensor  # scalar, mean logsumexp(router logits)^2


class TaskAwareMoEProjector(nn.Module):
    def __init__(self, settings: ProjectorSettings, input_dim: int, llm_dim: int):
        super().__init__()
        hidden = settings.expert_hidden_size or llm_dim
        self.num_experts, self.top_k = settings.num_experts, settings.top_k
        self.experts = nn.ModuleList([
            nn.Sequential(nn.Linear(input_dim, hidden), nn.GELU(), nn.Linear(hidden, llm_dim))
            for _ in range(settings.num_experts)
        ])
        self.use_instruction = settings.use_instruction
        self.balance_scope = settings.balance_scope
        self.instruction_proj = nn.Linear(llm_dim, input_dim) if settings.use_instruction else None
        self.router = nn.Linear(input_dim * (2 if settings.use_instruction else 1), settings.num_experts)
        # scale matching (projector.output_norm): USAMModel sets the gain to the LLM embeddings' RMS
        self.output_norm = nn.RMSNorm(llm_dim) if settings.output_norm else None

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, instruction: torch.Tensor | None) -> ProjectorOutput:
        """tokens (B, N, D_q), mask (B, N), instruction (B, D_llm) pooled instruction embedding."""
        router_in = tokens
        if self.use_instruction:
            g = self.instruction_proj(instruction.to(tokens.dtype))  # (B, D_q)
            router_in = torch.cat([tokens, g[:, None, :].expand_as(tokens)], dim=-1)
        logits = self.router(router_in).float()  # (B, N, E)
        probs = torch.softmax(logits, dim=-1)
        weights = probs
        if self.top_k is not None and self.top_k < self.num_experts:
            top = torch.topk(probs, self.top_k, dim=-1)
            weights = torch.zeros_like(probs).scatter(-1, top.indices, top.values)
            weights = weights / weights.sum(-1, keepdim=True)
        expert_out = torch.stack([expert(tokens) for expert in self.experts], dim=-2)  # (B, N, E, D_llm)
        mixed = (weights.to(expert_out.dtype)[..., None] * expert_out).sum(dim=-2)  # sum over experts
        if self.output_norm is not None:
            mixed = self.output_norm(mixed)
        mixed = mixed * mask[..., None]
        valid = mask.float()
        count = valid.sum().clamp(min=1)
        if self.num_experts > 1:
            chosen = nn.functional.one_hot(probs.argmax(-1), self.num_experts).float()
            routed = torch.cat([(chosen * valid[..., None]).sum((0, 1)), valid.sum()[None]])  # (E + 1,) counts
            if self.training and self.balance_scope == "ranks":
                routed = _summed_over_ranks(routed)
            f = routed[:-1] / routed[-1].clamp(min=1)  # fraction of tokens sent to each expert (no gradient)
            p = (probs * valid[..., None]).sum((0, 1)) / count  # this micro-batch's mean router probability
            balance = self.num_experts * (f * p).sum()
        else:  # one expert: nothing to balance (a constant 1 would only look like a loss)
            balance = logits.new_zeros(())
        z_loss = ((torch.logsumexp(logits, dim=-1) ** 2) * valid).sum() / count
        return ProjectorOutput(mixed, weights * valid[..., None], balance, z_loss)


def _summed_over_ranks(counts: torch.Tensor) -> torch.Tensor:
    """Counts summed over the data-parallel ranks (every rank runs the projector once per micro-batch, in lock-step,
    so the collective matches); unchanged outside a distributed run."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return counts
    counts = counts.detach().clone()
    dist.all_reduce(counts)
    return counts
