"""Evaluation metrics, each computed with the field's library (see each module's docstring).

`compute_metrics(name, predictions, references, **opts)` takes a task name (asr, s2tt, aac, mc, cls, qa)
or a metric name (wer, bleu, captioning, accuracy, exact_match) and returns a dict:
- headline scores as top-level scalars (e.g. "wer", "cer"; "bleu", "chrf"; "cider_d", "spider", ...), or
  {"status": "unavailable", "reason": ...} for an optional metric whose files are missing;
- "n": the number of scored items;
- "details": counts, per-class tables, signatures (JSON-serialisable);
- "per_item" (where the metric has per-item values): a list aligned with the predictions, meant for
  predictions.jsonl, not for metrics.json.

Units: WER, CER, BLEU, chrF, accuracy and exact match in percent (0-100); captioning scores on
pycocoevalcap's scale (BLEU/METEOR/ROUGE-L/SPICE/FENSE in [0, 1], CIDEr-D in [0, 10]).
"""
from __future__ import annotations

import inspect
from typing import Callable, Mapping, Sequence

from usam.metrics.asr import asr_metrics
from usam.metrics.captioning import caption_metrics
from usam.metrics.classification import classification_metrics
from usam.metrics.qa import qa_metrics
from usam.metrics.translation import translation_metrics
from usam.tasks import TASKS

METRICS: dict[str, Callable[..., dict]] = {
    "wer": asr_metrics,          # also gives CER
    "bleu": translation_metrics,  # also gives chrF
    "captioning": caption_metrics,
    "accuracy": classification_metrics,
    "exact_match": qa_metrics,
}
TASK_METRIC = {"asr": "wer", "s2tt": "bleu", "aac": "captioning", "mc": "captioning", "cls": "accuracy",
               "qa": "exact_match"}
# The score a benchmark is ranked by, and its direction.
PRIMARY_SCORE = {"wer": "wer", "bleu": "bleu", "captioning": "cider_d", "accuracy": "accuracy",
                 "exact_match": "exact_match"}
LOWER_IS_BETTER = frozenset({"wer", "cer", "unmapped_rate"})
# Per-item fields (manifest columns) a metric takes as a per-item option, e.g. qa's question types.
ITEM_OPTIONS = {"exact_match": {"qtype": "qtypes"}}

assert set(TASK_METRIC) == set(TASKS)


def metric_name(task_or_metric: str) -> str:
    """The metric name for a task name or a metric name."""
    if task_or_metric in METRICS:
        return task_or_metric
    if task_or_metric in TASK_METRIC:
        return TASK_METRIC[task_or_metric]
    raise ValueError(f"unknown task or metric {task_or_metric!r}; tasks: {', '.join(TASK_METRIC)}; "
                     f"metrics: {', '.join(METRICS)}")


def metric_options(metric: str) -> set[str]:
    """The keyword options a metric accepts (for validating configs)."""
    params = inspect.signature(METRICS[metric_name(metric)]).parameters
    return {name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def compute_metrics(task_or_metric_name: str, predictions: Sequence[str], references: Sequence,
                    **opts) -> dict:
    """Score predictions against references with the task's (or the named) metric; see the module doc."""
    metric = metric_name(task_or_metric_name)
    unknown = set(opts) - metric_options(metric)
    if unknown:
        raise TypeError(f"metric {metric!r} has no option(s) {sorted(unknown)}; "
                        f"it accepts {sorted(metric_options(metric))}")
    return METRICS[metric](predictions, references, **opts)


def compute_metrics_per_task(tasks: Sequence[str], predictions: Sequence[str], references: Sequence, *,
                             options: Mapping[str, Mapping] | None = None,
                             item_fields: Mapping[str, Sequence] | None = None) -> dict:
    """Score a mixed-task test set (e.g. the synthetic corpus): each task with its own metric.

    tasks: the task of each item. options: {task: {metric option: value}}. item_fields: per-item manifest
    columns aligned with the predictions; "qtype" goes to qa, and "lang" (the s2tt target language) splits
    s2tt by target language ("s2tt" alone when there is one language, else "s2tt:<lang>" per language),
    each with its own BLEU tokenizer unless `options["s2tt"]["tokenize"]` fixes one.
    Returns {"tasks": {task: metrics without per_item}, "n": int, "per_item": [per-item dict or None]}.
    """
    options = dict(options or {})
    item_fields = dict(item_fields or {})
    if len(tasks) != len(predictions) or len(references) != len(predictions):
        raise ValueError(f"per-task metrics: {len(tasks)} tasks, {len(predictions)} predictions and "
                         f"{len(references)} references must have the same length")
    for field, values in item_fields.items():
        if len(values) != len(predictions):
            raise ValueError(f"per-task metrics: item field {field!r} has {len(values)} values, "
                             f"expected {len(predictions)}")
    unknown = set(options) - set(TASKS)
    if unknown:
        raise ValueError(f"per-task metrics: options for unknown task(s) {sorted(unknown)}")

    groups: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        if task not in TASK_METRIC:
            raise ValueError(f"per-task metrics: item {i} has unknown task {task!r}")
        groups.setdefault(task, []).append(i)
    s2tt = groups.pop("s2tt", None)
    langs = item_fields.get("lang")
    if s2tt and langs is not None:
        by_lang: dict[str, list[int]] = {}
        for i in s2tt:
            by_lang.setdefault(str(langs[i]), []).append(i)
        for lang, idx in by_lang.items():
            groups["s2tt" if len(by_lang) == 1 else f"s2tt:{lang}"] = idx
    elif s2tt:
        groups["s2tt"] = s2tt

    results: dict[str, dict] = {}
    per_item: list[dict | None] = [None] * len(predictions)
    for group in sorted(groups):
        idx = groups[group]
        task = group.split(":")[0]
        metric = TASK_METRIC[task]
        opts = dict(options.get(task, {}))
        if task == "s2tt" and langs is not None:
            opts.setdefault("target_lang", str(langs[idx[0]]))
        for field, option in ITEM_OPTIONS.get(metric, {}).items():
            if field in item_fields:
                opts[option] = [item_fields[field][i] for i in idx]
        result = compute_metrics(task, [predictions[i] for i in idx], [references[i] for i in idx], **opts)
        for i, item in zip(idx, result.pop("per_item", None) or [None] * len(idx)):
            per_item[i] = item
        results[group] = result
    return {"tasks": results, "n": len(predictions), "per_item": per_item}


def copy_fidelity(task: str, predictions: Sequence[str], spellings: Sequence[str]) -> float | None:
    """How much of what the audio tokens spell the answer keeps: the task's primary score of the predictions
    against the spellings (greedy CTC transcripts) as references, over the items whose spelling holds a letter or
    digit (an empty reference has no score); None when none does."""
    pairs = [(p, s) for p, s in zip(predictions, spellings) if any(c.isalnum() for c in s)]
    if not pairs:
        return None
    value = compute_metrics(task, [p for p, _ in pairs], [s for _, s in pairs]).get(PRIMARY_SCORE[metric_name(task)])
    return float(value) if isinstance(value, (int, float)) else None


__all__ = ["compute_metrics", "compute_metrics_per_task", "copy_fidelity", "metric_name", "metric_options",
           "METRICS", "TASK_METRIC", "PRIMARY_SCORE", "LOWER_IS_BETTER", "asr_metrics", "translation_metrics",
           "caption_metrics", "classification_metrics", "qa_metrics"]
