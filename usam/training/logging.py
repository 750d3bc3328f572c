"""Run logs (rank 0 only): a JSON Lines file, TensorBoard, and a tqdm progress bar with ETA.

`metrics.jsonl` holds one object per line: {"kind": "train"|"valid"|"samples"|"summary", "step": ...,
"elapsed_s": ..., ...}. elapsed_s is wall time since the run started, validation included, carried over a resume
(from the last record kept), so quality can be plotted against minutes as well as steps.
Train records: loss, ce, sacl, balance, lr, audio_s_per_s, tokens_per_s, peak_mem_mb, skipped (by reason),
experts ({task: mean routing weight per expert}) and expert_tokens ({task: audio tokens counted}).
`usam plot RUN_DIR` reads this file.
"""
from __future__ import annotations

import json
import resource
import time
from collections import defaultdict
from pathlib import Path

import torch

METRICS = "metrics.jsonl"


def peak_memory_mb() -> float:
    """max_memory_allocated on GPU, else the process's peak resident set size (RSS)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class ExpertUsage:
    """Sums of routing weights per task: out.routing_weights (N, E), routing_sample_index (N,), tasks (B,)."""

    def __init__(self):
        self.sums: dict[str, list[float]] = {}
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, weights: torch.Tensor | None, sample_index: torch.Tensor | None, tasks: list[str]) -> None:
        if weights is None or sample_index is None or weights.numel() == 0:
            return
        weights = weights.detach().float().cpu()
        sample_index = sample_index.cpu()
        for b, task in enumerate(tasks):
            rows = weights[sample_index == b]
            if rows.shape[0] == 0:
                continue
            total = rows.sum(0).tolist()
            prev = self.sums.get(task)
            self.sums[task] = total if prev is None else [a + b_ for a, b_ in zip(prev, total)]
            self.counts[task] += rows.shape[0]

    def state(self) -> dict:
        return {"sums": self.sums, "counts": dict(self.counts)}

    @staticmethod
    def merge(states: list[dict]) -> tuple[dict[str, list[float]], dict[str, int]]:
        sums: dict[str, list[float]] = {}
        counts: dict[str, int] = defaultdict(int)
        for st in states:
            for task, s in st["sums"].items():
                sums[task] = s if task not in sums else [a + b for a, b in zip(sums[task], s)]
                counts[task] += st["counts"][task]
        means = {t: [v / counts[t] for v in s] for t, s in sums.items() if counts[t]}
        return means, dict(counts)

    def reset(self) -> None:
        self.sums, self.counts = {}, defaultdict(int)


class RunLogger:
    def __init__(self, output_dir: str | Path, enabled: bool, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(output_dir) / METRICS
        self.start, self.offset_s = time.time(), 0.0
        self.writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8")
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """On resume: drop records of steps after the checkpoint (the killed run wrote them; they are redone)."""
        if not self.enabled or not self.path.exists():
            return
        self.file.close()
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        # the killed run's time up to the checkpoint counts; the time it spent after it is redone
        self.offset_s = max((json.loads(line).get("elapsed_s", 0.0) for line in kept), default=0.0)
        self.start = time.time()
        from usam.training.checkpoint import atomic_write_text

        atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self.file = open(self.path, "a", encoding="utf-8")

    def log(self, kind: str, step: int, record: dict) -> None:
        if not self.enabled:
            return
        elapsed = round(self.offset_s + time.time() - self.start, 2)
        self.file.write(json.dumps({"kind": kind, "step": step, "elapsed_s": elapsed, **record}, ensure_ascii=False)
                        + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in _flatten(record):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)
                elif isinstance(value, str) and kind == "samples":
                    self.writer.add_text(f"{kind}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.writer is not None:
                self.writer.close()


def _flatten(record: dict, prefix: str = ""):
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, name + "/")
        elif isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            for i, v in enumerate(value):
                yield f"{name}/{i}", v
        else:
            yield name, value


def progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="training", unit="step", disable=not enabled, dynamic_ncols=True)
