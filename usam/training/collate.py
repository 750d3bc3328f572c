"""From dataset items to model batches.

`TrainItems` wraps an AudioDataset and settles each sample's instruction (the manifest's own, else a phrasing
of its task) and, for an entry with several references (Clotho's five captions, AudioCaps' and MusicCaps'
several), which of them is this epoch's training target; both are drawn with RNGs seeded from (seed, epoch,
index). No global RNG stream is used, so neither depends on the DataLoader's workers or on where a run was
resumed.

`Collator` runs in the DataLoader workers: it keeps the skipped samples apart (the main process counts
them in a SkipStats, see usam.data.dataset) and builds the processor batch. With a feature cache it also
attaches the cached encoder features, padded into `EncoderOutput(features (C, T, D), mask (C, T))`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from usam.data.dataset import Sample, SkippedSample, split_skipped
from usam.reading import SimulatedAudio
from usam.tasks import instruction_for


TARGET_STREAM = 1  # sample_rng's stream for the choice of a sample's training reference


def sample_rng(seed: int, epoch: int, index: int, stream: int | None = None) -> random.Random:
    """A private RNG for one sample of one epoch (the same on every run, rank and worker); `stream` gives an
    independent one for another draw of the same sample."""
    keys = [seed, epoch, index] if stream is None else [seed, epoch, index, stream]
    return random.Random(int(np.random.SeedSequence(keys).generate_state(1, np.uint64)[0]))


class TrainItems(torch.utils.data.Dataset):
    def __init__(self, dataset, seed: int, epoch: int, train: bool = True):
        self.dataset = dataset
        self.seed, self.epoch, self.train = seed, epoch, train

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        if isinstance(item, Sample) and not item.instruction:
            try:
                item.instruction = instruction_for(item.task, train=self.train, lang=item.lang,
                                                   rng=sample_rng(self.seed, self.epoch, index))
            except ValueError as err:  # e.g. a qa sample without its question
                return SkippedSample(key=item.key, file=item.source, line=item.line, reason="missing_field",
                                     message=f"instruction: {err}")
        if isinstance(item, Sample) and self.train and len(item.references) > 1:
            # Each reference is the target about equally often: a uniform draw per (epoch, position in the
            # epoch's list), so an entry repeated by its weight within an epoch draws again. Entries are
            # kept whole (one per clip, not one per caption) so that the mixture's weights count clips.
            item.target_index = sample_rng(self.seed, self.epoch, index, TARGET_STREAM).randrange(
                len(item.references))
        return item


@dataclass
class Collated:
    samples: list[Sample]
    skipped: list[SkippedSample]
    batch: dict | None                    # processor output (+ "encoder_outputs" from the cache), None if empty
    tasks: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    num_tokens: int = 0

    def pin_memory(self) -> "Collated":
        """DataLoader(pin_memory=True) calls this in its pinning thread: page-locked tensors are copied to the GPU
        asynchronously (`non_blocking=True` in the trainer)."""
        if self.batch is not None:
            self.batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in self.batch.items()}
        return self


def pad_features(rows: list[torch.Tensor]):
    """Per-sample valid features [(T_i, D)] -> EncoderOutput((C, T, D) zero-padded, (C, T) mask)."""
    from usam.encoders import EncoderOutput

    lengths = torch.tensor([r.shape[0] for r in rows])
    features = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    mask = torch.arange(features.shape[1])[None, :] < lengths[:, None]
    return EncoderOutput(features, mask)


class Collator:
    def __init__(self, processor, cache=None, with_answers: bool = True):
        self.processor = processor
        self.cache = cache  # usam.training.cache.FeatureCacheReader or None
        self.with_answers = with_answers

    def __call__(self, items) -> Collated:
        samples, skipped = split_skipped(items)
        if not samples:
            return Collated(samples, skipped, None)
        tasks = [s.task for s in samples]
        batch = self.processor(audios=[s.audio for s in samples], instructions=[s.instruction for s in samples],
                               answers=[s.target for s in samples] if self.with_answers else None, tasks=tasks)
        batch = dict(batch)
        heard = [s for s in samples if not isinstance(s.audio, SimulatedAudio)]  # reading practice has no audio
        if self.cache is not None and heard:
            batch["cached_features"] = {
                name: pad_features(self.cache.features(name, [s.key for s in heard], [len(s.audio) for s in heard]))
                for name in self.cache.encoders}
        return Collated(samples, skipped, batch, tasks, float(sum(s.duration for s in samples)),
                        int(batch["attention_mask"].sum()))

    def with_reading(self, collated: Collated, extra: list) -> Collated:
        """The same micro-batch with reading-practice samples (usam.reading.ReadingSample) after its own."""
        if collated.batch is None or not extra:
            return collated
        out = self([*collated.samples, *extra])
        out.skipped = collated.skipped
        return out
