"""The evaluation runner: one model folder over one benchmark (a registry entry or a manifest with a task).

    evaluate(model_dir, benchmark, manifest, out_dir, settings) -> metrics (rank 0) / None (other ranks)

Steps: read the manifest strictly (a bad line stops the run with file, line and reason; keys must be
unique), read missing durations from the audio headers, give every item its fixed evaluation prompt and
its task's `max_new_tokens`, batch the items by audio seconds (DurationBucketSampler per task, no shuffle:
sorted by duration, so the order is deterministic and the padding small), shard the batches over the ranks,
generate (full-length audio, greedy by default, left padding), write each rank's shard, and on rank 0 merge
after a barrier, score every task with its own metric and write:

* predictions.jsonl: one line per manifest item, in manifest order: key, task, instruction, prediction,
  references, the item's own metric values (WER/CER for asr, correct + qtype for qa, the mapped label for
  cls, ...), duration, new_tokens, finished (False: stopped at max_new_tokens), expert_weights;
* metrics.json: the schema of usam.evaluation.report (model, benchmark, task, n, metrics, generation,
  expert_usage), plus run information (manifest, world size, seconds, prompts);
* metrics.md: the table of usam.evaluation.report for this run.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from usam.errors import DataError
from usam.evaluation.generation import BatchGenerator, GenerationSettings
from usam.evaluation.registry import MIXED, PER_TASK, Benchmark
from usam.evaluation.sharding import (DistContext, barrier, close_distributed, init_distributed, merge_shards,
                                      raise_if_any_failed, write_jsonl, write_shard)
from usam.tasks import EVAL_DTYPES

logger = logging.getLogger("usam.evaluation")

PREDICTIONS_FILE, METRICS_FILE, MARKDOWN_FILE = "predictions.jsonl", "metrics.json", "metrics.md"
# max_new_tokens for a manifest evaluated without a registry entry (those of the synthetic-test benchmark).
DEFAULT_MAX_NEW_TOKENS = {"asr": 200, "s2tt": 200, "aac": 64, "mc": 128, "cls": 16, "qa": 32}


@dataclass
class EvalItem:
    index: int        # position in the manifest (the order of predictions.jsonl)
    entry: object     # usam.data.ManifestEntry
    instruction: str
    max_new_tokens: int


def manifest_benchmark(manifest: str | Path, task: str | None, entries: Sequence | None = None,
                       max_new_tokens: int | None = None) -> Benchmark:
    """A benchmark for a manifest outside the registry. task None: the manifest's one task, or mixed."""
    from usam.metrics import TASK_METRIC
    from usam.tasks import TASKS

    if task is None:
        tasks = sorted({e.task for e in entries or []})
        task = tasks[0] if len(tasks) == 1 else MIXED
    if task != MIXED and task not in TASKS:
        raise ValueError(f"--task: {task!r} is not one of {', '.join(TASKS)} or {MIXED!r}")
    if task == MIXED:
        return Benchmark(name=Path(manifest).stem, manifest=str(manifest), task=MIXED, metric=PER_TASK,
                         max_new_tokens=max_new_tokens or dict(DEFAULT_MAX_NEW_TOKENS))
    return Benchmark(name=Path(manifest).stem, manifest=str(manifest), task=task, metric=TASK_METRIC[task],
                     max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS[task])


def check_unique_keys(entries: Sequence) -> None:
    """One hypothesis per key: a repeated key is an error naming both places."""
    seen: dict[str, object] = {}
    for e in entries:
        first = seen.setdefault(e.key, e)
        if first is not e:
            raise DataError("duplicate_key", f"key {e.key!r} already used at {first.source}:{first.line}",
                            file=e.source, line=e.line, key=e.key, field="key")


def build_items(entries: Sequence, benchmark: Benchmark, settings: GenerationSettings,
                manifest_instructions: bool = False) -> list[EvalItem]:
    """Each entry's prompt and token budget. The task's fixed prompt is used (reproducible numbers);
    a prompt with {question} (qa) takes the entry's own `instruction`. manifest_instructions=True prefers
    any instruction the manifest gives."""
    items = []
    for i, e in enumerate(entries):
        if not benchmark.mixed and e.task != benchmark.task:
            raise DataError("bad_value", f"task {e.task!r} in a {benchmark.task!r} benchmark ({benchmark.name}); "
                            "evaluate a mixed manifest with --task mixed", file=e.source, line=e.line,
                            key=e.key, field="task")
        if manifest_instructions and e.instruction:
            instruction = e.instruction
        elif _needs_question(benchmark, e.task):
            if not e.instruction:
                raise DataError("missing_field", f"a {e.task} item needs its question in 'instruction'",
                                file=e.source, line=e.line, key=e.key, field="instruction")
            instruction = benchmark.instruction_for(e.task, lang=e.lang, question=e.instruction)
        else:
            instruction = benchmark.instruction_for(e.task, lang=e.lang)
        budget = settings.max_new_tokens or benchmark.max_new_tokens_for(e.task)
        if budget < 1:
            raise ValueError(f"benchmark {benchmark.name!r}: no max_new_tokens for task {e.task!r}")
        items.append(EvalItem(i, e, instruction, budget))
    return items


