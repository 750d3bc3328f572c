"""Training data: manifests mixed by dataset and task weights, per-epoch datasets and rank-sharded samplers."""
from __future__ import annotations

import logging
from collections import Counter, defaultdict

import torch

from usam.data.dataset import AudioDataset
from usam.data.manifest import MixedManifest, fill_durations, read_manifest
from usam.data.sampler import DurationBucketSampler, FixedSizeBatchSampler
from usam.training.collate import TrainItems

logger = logging.getLogger("usam.training")


def read_entries(path: str, fmt: str = "auto", task: str | None = None, need_durations: bool = True):
    """Non-strict read: (good entries, Counter of problems by reason). Entries without a readable duration
    are dropped (they cannot be bucketed) and counted. Audio paths are not checked here: every rank reads every
    manifest, and a stat per entry costs minutes at half a million entries on a network file system; a missing
    file is skipped when it is loaded (reason missing_file), as any unreadable one is."""
    entries, problems = read_manifest(path, strict=False, format=fmt, task=task, check_files=False)
    if need_durations:
        problems = list(problems) + fill_durations(entries)
        entries = [e for e in entries if e.duration is not None]
    for err in problems[:5]:
        logger.warning("manifest problem: %s", err)
    if len(problems) > 5:
        logger.warning("... and %d more manifest problems", len(problems) - 5)
    return entries, Counter(err.reason for err in problems)


class TrainData:
    """The epoch lists of the training mixture (`usam.data.MixedManifest`): each source is split by task so
    that `task_weights` multiply into the per-dataset weights."""

    def __init__(self, cfg, processor_collate, rank: int, world: int, processor=None):
        """`processor` (USAMProcessor): its rate is the one clips are decoded at (without one, the rate of the
        config's model), and it estimates each sample's tokens when data.max_tokens caps the batches."""
        if cfg.data.max_tokens is not None and processor is None:
            raise ValueError("data.max_tokens needs the processor to estimate each sample's tokens")
        self.cfg = cfg
        self.collate = processor_collate
        self.processor = processor
        self._lengths: dict[tuple, int] = {}  # (manifest, key) -> estimated tokens (data.max_tokens)
        self.sample_rate = processor.sampling_rate if processor is not None else cfg.model_config().input_sample_rate
        self.rank, self.world = rank, world
        sources = []
        self.manifest_problems: Counter = Counter()
        for source in cfg.data.train:
            entries, problems = read_entries(source.manifest, source.format, source.task)
            self.manifest_problems.update(problems)
            by_task = defaultdict(list)
            for e in entries:
                by_task[e.task].append(e)
            for task, task_entries in sorted(by_task.items()):
                sources.append((task_entries, source.weight * cfg.data.task_weights.get(task, 1.0)))
        self.mixed = MixedManifest(sources, seed=cfg.seed)
        if len(self.mixed) == 0:
            raise ValueError("the training data is empty (no readable manifest entry with a positive weight)")
        self._batches_per_epoch: dict[int, int] = {}

    def sampler(self, epoch: int, entries=None):
        d = self.cfg.data
        entries = entries if entries is not None else self.mixed.epoch_entries(epoch)
        if d.bucketing:
            s = DurationBucketSampler([e.duration for e in entries], d.max_audio_seconds, d.max_samples,
                                      seed=self.cfg.seed, num_replicas=self.world, rank=self.rank,
                                      sort_chunk=d.sort_chunk, max_tokens=d.max_tokens,
                                      lengths=self.lengths(entries) if d.max_tokens else None)
        else:
            s = FixedSizeBatchSampler(len(entries), d.batch_size, seed=self.cfg.seed, num_replicas=self.world,
                                      rank=self.rank)
        s.set_epoch(epoch)
        return s

    def lengths(self, entries) -> list[int]:
        """Estimated training-sample tokens of each entry (estimated once per entry)."""
        todo = {(e.source, e.key): e for e in entries if (e.source, e.key) not in self._lengths}
        if todo:
            self._lengths.update(zip(todo, self.processor.estimate_lengths(list(todo.values()))))
        return [self._lengths[(e.source, e.key)] for e in entries]

    def batches_per_epoch(self, epoch: int) -> int:
        if epoch not in self._batches_per_epoch:
            self._batches_per_epoch[epoch] = len(self.sampler(epoch).rank_batches())
        return self._batches_per_epoch[epoch]

    def dataset(self, epoch: int, entries=None) -> TrainItems:
        entries = entries if entries is not None else self.mixed.epoch_entries(epoch)
        return TrainItems(AudioDataset(entries, strict=False, max_seconds=self.cfg.data.max_seconds,
                                       target_sr=self.sample_rate),
                          seed=self.cfg.seed, epoch=epoch, train=True)

    def loader(self, epoch: int, sampler_state: dict | None = None):
        """(DataLoader, sampler) for one epoch; `sampler_state` resumes inside the epoch."""
        entries = self.mixed.epoch_entries(epoch)
        dataset = self.dataset(epoch, entries)
        sampler = self.sampler(epoch, entries)
        if sampler_state is not None:
            sampler.load_state_dict(sampler_state)
        # A private generator: the DataLoader then never draws its base seed from the global torch RNG, whose
        # stream (dropout) must not depend on when iterators are created (exact resume).
        generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=self.collate,
                                             num_workers=self.cfg.data.num_workers, generator=generator,
                                             persistent_workers=False, pin_memory=torch.cuda.is_available())
        return loader, sampler


def stand_in_batch(dataset, collate, what: str):
    """The first readable samples of `dataset`, in its order (up to 2, as SACL wants), collated: the batch a rank
    runs with weight 0 while it has no usable batch of its own yet. Under ZeRO-3 every forward and backward gathers
    weights from all ranks, so a rank that skipped one, or raised alone, would leave the others waiting forever.
    Every rank reads the same list in the same order, so when nothing in it is readable every rank raises this
    same error."""
    found = []
    for i in range(len(dataset)):
        item = dataset[i]
        if hasattr(item, "audio"):  # an unreadable sample comes back as a SkippedSample
            found.append(item)
            if len(found) == 2:
                break
    collated = collate(found) if found else None
    if collated is None or collated.batch is None:
        raise RuntimeError(f"no sample of the {what} data is readable ({len(dataset)} tried); check the manifests "
                           "and the audio files they name")
    return collated


def valid_batches(num: int, batch_size: int, world: int) -> list[tuple[list[int], float]]:
    """Validation batches [(indices, weight)] for all ranks: consecutive chunks, a lone last sample merged into
    the batch before (SACL needs two samples, and under ZeRO-3 every rank must call the same modules),
    padded with repeats to a multiple of the number of ranks (every rank runs the same number of forwards);
    repeats carry weight 0."""
    batch_size = max(2, batch_size)
    batches = [list(range(j, min(j + batch_size, num))) for j in range(0, num, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] += batches.pop()
    out = [(b, 1.0) for b in batches]
    while out and len(out) % world:
        out.append((out[len(out) % len(batches)][0], 0.0))
    return out
