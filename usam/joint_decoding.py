"""Joint CTC / LLM decoding (generation's ctc_weight; hybrid CTC-attention decoding, Watanabe et al. 2017).

The CTC head (usam/ctc.py) already says what a clip's audio tokens spell. Left alone, the LLM writes fluent text
that drifts from it. Here every candidate next token y of a hypothesis g is scored

    (1 - w) * log p_LLM(y | g)  +  w * (log p_CTC(g + y ...) - log p_CTC(g ...))

where p_CTC(h ...) is the CTC prefix probability of h over the clip's frames (the probability that the frames
spell something that begins with h), and an end token scores the probability that they spell exactly g. Summed
over a hypothesis, the second term is w * log p_CTC of its whole text, so greedy or beam search looks for the text
that both the LLM and the alignment find likely. Only the LLM's `candidates` best tokens per step are scored (the
pre-beam of ESPnet's decoder); the rest are masked out.

The prefix probabilities follow the CTC forward recursion, one pass over the frames per step, vectorised over the
rows and candidates. Written here because the libraries that have it (ESPnet's CTCPrefixScore, torchaudio's
flashlight decoder) would bring a whole toolkit, or do not load with this torch.
"""
from __future__ import annotations

import torch
from transformers import LogitsProcessor

from usam.ragged import pack_rows, row_mask

# log "zero" of the recursion: finite, so that a prefix longer than the clip's frames scores very low instead of
# giving -inf - -inf = nan in the score differences
_LOG_ZERO = -1e4