def _needs_question(benchmark: Benchmark, task: str) -> bool:
    from usam.tasks import EVAL_INSTRUCTIONS

    custom = (benchmark.instruction or {}).get(task) if benchmark.mixed else benchmark.instruction
    return "{question}" in (custom or EVAL_INSTRUCTIONS[task])


def plan_batches(items: Sequence[EvalItem], settings: GenerationSettings, ctx: DistContext) -> list[list[int]]:
    """This rank's batches (lists of item positions). One task per batch, so each batch has one token budget;
    within a task the clips are sorted by duration and cut under the seconds cap (DurationBucketSampler,
    shuffle=False), and the task's batches are dealt to the ranks in turn."""
    from usam.data import DurationBucketSampler

    by_task: dict[str, list[int]] = {}
    for pos, item in enumerate(items):
        by_task.setdefault(item.entry.task, []).append(pos)
    batches = []
    for task in sorted(by_task):
        positions = by_task[task]
        sampler = DurationBucketSampler([items[p].entry.duration for p in positions], settings.max_audio_seconds,
                                        max_samples=settings.max_batch_size, shuffle=False,
                                        num_replicas=ctx.world_size, rank=ctx.rank)
        batches += [[positions[j] for j in batch] for batch in sampler.rank_batches()]
    return batches


def _collate(samples):
    return samples


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _device(name: str | None, ctx: DistContext):
    import torch

    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def eval_dtype(model, name: str = "auto"):
    """The dtype the whole model evaluates in. "auto": the LLM's own (`llm.dtype`: bf16 for usam-8b, fp32 for the
    demo), so the encoders and the connector, which a saved folder rebuilds in fp32, do not run in fp32 beside a
    bf16 LLM. Front ends (log-mel, fbank, resampling) compute in fp32 whatever this is (usam.precision)."""
    import torch

    from usam.precision import param_dtype

    return param_dtype(model.llm) if name == "auto" else getattr(torch, name)  # `name` checked by `evaluate`


def default_workers(device) -> int:
    """DataLoader workers when none are asked for: none on a CPU (decoding would take cores from the model),
    else up to 4, leaving a core per GPU process."""
    import os

    if getattr(device, "type", str(device)) == "cpu":
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def rank_labels(benchmark: Benchmark, items: Sequence[EvalItem]) -> list[str]:
    """The label set that closed-set cls scoring ranks: the benchmark's `labels` option, else the distinct
    references of its cls items, sorted (the set the accuracy metric maps answers onto)."""
    labels = benchmark.metric_options("cls" if benchmark.mixed else None).get("labels")
    if labels:
        return list(labels)
    return sorted({it.entry.text[0] for it in items if it.entry.task == "cls" and len(it.entry.text) == 1})


def _generate_shard(model_dir, items, batches, settings, device, workers, progress, ctx,
                    labels: list[str] | None = None, dtype: str = "auto") -> list[dict]:
    import torch
    from tqdm.auto import tqdm

    from usam import USAMModel, USAMProcessor
    from usam.data import AudioDataset

    # LoRA folded into the LLM (generation only): the same greedy tokens, one matrix product per layer instead of
    # three (docs/evaluation.md#speed)
    model = USAMModel.from_pretrained(model_dir).eval().merge_lora_for_inference()
    model.to(device=device, dtype=eval_dtype(model, dtype))
    processor = USAMProcessor.from_pretrained(model_dir)
    dataset = AudioDataset([it.entry for it in items], strict=True,  # full length: no max_seconds, no crop
                           target_sr=processor.sampling_rate)
    workers = default_workers(device) if workers is None else workers
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=_collate, num_workers=workers)
    rows = []
    bar = tqdm(total=sum(map(len, batches)), unit="sample", desc=f"eval rank {ctx.rank}" if ctx.distributed
               else "eval", disable=not progress or not ctx.is_main, dynamic_ncols=True)
    with BatchGenerator(model, processor, settings) as generate:
        for batch_positions, samples in zip(batches, loader):
            batch_items = [items[p] for p in batch_positions]
            assert [s.key for s in samples] == [it.entry.key for it in batch_items]
            task = batch_items[0].entry.task  # one task per batch (plan_batches)
            audios, instructions = [s.audio for s in samples], [it.instruction for it in batch_items]
            if settings.ranks(task):
                result = generate.rank(audios, instructions, labels, task)
            else:
                result = generate(audios, instructions, batch_items[0].max_new_tokens,
                                  tasks=[it.entry.task for it in batch_items])
            for j, (item, sample) in enumerate(zip(batch_items, samples)):
                tokens = result.audio_tokens[j]
                mean = (result.expert_sums[j] / tokens).tolist() if result.expert_sums is not None and tokens \
                    else None
                rows.append({"index": item.index, "key": item.entry.key, "prediction": result.texts[j],
                             "new_tokens": result.new_tokens[j], "finished": result.finished[j],
                             "duration": round(sample.duration, 4), "audio_tokens": tokens,
                             "expert_weights": mean})
            bar.update(len(samples))
    bar.close()
    return rows


