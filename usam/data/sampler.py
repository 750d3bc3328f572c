"""Batch samplers: duration buckets under a cap on padded audio seconds, sharded across ranks, resumable.

Both samplers are `batch_sampler`s for torch's DataLoader (they yield lists of dataset indices).

Per epoch, everything derives from numpy's PCG64 seeded with (seed, epoch), so the batches are identical
across restarts, machines and ranks. Ranks never disagree on the batch list; rank r takes batches
r, r + R, r + 2R, ... of the shuffled list.

Equal batch counts per rank (else distributed training hangs at the last collective):
* drop_last=False (default): when the number of batches B is not a multiple of the number of ranks R, the
  batches with the most samples are split in two (before the shuffle) until it is. No sample is dropped or
  repeated. Only when there are fewer samples than ranks are some batches repeated.
* drop_last=True: the last B mod R batches of the shuffled list are dropped (different ones each epoch).

Resuming: the training loop calls `sampler.advance()` after each batch it has consumed (the DataLoader
prefetches, so the sampler itself cannot know), and saves `sampler.state_dict()` = {"epoch",
"batches_done", ...} with its checkpoint. After `load_state_dict(state)` the next iteration of that epoch
starts at the batch after the last consumed one; `set_epoch(e)` with a new epoch starts from the beginning.
"""
from __future__ import annotations

import logging
import math

import numpy as np

logger = logging.getLogger("usam.data")


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    if num_replicas is None or rank is None:
        import torch.distributed as dist

        ready = dist.is_available() and dist.is_initialized()
        num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if ready else 1)
        rank = rank if rank is not None else (dist.get_rank() if ready else 0)
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
    return num_replicas, rank


def padding_fraction(durations, batches) -> float:
    """Padded seconds / seconds of the padded batches (sum over batches of len(batch) * longest clip)."""
    durations = np.asarray(durations, dtype=np.float64)
    padded = total = 0.0
    for batch in batches:
        d = durations[np.asarray(batch, dtype=np.int64)]
        box = len(d) * d.max()
        total += box
        padded += box - d.sum()
    return padded / total if total > 0 else 0.0


def task_mix(tasks, batches) -> dict:
    """How the tasks mix inside batches: the share of batches that hold a single task, and the mean number of
    distinct tasks per batch. A whole-epoch duration sort makes most batches single-task when tasks differ in
    clip length, so each task's tokens are weighted by the batches it lands in (see `sort_chunk`)."""
    tasks = list(tasks)
    distinct = [len({tasks[i] for i in batch}) for batch in batches]
    if not distinct:
        return {"single_task_share": 0.0, "mean_tasks": 0.0}
    return {"single_task_share": sum(n == 1 for n in distinct) / len(distinct),
            "mean_tasks": float(np.mean(distinct))}


class _ShardedBatchSampler:
    """Epoch seeding, rank sharding with equal counts, and resume; subclasses make one epoch's batches."""

    def __init__(self, num_samples: int, seed: int, shuffle: bool, drop_last: bool,
                 num_replicas: int | None, rank: int | None):
        self.num_samples = num_samples
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.num_replicas, self.rank = _world(num_replicas, rank)
        self.epoch = 0
        self._resume_from = 0   # batches of this epoch to skip on the next __iter__ (after load_state_dict)
        self._consumed = 0      # batches of this epoch the training loop reported as consumed
        self._cache: tuple[int, list[list[int]]] | None = None

    # -- subclasses
    def _make_batches(self, rng: np.random.Generator) -> list[list[int]]:
        raise NotImplementedError

    # -- epoch batches
    def _all_batches(self) -> list[list[int]]:
        """The shuffled batch list of this epoch, shared by all ranks, its length a multiple of R."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = self._make_batches(rng)
        R = self.num_replicas
        if not self.drop_last and len(batches) % R:
            batches = _split_to_multiple(batches, R)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.drop_last:
            batches = batches[:len(batches) - len(batches) % R]
        self._cache = (self.epoch, batches)
        return batches

    def rank_batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch, all of them (ignores resume)."""
        return self._all_batches()[self.rank::self.num_replicas]

    def __iter__(self):
        batches = self.rank_batches()
        start = self._resume_from
        self._resume_from = 0
        self._consumed = start
        for batch in batches[start:]:
            yield list(batch)

    def __len__(self) -> int:
        """Batches the next iteration yields on this rank (fewer right after a resume)."""
        return len(self.rank_batches()) - self._resume_from

    # -- epochs and resume
    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self._resume_from = 0
            self._consumed = 0

    def advance(self, n: int = 1) -> None:
        """Record that the training loop consumed n more batches of this epoch."""
        self._consumed += n

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_done": self._consumed, "seed": self.seed,
                "num_samples": self.num_samples, "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict) -> None:
        for name in ("seed", "num_samples", "num_replicas"):
            if name in state and state[name] != getattr(self, name):
                raise ValueError(f"cannot resume: the saved sampler had {name}={state[name]}, this one has "
                                 f"{getattr(self, name)} (the batch order would differ)")
        self.epoch = int(state["epoch"])
        done = int(state["batches_done"])
        n = len(self.rank_batches())
        if not 0 <= done <= n:
            raise ValueError(f"cannot resume: batches_done={done} but epoch {self.epoch} has {n} batches per rank")
        self._resume_from = done
        self._consumed = done


