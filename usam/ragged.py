"""Ragged rows without per-row host synchronisations.

A batch's clips (C, N, ...) belong to samples (`sample_index`); losses and decoders want each sample's valid
entries joined in clip order, (B, M, ...). A Python loop over clips and samples with `int(owner[c])` or a boolean
index per row stops the GPU once per row (a device-to-host copy each); this does the bookkeeping on the host from
two small copies, whatever the batch size.
"""
from __future__ import annotations

import torch


def pack_rows(values: torch.Tensor, mask: torch.Tensor, owner: torch.Tensor, n_rows: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """values (C, N, ...) with valid entries mask (C, N), row c going to output row owner[c] (C,) ->
    (packed (n_rows, M, ...): each output row's valid entries, its input rows joined in order, zero padded;
    lengths (n_rows,) long). M is the longest output row (0 when nothing is valid). Differentiable in values."""
    counts = mask.sum(1).tolist()  # host copy 1: valid entries per input row
    owners = owner.tolist()  # host copy 2
    lengths, starts = [0] * n_rows, []
    for o, n in zip(owners, counts):  # a loop over rows, not entries
        starts.append(lengths[o])
        lengths[o] += n
    out = values.new_zeros((n_rows, max(lengths, default=0), *values.shape[2:]))
    total = sum(counts)
    if total:
        flat = values[mask.bool()]  # (total, ...) input row by row, in position order
        # each entry's output row, and its column: its input row's start plus its rank among that row's entries
        repeats = torch.tensor(counts)
        rows = torch.repeat_interleave(torch.tensor(owners), repeats, output_size=total)
        offset = torch.repeat_interleave(torch.tensor(starts) - (repeats.cumsum(0) - repeats), repeats,
                                         output_size=total)
        cols = torch.arange(total) + offset
        out = out.index_put((rows.to(values.device), cols.to(values.device)), flat)
    return out, torch.tensor(lengths, device=values.device)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The mean over dimension `dim` of the entries mask marks valid: x (..., D) with mask x's shape without D,
    e.g. x (B, T, D), mask (B, T) -> (B, D). A row with no valid entry gives zeros."""
    count = mask.sum(dim).unsqueeze(-1).clamp(min=1)  # an integer count: exact whatever x's dtype
    return (x * mask[..., None].to(x.dtype)).sum(dim) / count


def row_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B,) lengths -> (B, width) bool, True on each row's first lengths[b] positions."""
    return torch.arange(width, device=lengths.device)[None] < lengths[:, None]


def drop_unattended(embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Remove the positions no token attends (padding; the unused slots of spelled audio tokens) before the LLM.

    embeds (B, L, D), attention_mask (B, L), labels (B, L) or None -> the same rows with only their attended
    positions, in order, right-aligned (left padding) into (B, L', D), (B, L'), (B, L'), L' the most attended
    positions of any row. The LLM's outputs at the attended positions are unchanged (no query attends a masked key,
    and position ids come from the mask's running count), and right alignment puts every answer at the end, so the
    columns that need logits are the longest answer's. A labelled position must follow an attended one (its
    predictor); labels at removed positions must be -100. Differentiable in embeds."""
    keep = attention_mask.bool()
    n_rows, length = keep.shape
    counts = keep.sum(1)
    bad = torch.zeros((), dtype=torch.long, device=keep.device)
    if labels is not None:
        labelled = labels != -100
        bad = (labelled & ~keep).sum() + (labelled[:, 1:] & ~keep[:, :-1]).sum()
    width, n_bad = torch.stack([counts.max() if n_rows else bad, bad]).tolist()  # the one host copy
    if n_bad:
        raise ValueError("drop_unattended: a labelled position is unattended or follows an unattended one")
    flat = keep.flatten().nonzero().squeeze(1)  # kept positions, row by row (one more sync, whatever the batch)
    rows = flat // length
    cols = (keep.long().cumsum(1) - 1 + (width - counts)[:, None]).flatten().index_select(0, flat)
    out = embeds.new_zeros((n_rows, width, embeds.shape[-1])).index_put(
        (rows, cols), embeds.flatten(0, 1).index_select(0, flat))
    mask = attention_mask.new_zeros((n_rows, width)).index_put((rows, cols), attention_mask.flatten()[flat])
    if labels is None:
        return out, mask, None
    return out, mask, labels.new_full((n_rows, width), -100).index_put((rows, cols), labels.flatten()[flat])


def length_groups(lengths: list[int], min_saving: float = 0.15) -> list[list[int]]:
    """Rows of these lengths in one padded batch, or in two (short rows, long rows) when two padded batches hold
    at least `min_saving` fewer positions: training mixes reading-practice rows (a spelled sentence) with clips
    several times longer, and a batch pads every row to the longest. One group: the rows in order; two: each
    lists its rows shortest first."""
    order = sorted(range(len(lengths)), key=lambda r: lengths[r])
    if len(order) < 2:
        return [list(range(len(lengths)))]
    sorted_lengths = [lengths[r] for r in order]
    whole = len(order) * sorted_lengths[-1]
    # a split before row i pads the first i rows to sorted_lengths[i - 1] and the rest to the longest
    cost, split = min((i * sorted_lengths[i - 1] + (len(order) - i) * sorted_lengths[-1], i)
                      for i in range(1, len(order)))
    if cost > (1 - min_saving) * whole:
        return [list(range(len(lengths)))]
    return [order[:split], order[split:]]
