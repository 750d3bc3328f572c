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


def row_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B,) lengths -> (B, width) bool, True on each row's first lengths[b] positions."""
    return torch.arange(width, device=lengths.device)[None] < lengths[:, None]