def _split_to_multiple(batches: list[list[int]], multiple: int) -> list[list[int]]:
    """Split the largest batches in two until len(batches) is a multiple of `multiple` (see module doc)."""
    batches = [list(b) for b in batches]
    need = (-len(batches)) % multiple
    while need:
        sizes = [len(b) for b in batches]
        i = int(np.argmax(sizes))  # first of the largest
        if sizes[i] < 2:
            break
        half = sizes[i] // 2
        batches[i:i + 1] = [batches[i][:half], batches[i][half:]]
        need -= 1
    if need:  # fewer samples than ranks: repeat batches so no rank waits forever
        logger.warning("only %d batches of single samples for %d ranks: repeating %d batches",
                       len(batches), multiple, need)
        batches = batches + [list(batches[j % len(batches)]) for j in range(need)] if batches else batches
    return batches


class DurationBucketSampler(_ShardedBatchSampler):
    """Batches of clips of similar duration, capped in padded audio seconds (and, optionally, padded tokens).

    durations: seconds per dataset index (None not allowed: fill them from headers first).
    max_audio_seconds: cap on len(batch) * longest clip in the batch (the padded audio of the batch).
    max_samples: cap on len(batch) (None = no cap).
    sort_chunk: None sorts the whole (shuffled) epoch by duration, ties broken by the shuffle; an integer
    sorts within consecutive chunks of that many shuffled clips (more varied batches, a little more padding).
    lengths, max_tokens: each item's sequence length in tokens and a cap on len(batch) * the longest of them
    (the LLM's padded tokens, what its step time follows). Given, items are sorted by length instead of duration:
    where answers differ in length across tasks (a caption against a class label) the audio seconds alone leave
    micro-batches of very different token counts, and the ranks wait for the largest.
    A single clip over a cap gets a batch of its own (filter those with max_seconds beforehand).
    """

    def __init__(self, durations, max_audio_seconds: float, max_samples: int | None = None, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False, num_replicas: int | None = None,
                 rank: int | None = None, sort_chunk: int | None = None, lengths=None,
                 max_tokens: int | None = None):
        durations = list(durations)
        missing = [i for i, d in enumerate(durations) if d is None]
        if missing:
            raise ValueError(f"{len(missing)} durations are unknown (first index {missing[0]}); read them from "
                             f"the audio headers first (usam.data.manifest.fill_durations)")
        self.durations = np.asarray(durations, dtype=np.float64)
        if self.durations.size and (not np.isfinite(self.durations).all() or self.durations.min() <= 0):
            raise ValueError("durations must be finite and > 0")
        if not max_audio_seconds > 0:
            raise ValueError(f"max_audio_seconds must be > 0, got {max_audio_seconds}")
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        if sort_chunk is not None and sort_chunk < 1:
            raise ValueError(f"sort_chunk must be >= 1, got {sort_chunk}")
        if max_tokens is not None:
            if max_tokens < 1:
                raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
            if lengths is None or len(lengths) != len(durations):
                raise ValueError("max_tokens needs lengths: one token count per item")
        self.lengths = None if max_tokens is None else np.asarray(lengths, dtype=np.int64)
        self.max_tokens = max_tokens
        self.max_audio_seconds = float(max_audio_seconds)
        self.max_samples = max_samples
        self.sort_chunk = sort_chunk
        n_over = int((self.durations > self.max_audio_seconds).sum())
        if n_over:
            logger.warning("%d clips are longer than max_audio_seconds=%g: each gets a batch of its own",
                           n_over, self.max_audio_seconds)
        super().__init__(len(durations), seed, shuffle, drop_last, num_replicas, rank)

    def _order(self, rng: np.random.Generator) -> np.ndarray:
        n = self.num_samples
        key = self.durations if self.lengths is None else self.lengths
        if not self.shuffle:
            return np.argsort(key, kind="stable")
        perm = rng.permutation(n)
        chunk = n if self.sort_chunk is None else self.sort_chunk
        parts = [perm[i:i + chunk] for i in range(0, n, chunk)]
        return np.concatenate([p[np.argsort(key[p], kind="stable")] for p in parts]) if parts else perm

    def _make_batches(self, rng: np.random.Generator) -> list[list[int]]:
        cap, max_n = self.max_audio_seconds, self.max_samples or math.inf
        token_cap = self.max_tokens or math.inf
        batches: list[list[int]] = []
        current: list[int] = []
        longest = longest_tokens = 0.0
        for i in self._order(rng).tolist():
            d = self.durations[i]
            top = max(longest, d)
            top_tokens = max(longest_tokens, self.lengths[i]) if self.lengths is not None else 0
            if current and ((len(current) + 1) * top > cap or len(current) + 1 > max_n
                            or (len(current) + 1) * top_tokens > token_cap):
                batches.append(current)
                current, top = [], d
                top_tokens = self.lengths[i] if self.lengths is not None else 0
            current.append(i)
            longest, longest_tokens = top, top_tokens
        if current:
            batches.append(current)
        return batches


class FixedSizeBatchSampler(_ShardedBatchSampler):
    """Plain shuffled batches of `batch_size` indices (the baseline the bucketing sampler is compared with).
    drop_last=True also drops the incomplete last batch."""

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False, num_replicas: int | None = None, rank: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        super().__init__(num_samples, seed, shuffle, drop_last, num_replicas, rank)

    def _make_batches(self, rng: np.random.Generator) -> list[list[int]]:
        order = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
        batches = [order[i:i + self.batch_size].tolist() for i in range(0, self.num_samples, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches
