"""Map-style dataset over manifest entries: loads audio, and in training skips (and counts) bad samples.

strict=True (evaluation, `usam data check`): a bad sample raises DataError naming manifest file, line, key
and reason. strict=False (training): `__getitem__` returns a `SkippedSample` instead; the collate function
calls `split_skipped(items)` in the main process and feeds the skipped ones to a `SkipStats`, so the counts
are right with any number of DataLoader workers (worker processes never share a counter).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from usam.data.audio import SAMPLE_RATE, load_audio
from usam.data.manifest import ManifestEntry
from usam.errors import DataError

logger = logging.getLogger("usam.data")


@dataclass
class Sample:
    key: str
    audio: np.ndarray              # (n,) float32 mono at the dataset's target rate
    task: str
    references: list[str]          # every reference; evaluation scores against all of them
    instruction: str | None = None
    lang: str | None = None
    duration: float = 0.0          # seconds of `audio`
    source: str = ""
    line: int | None = None
    extra: dict = field(default_factory=dict)
    target_index: int = 0          # which reference is the training target (TrainItems draws it per epoch)

    @property
    def target(self) -> str:
        return self.references[self.target_index]


@dataclass
class SkippedSample:
    """Stands in for a sample whose audio could not be used (non-strict mode)."""
    key: str
    file: str
    line: int | None
    reason: str
    message: str

    def error(self) -> DataError:
        return DataError(self.reason, self.message, file=self.file, line=self.line, key=self.key)


class AudioDataset(torch.utils.data.Dataset):
    def __init__(self, entries: list[ManifestEntry], strict: bool = True, max_seconds: float | None = None,
                 target_sr: int = SAMPLE_RATE):
        self.entries = list(entries)
        self.strict = strict
        self.max_seconds = max_seconds
        self.target_sr = target_sr

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def durations(self) -> list[float | None]:
        """Manifest durations (None where unknown: see usam.data.manifest.fill_durations)."""
        return [e.duration for e in self.entries]

    def __getitem__(self, index: int) -> Sample | SkippedSample:
        e = self.entries[index]
        try:
            audio = load_audio(e.audio, self.target_sr, offset=e.offset, end=e.end, max_seconds=self.max_seconds)
        except DataError as err:
            err = e.error(err)
            if self.strict:
                raise err from None
            return SkippedSample(key=e.key, file=e.source, line=e.line, reason=err.reason, message=err.message)
        return Sample(key=e.key, audio=audio, task=e.task, references=list(e.text), instruction=e.instruction,
                      lang=e.lang, duration=audio.shape[0] / self.target_sr, source=e.source, line=e.line,
                      extra=dict(e.extra))


def split_skipped(items) -> tuple[list[Sample], list[SkippedSample]]:
    """Separate the usable samples of a batch from the skipped ones (call it in the collate function)."""
    samples = [x for x in items if not isinstance(x, SkippedSample)]
    skipped = [x for x in items if isinstance(x, SkippedSample)]
    return samples, skipped


class SkipStats:
    """Counts skipped samples per reason and keeps the first `max_examples` of them for the log."""

    def __init__(self, max_examples: int = 5):
        self.max_examples = max_examples
        self.seen = 0
        self.counts: Counter[str] = Counter()
        self.examples: list[SkippedSample] = []

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def add(self, item: SkippedSample) -> None:
        self.counts[item.reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(item)

    def update(self, items) -> None:
        """Count one batch of items (Samples and SkippedSamples mixed, or only the skipped ones)."""
        for item in items:
            self.seen += 1
            if isinstance(item, SkippedSample):
                self.add(item)

    def as_dict(self) -> dict:
        return {"seen": self.seen, "skipped": self.skipped, "by_reason": dict(sorted(self.counts.items())),
                "examples": [str(x.error()) for x in self.examples]}

    def log(self, log: logging.Logger | None = None, level: int = logging.WARNING) -> None:
        log = log or logger
        if not self.skipped:
            log.info("no samples skipped (%d seen)", self.seen)
            return
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.counts.items()))
        log.log(level, "skipped %d of %d samples (%s)", self.skipped, self.seen, reasons)
        for x in self.examples:
            log.log(level, "  skipped %s", x.error())