def _references(entry):
    return entry.text[0] if len(entry.text) == 1 else list(entry.text)


def _expert_usage(rows: list[dict], tasks: list[str]) -> dict[str, list[float]]:
    """{task: mean routing weight per expert over all valid audio tokens of the task's items}."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for row, task in zip(rows, tasks):
        if row["expert_weights"] is None:
            continue
        w = np.asarray(row["expert_weights"]) * row["audio_tokens"]
        sums[task] = sums.get(task, 0) + w
        counts[task] = counts.get(task, 0) + row["audio_tokens"]
    return {t: (sums[t] / counts[t]).tolist() for t in sorted(sums)}


def _score(benchmark: Benchmark, items: Sequence[EvalItem], rows: list[dict]):
    entries = [it.entry for it in items]
    tasks = [e.task for e in entries]
    fields = {}
    if any("qtype" in e.extra for e in entries):
        fields["qtype"] = [e.extra.get("qtype") for e in entries]
    if any(e.lang for e in entries if e.task == "s2tt"):
        fields["lang"] = [e.lang for e in entries]
    return benchmark.evaluate([r["prediction"] for r in rows], [_references(e) for e in entries], tasks=tasks,
                              item_fields=fields)


def _write_text(path: Path, text: str) -> None:
    from usam.evaluation.report import _atomic_write

    _atomic_write(path, text)


def _finish(out_dir: Path, model_name: str, benchmark: Benchmark, manifest: Path, items: list[EvalItem],
            rows: list[dict], settings: GenerationSettings, ctx: DistContext, started: float,
            dtype: str = "auto") -> dict:
    from usam.evaluation.report import _markdown, comparison_table, load_run

    by_key = {}
    for row in rows:  # a rank may have repeated a batch (fewer samples than ranks): keep one per key
        by_key.setdefault(row["key"], row)
    missing = [it.entry.key for it in items if it.entry.key not in by_key]
    unexpected = sorted(set(by_key) - {it.entry.key for it in items})
    if missing or unexpected:
        raise RuntimeError(f"merged shards: {len(missing)} keys without a prediction (first {missing[:3]}), "
                           f"{len(unexpected)} keys not in the manifest (first {unexpected[:3]})")
    rows = [by_key[it.entry.key] for it in items]
    tasks = [it.entry.task for it in items]

    def prediction_lines(per_item):
        lines = []
        for it, row, scores in zip(items, rows, per_item):
            e = it.entry
            line = {"key": e.key, "task": e.task, "instruction": it.instruction, "prediction": row["prediction"],
                    "references": list(e.text)}
            if e.lang:
                line["lang"] = e.lang
            if "qtype" in e.extra:
                line["qtype"] = e.extra["qtype"]
            line.update({k: v for k, v in (scores or {}).items() if k not in line})
            line.update(duration=row["duration"], new_tokens=row["new_tokens"], finished=row["finished"],
                        expert_weights=row["expert_weights"])
            lines.append(_jsonable(line))
        return lines

    # the predictions first, so that a failure while scoring loses no generation work; an older metrics.json
    # must not sit next to them meanwhile
    for stale in (METRICS_FILE, MARKDOWN_FILE):
        (out_dir / stale).unlink(missing_ok=True)
    write_jsonl(out_dir / PREDICTIONS_FILE, prediction_lines([None] * len(items)))
    metrics, per_item = _score(benchmark, items, rows)
    predictions = prediction_lines(per_item)

    budgets = {t: settings.max_new_tokens or benchmark.max_new_tokens_for(t) for t in sorted(set(tasks))}
    unfinished = {t: sum(1 for r, tt in zip(rows, tasks) if tt == t and not r["finished"]) for t in budgets}
    prompts = {}
    for it in items:
        prompts.setdefault(it.entry.task, it.instruction if not _needs_question(benchmark, it.entry.task)
                           else benchmark.instruction_for(it.entry.task, question="{question}"))
    report = {
        "model": model_name,
        "benchmark": benchmark.name,
        "task": benchmark.task,
        "metric": benchmark.metric,
        "n": len(items),
        "metrics": _jsonable(metrics),
        "generation": {**settings.as_dict(), "max_new_tokens": budgets if benchmark.mixed
                       else budgets[benchmark.task], "stopped_at_max_new_tokens": unfinished,
                       "full_length_audio": True, "skip_special_tokens": True, "padding_side": "left"},
        "expert_usage": _expert_usage(rows, tasks),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run": {"manifest": str(manifest), "world_size": ctx.world_size, "dtype": dtype,
                "seconds": round(time.time() - started, 2),
                "prompts": prompts, "total_audio_seconds": round(sum(r["duration"] for r in rows), 2),
                "generated_tokens": int(sum(r["new_tokens"] for r in rows))},
    }
    write_jsonl(out_dir / PREDICTIONS_FILE, predictions)
    _write_text(out_dir / METRICS_FILE, json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    columns, table_rows = comparison_table([load_run(out_dir / METRICS_FILE)])
    _write_text(out_dir / MARKDOWN_FILE, _markdown(columns, table_rows, f"{model_name} on {benchmark.name}", [], []))
    return report


def evaluate(model_dir: str | Path, benchmark: Benchmark | None, out_dir: str | Path, *,
             manifest: str | Path | None = None, task: str | None = None, data_root: str | Path | None = None,
             synth_dir: str | Path | None = None, settings: GenerationSettings | None = None,
             model_name: str | None = None, device: str | None = None, workers: int | None = None,
             progress: bool = True, manifest_instructions: bool = False, limit: int | None = None,
             dtype: str = "auto") -> dict | None:
    """Evaluate one model folder; see the module doc. Either `benchmark` (with data_root for its manifest
    path) or `manifest` (+ optional task). `workers` None: `default_workers`; `dtype`: see `eval_dtype`.
    Returns metrics.json's content on rank 0, None on other ranks."""
    from usam.data import fill_durations, read_manifest

    settings = settings or GenerationSettings()
    if dtype not in EVAL_DTYPES:  # before any model is loaded
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(EVAL_DTYPES)}")
    started = time.time()
    if benchmark is not None:
        if manifest is None:
            if data_root is None:
                raise ValueError(f"benchmark {benchmark.name!r}: give --data-root (or --manifest)")
            manifest = benchmark.manifest_path(data_root, synth_dir=synth_dir)
    elif manifest is None:
        raise ValueError("give a registered benchmark or a manifest")
    manifest = Path(manifest)
    if not Path(model_dir, "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no config.json (not a U-SAM model folder)")
    out_dir = Path(out_dir)
    ctx = init_distributed()
    try:
        entries = read_manifest(manifest, strict=True)  # bad lines and duplicate keys raise here
        check_unique_keys(entries)
        if limit is not None:
            entries = entries[:limit]
        if not entries:
            raise DataError("missing_field", "the manifest has no items", file=str(manifest))
        fill_durations(entries, strict=True)
        for e in entries:
            if not e.duration > 0:  # before the sampler, which would only say "durations must be > 0"
                raise DataError("zero_length", f"the audio {e.audio_name} has no samples", file=e.source,
                                line=e.line, key=e.key, field="audio")
        if benchmark is None:
            benchmark = manifest_benchmark(manifest, task, entries, settings.max_new_tokens)
        items = build_items(entries, benchmark, settings, manifest_instructions)
        batches = plan_batches(items, settings, ctx)
        out_dir.mkdir(parents=True, exist_ok=True)

        error = None
        rows: list[dict] = []
        try:
            rows = _generate_shard(model_dir, items, batches, settings, _device(device, ctx), workers, progress, ctx,
                                   rank_labels(benchmark, items) if settings.cls_mode == "rank" else None, dtype)
        except Exception as err:  # reported to every rank below, so no rank waits at the barrier forever
            error = err
        raise_if_any_failed(ctx, error)
        write_shard(out_dir, ctx, rows)
        barrier(ctx)
        result = error = None
        if ctx.is_main:
            try:
                merged = merge_shards(out_dir, ctx.world_size)
                result = _finish(out_dir, model_name or str(model_dir), benchmark, manifest, items, merged, settings,
                                 ctx, started, dtype)
            except Exception as err:  # the other ranks learn of it too (they may run a next evaluation)
                error = err
        raise_if_any_failed(ctx, error)
        return result
    finally:
        close_distributed(ctx)


def load_predictions(path: str | Path) -> list[dict]:
    from usam.evaluation.sharding import read_jsonl

    return read_jsonl(Path(path))


__all__ = ["evaluate", "EvalItem", "GenerationSettings", "manifest_benchmark", "build_items", "plan_batches",
           "check_unique_keys", "rank_labels", "DEFAULT_MAX_NEW_TOKENS", "PREDICTIONS_FILE", "METRICS_FILE",
           "MARKDOWN_FILE", "load_predictions"]