def clip_log_probs(logits: torch.Tensor, mask: torch.Tensor, sample_index: torch.Tensor, n_samples: int,
                   blank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CTC logits (C, N, V + 1) of C clips with valid frames mask (C, N), owned by samples sample_index (C,) ->
    (per-sample log-probabilities (B, T, V + 1) with each sample's clips joined in order, frame counts (B,)).
    Frames past a sample's end emit the blank with probability 1, so they change no prefix probability."""
    packed, lengths = pack_rows(logits.float().log_softmax(-1).clamp(min=_LOG_ZERO), mask, sample_index, n_samples)
    width = max(packed.shape[1], 1)
    padding = torch.full((logits.shape[-1],), _LOG_ZERO, device=logits.device)
    padding[blank] = 0.0
    out = padding.expand(n_samples, width, -1).clone()
    if packed.shape[1]:
        valid = row_mask(lengths, packed.shape[1])
        out[:, : packed.shape[1]][valid] = packed[valid]
    return out, lengths


class CTCPrefixScorer:
    """Prefix probabilities of hypotheses over fixed CTC log-probabilities x (R, T, V + 1), blank at `blank`.

    A hypothesis' state is (r_n, r_b) (R, T): the log-probability that frames 0..t spell it, the last frame on its
    last token (r_n) or on the blank (r_b), and psi (R,), its prefix log-probability."""

    def __init__(self, log_probs: torch.Tensor, blank: int):
        self.x = log_probs
        self.blank = blank

    def initial(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The empty hypothesis: only blanks so far; its prefix probability is 1."""
        r_b = self.x[..., self.blank].cumsum(-1)
        return torch.full_like(r_b, _LOG_ZERO), r_b, r_b.new_zeros(r_b.shape[0])

    def extend(self, sample: torch.Tensor, r_n: torch.Tensor, r_b: torch.Tensor, last: torch.Tensor,
               candidates: torch.Tensor, empty: torch.Tensor):
        """Hypotheses g of rows `sample` (R,) of x (states r_n, r_b (R, T); last token (R,), -1 if g is empty; empty
        (R,) bool) extended by candidates (R, k) -> (psi (R, k) prefix log-probabilities of g + c, and their states
        r_n, r_b (R, k, T))."""
        R, T = r_n.shape
        k = candidates.shape[1]
        frames = torch.arange(T, device=r_n.device)
        xc = self.x[sample[:, None, None], frames[None, :, None], candidates[:, None, :]]  # (R, T, k), no full copy
        xb = self.x[sample, :, self.blank]  # (R, T)
        # phi: the probability mass from which c may start at the next frame; a repeat of g's last token must be
        # separated from it by a blank
        total = torch.logaddexp(r_n, r_b)[..., None].expand(R, T, k)
        phi = torch.where((candidates == last[:, None])[:, None, :], r_b[..., None].expand(R, T, k), total)
        new_n = torch.full((R, T, k), _LOG_ZERO, dtype=r_n.dtype, device=r_n.device)
        new_b = torch.full_like(new_n, _LOG_ZERO)
        new_n[:, 0] = torch.where(empty[:, None], xc[:, 0], torch.full_like(xc[:, 0], _LOG_ZERO))
        psi = new_n[:, 0].clone()
        for t in range(1, T):
            new_n[:, t] = torch.logaddexp(new_n[:, t - 1], phi[:, t - 1]) + xc[:, t]
            new_b[:, t] = torch.logaddexp(new_b[:, t - 1], new_n[:, t - 1]) + xb[:, t, None]
            psi = torch.logaddexp(psi, phi[:, t - 1] + xc[:, t])
        return psi.clamp(min=_LOG_ZERO), new_n.transpose(1, 2), new_b.transpose(1, 2)

    @staticmethod
    def final(r_n: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
        """(R,) log-probability that the frames spell exactly the hypothesis."""
        return torch.logaddexp(r_n[:, -1], r_b[:, -1]).clamp(min=_LOG_ZERO)


class CTCJointLogitsProcessor(LogitsProcessor):
    """Rescores the LLM's next-token scores with the CTC prefix probabilities of each row's clips (module doc).

    log_probs (B, T, V + 1) from clip_log_probs; active (B,) which samples are rescored (the others pass through);
    end_ids: the tokens that end an answer (scored by the full CTC probability); num_beams: rows per sample.
    The processor keeps each hypothesis' recursion state between steps, keyed by its tokens, so beams may reorder."""

    def __init__(self, log_probs: torch.Tensor, active: torch.Tensor, weight: float, end_ids, blank: int,
                 candidates: int = 16, num_beams: int = 1):
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"ctc_weight must be in (0, 1], got {weight}")
        if candidates < 1:
            raise ValueError(f"ctc_candidates must be >= 1, got {candidates}")
        self.scorer = CTCPrefixScorer(log_probs, blank)
        self.active = active.bool()
        self.weight = weight
        self.end_ids = torch.tensor(sorted(end_ids), device=log_probs.device)
        self.candidates = candidates
        self.num_beams = num_beams
        r_n, r_b, psi = self.scorer.initial()
        # per sample: hypothesis tokens -> (r_n (T,), r_b (T,), psi ())
        self.states: list[dict[tuple, tuple]] = [{(): (r_n[b], r_b[b], psi[b])} for b in range(r_n.shape[0])]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] > self.scorer.blank:
            raise ValueError(f"the LLM scores {scores.shape[-1]} tokens but the CTC head only {self.scorer.blank}")
        rows, sample, prefixes, states = [], [], [], []
        for r in range(input_ids.shape[0]):
            b = r // self.num_beams
            prefix = tuple(input_ids[r].tolist())
            # a finished row (greedy pads it after its end token) has no state: it passes through
            if bool(self.active[b]) and prefix in self.states[b]:
                rows.append(r), sample.append(b), prefixes.append(prefix), states.append(self.states[b][prefix])
        if not rows:
            return scores
        device = scores.device
        r_n = torch.stack([s[0] for s in states])
        r_b = torch.stack([s[1] for s in states])
        psi_g = torch.stack([s[2] for s in states])
        last = torch.tensor([p[-1] if p else -1 for p in prefixes], device=device)
        empty = torch.tensor([not p for p in prefixes], device=device)
        index = torch.tensor(rows, device=device)
        log_p = scores.index_select(0, index).float().log_softmax(-1)
        top = log_p.topk(min(self.candidates, scores.shape[-1]), dim=-1).indices  # (R, k): the LLM's pre-beam
        is_end = torch.isin(top, self.end_ids)
        # end tokens are not spelled by the CTC: they score "the frames spell exactly g"
        psi_h, new_n, new_b = self.scorer.extend(torch.tensor(sample, device=device), r_n, r_b, last,
                                                 top.masked_fill(is_end, self.scorer.blank), empty)
        psi_h = torch.where(is_end, CTCPrefixScorer.final(r_n, r_b)[:, None].expand_as(psi_h), psi_h)
        joint = (1 - self.weight) * log_p.gather(-1, top) + self.weight * (psi_h - psi_g[:, None])
        out = scores.clone()
        out[index] = float("-inf")
        out[index[:, None], top] = joint.to(out.dtype)
        # only the extensions can be asked for at the next step
        fresh: list[dict[tuple, tuple]] = [{} for _ in self.states]
        for i, (b, p) in enumerate(zip(sample, prefixes)):
            for j, token in enumerate(top[i].tolist()):
                if not bool(is_end[i, j]):
                    fresh[b][p + (token,)] = (new_n[i, j], new_b[i, j], psi_h[i, j])
        for b in set(sample):
            self.states[b] = fresh[b]
        return out


def greedy_spellings(log_probs: torch.Tensor, blank: int) -> list[list[int]]:
    """What each sample's frames spell on their best path: log_probs (B, T, V + 1) from clip_log_probs (padding
    frames emit the blank) -> B lists of token ids, repeats merged and blanks dropped."""
    best = log_probs.argmax(-1)  # (B, T)
    changed = torch.ones_like(best, dtype=torch.bool)
    changed[:, 1:] = best[:, 1:] != best[:, :-1]
    keep = changed & (best != blank)
    return [row[k].tolist() for row, k in zip(best, keep)]


def sequence_log_probs(log_probs: torch.Tensor, lengths: torch.Tensor, answers: list[list[list[int]]],
                       blank: int) -> torch.Tensor:
    """log p_CTC of whole token sequences: log_probs (B, T, V + 1) and frame counts (B,) from clip_log_probs,
    answers: per sample, K token lists (no end token) -> (B, K). CTC's forward reads only the emissions of the
    target tokens and the blank, so only the answers' columns are kept: (B, T, U + 1) instead of (B, T, V + 1)."""
    n_samples, n_answers = len(answers), len(answers[0])
    columns = sorted({t for per_sample in answers for a in per_sample for t in a})
    where = {t: i for i, t in enumerate(columns)}
    kept = log_probs[..., torch.tensor([*columns, blank], device=log_probs.device)]
    flat = torch.tensor([where[t] for per_sample in answers for a in per_sample for t in a], dtype=torch.long)
    target_lengths = torch.tensor([len(a) for per_sample in answers for a in per_sample])
    frames = kept.repeat_interleave(n_answers, 0).transpose(0, 1)  # (T, B*K, U + 1)
    scores = -torch.nn.functional.ctc_loss(frames, flat.to(frames.device), lengths.repeat_interleave(n_answers),
                                           target_lengths.to(frames.device), blank=len(columns), reduction="none")
    return scores.view(n_samples, n_answers)
