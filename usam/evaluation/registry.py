"""The benchmark registry: configs/eval/benchmarks.yaml -> {name: Benchmark}.

Each entry (under the top-level `benchmarks:` mapping) has:
  manifest        path template; `${data_root}` is given at run time, `${synth_dir}` defaults to
                  `${data_root}/synth` (the layout of `usam prepare`: OUT/<dataset>/<split>.jsonl)
  task            one of usam.tasks.TASKS, or "mixed": every item is scored by its own task's metric
  metric          optional; the task's metric by default (usam.metrics.TASK_METRIC); "per_task" for mixed
  instruction     optional fixed prompt (default usam.tasks.EVAL_INSTRUCTIONS[task]); for mixed a
                  mapping {task: prompt}; "{lang}" and "{question}" are filled per item
  max_new_tokens  positive int; for mixed an int or a mapping {task: int} (with "default" for the rest)
  options         metric options (e.g. {tokenize: zh}, {labels: [...]}); for mixed {task: {...}}
  description     optional text
A bad entry raises usam.errors.DataError naming the file and the field (e.g. `benchmarks.x.metric`).
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from usam.errors import DataError
from usam.tasks import EVAL_INSTRUCTIONS, LANGUAGE_NAMES, TASKS

MIXED = "mixed"
PER_TASK = "per_task"
DEFAULT_REGISTRY = Path(__file__).resolve().parents[2] / "configs" / "eval" / "benchmarks.yaml"
_FIELDS = {"manifest", "task", "metric", "instruction", "max_new_tokens", "options", "description"}
_PLACEHOLDERS = {"lang", "question"}
# Metric options that come per item from the manifest (see usam.metrics.ITEM_OPTIONS), not from the config.
_ITEM_ONLY_OPTIONS = {"qtypes", "target_lang"}


@dataclass(frozen=True)
class Benchmark:
    name: str
    manifest: str                       # template with ${data_root} / ${synth_dir}
    task: str                           # a task name or MIXED
    metric: str                         # a usam.metrics name, or PER_TASK for MIXED
    max_new_tokens: int | Mapping[str, int]
    instruction: str | Mapping[str, str] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def mixed(self) -> bool:
        return self.task == MIXED

    def manifest_path(self, data_root: str | Path, *, synth_dir: str | Path | None = None) -> Path:
        """The manifest file for a data root (and synthetic-corpus folder)."""
        values = {"data_root": str(data_root),
                  "synth_dir": str(synth_dir) if synth_dir is not None else str(Path(data_root) / "synth")}
        return Path(string.Template(self.manifest).substitute(values))

    def max_new_tokens_for(self, task: str | None = None) -> int:
        if isinstance(self.max_new_tokens, int):
            return self.max_new_tokens
        return int(self.max_new_tokens.get(task, self.max_new_tokens.get("default", 0)))

    def instruction_for(self, task: str | None = None, *, lang: str | None = None,
                        question: str | None = None) -> str:
        """The fixed evaluation prompt of an item (of `task` for a mixed benchmark)."""
        task = task or self.task
        if self.mixed:
            custom = (self.instruction or {}).get(task)
        else:
            custom = self.instruction
        template = custom or EVAL_INSTRUCTIONS[task]
        if "{question}" in template and not question:
            raise ValueError(f"benchmark {self.name!r}: task {task!r} needs the item's own question")
        return template.format(lang=LANGUAGE_NAMES.get(lang or "zh", lang or "Chinese"), question=question or "")

    def metric_options(self, task: str | None = None) -> dict:
        """The options passed to the metric (of `task` for a mixed benchmark)."""
        if self.mixed:
            return dict(self.options.get(task, {}))
        return dict(self.options)

    def evaluate(self, predictions: Sequence[str], references: Sequence, *, tasks: Sequence[str] | None = None,
                 item_fields: Mapping[str, Sequence] | None = None) -> tuple[dict, list]:
        """Score one run: (metrics for metrics.json, per-item results aligned with the predictions).

        tasks: each item's task (needed for a mixed benchmark). item_fields: manifest columns per item,
        e.g. {"qtype": [...], "lang": [...]}. For a mixed benchmark the metrics are {task: {...}}.
        """
        from usam.metrics import ITEM_OPTIONS, compute_metrics, compute_metrics_per_task

        if self.mixed:
            if tasks is None:
                raise ValueError(f"benchmark {self.name!r} is mixed: pass each item's task")
            out = compute_metrics_per_task(tasks, predictions, references, options=self.options,
                                           item_fields=item_fields)
            return out["tasks"], out["per_item"]
        opts = self.metric_options()
        item_fields = item_fields or {}
        for column, option in ITEM_OPTIONS.get(self.metric, {}).items():
            if column in item_fields:
                opts[option] = list(item_fields[column])
        if self.task == "s2tt" and "lang" in item_fields and "target_lang" not in opts:
            langs = {str(v) for v in item_fields["lang"]}
            if len(langs) > 1:
                raise ValueError(f"benchmark {self.name!r}: several target languages {sorted(langs)}; "
                                 "BLEU over mixed languages means nothing")
            opts["target_lang"] = langs.pop()
        result = compute_metrics(self.metric, predictions, references, **opts)
        per_item = result.pop("per_item", None) or [None] * len(predictions)
        return result, per_item


def _err(reason: str, message: str, path: Path, fld: str) -> DataError:
    return DataError(reason, message, file=str(path), field=fld)


def _check_instruction(text: Any, path: Path, fld: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise _err("bad_type", "must be a non-empty string", path, fld)
    names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    if names - _PLACEHOLDERS:
        raise _err("bad_value", f"unknown placeholder(s) {sorted(names - _PLACEHOLDERS)}; allowed: {{lang}}, "
                                "{question}", path, fld)


def _check_options(metric: str, options: Any, path: Path, fld: str) -> dict:
    from usam.metrics import metric_options

    if not isinstance(options, Mapping):
        raise _err("bad_type", "must be a mapping of metric options", path, fld)
    allowed = metric_options(metric) - _ITEM_ONLY_OPTIONS
    unknown = set(options) - allowed
    if unknown:
        raise _err("bad_value", f"metric {metric!r} has no option(s) {sorted(unknown)}; it accepts "
                                f"{sorted(allowed)}", path, fld)
    labels = options.get("labels")
    if labels is not None and (not isinstance(labels, list) or not labels
                               or not all(isinstance(l, str) and l.strip() for l in labels)):
        raise _err("bad_type", "labels must be a non-empty list of non-empty strings", path, f"{fld}.labels")
    if labels is not None:
        from usam.metrics.classification import _label_forms
        try:
            _label_forms(labels, options.get("aliases"))
        except ValueError as e:
            raise _err("bad_value", str(e), path, f"{fld}.labels") from None
    return dict(options)


def _positive_int(value: Any, path: Path, fld: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _err("bad_value", f"must be a positive integer, got {value!r}", path, fld)
    return value


def _benchmark(name: str, entry: Any, path: Path) -> Benchmark:
    from usam.metrics import METRICS, TASK_METRIC

    where = f"benchmarks.{name}"
    if not isinstance(entry, Mapping):
        raise _err("bad_type", "each benchmark must be a mapping of fields", path, where)
    unknown = set(entry) - _FIELDS
    if unknown:
        raise _err("bad_value", f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}", path, where)
    for req in ("manifest", "task", "max_new_tokens"):
        if entry.get(req) in (None, ""):
            raise _err("missing_field", "is required", path, f"{where}.{req}")
    manifest = entry["manifest"]
    if not isinstance(manifest, str):
        raise _err("bad_type", "must be a path string", path, f"{where}.manifest")
    try:
        string.Template(manifest).substitute(data_root="", synth_dir="")
    except (KeyError, ValueError) as e:
        raise _err("bad_value", f"only ${{data_root}} and ${{synth_dir}} may be used ({e})", path,
                   f"{where}.manifest") from None
    task = entry["task"]
    if task != MIXED and task not in TASKS:
        raise _err("unknown_task", f"{task!r} is not one of {', '.join(TASKS)} or {MIXED!r}", path, f"{where}.task")
    options = entry.get("options") or {}
    instruction = entry.get("instruction")
    max_new = entry["max_new_tokens"]

    if task == MIXED:
        metric = entry.get("metric", PER_TASK)
        if metric != PER_TASK:
            raise _err("bad_value", f"a mixed benchmark is scored per task: metric must be {PER_TASK!r}, got "
                                    f"{metric!r}", path, f"{where}.metric")
        if not isinstance(options, Mapping):
            raise _err("bad_type", "must be a mapping {task: {option: value}}", path, f"{where}.options")
        checked = {}
        for t, opts in options.items():
            if t not in TASKS:
                raise _err("unknown_task", f"{t!r} is not one of {', '.join(TASKS)}", path, f"{where}.options")
            checked[t] = _check_options(TASK_METRIC[t], opts, path, f"{where}.options.{t}")
        options = checked
        if instruction is not None:
            if not isinstance(instruction, Mapping):
                raise _err("bad_type", "must be a mapping {task: prompt} for a mixed benchmark", path,
                           f"{where}.instruction")
            for t, text in instruction.items():
                if t not in TASKS:
                    raise _err("unknown_task", f"{t!r} is not one of {', '.join(TASKS)}", path,
                               f"{where}.instruction")
                _check_instruction(text, path, f"{where}.instruction.{t}")
            instruction = dict(instruction)
        if isinstance(max_new, Mapping):
            for t, v in max_new.items():
                if t not in TASKS and t != "default":
                    raise _err("unknown_task", f"{t!r} is not a task or 'default'", path, f"{where}.max_new_tokens")
                _positive_int(v, path, f"{where}.max_new_tokens.{t}")
            missing = [t for t in TASKS if t not in max_new]
            if missing and "default" not in max_new:
                raise _err("missing_field", f"no value for task(s) {missing} and no 'default'", path,
                           f"{where}.max_new_tokens")
            max_new = dict(max_new)
        else:
            _positive_int(max_new, path, f"{where}.max_new_tokens")
    else:
        metric = entry.get("metric", TASK_METRIC[task])
        if metric not in METRICS:
            raise _err("bad_value", f"unknown metric {metric!r}; known: {', '.join(METRICS)}", path,
                       f"{where}.metric")
        if metric != TASK_METRIC[task]:
            raise _err("bad_value", f"metric {metric!r} does not score task {task!r} (it needs "
                                    f"{TASK_METRIC[task]!r})", path, f"{where}.metric")
        options = _check_options(metric, options, path, f"{where}.options")
        if instruction is not None:
            _check_instruction(instruction, path, f"{where}.instruction")
        if task == "qa" and instruction is not None and "{question}" not in instruction:
            raise _err("bad_value", "a qa prompt must contain {question}", path, f"{where}.instruction")
        _positive_int(max_new, path, f"{where}.max_new_tokens")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise _err("bad_type", "must be a string", path, f"{where}.description")
    return Benchmark(name=name, manifest=manifest, task=task, metric=metric, max_new_tokens=max_new,
                     instruction=instruction, options=options, description=description)


def load_registry(path: str | Path | None = None) -> dict[str, Benchmark]:
    """Read and validate the benchmark registry (default: configs/eval/benchmarks.yaml)."""
    import yaml

    path = Path(path) if path is not None else DEFAULT_REGISTRY
    if not path.is_file():
        raise DataError("missing_file", "benchmark registry not found", file=str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError("unreadable", f"not valid YAML: {e}", file=str(path)) from None
    if not isinstance(data, Mapping) or not isinstance(data.get("benchmarks"), Mapping) or not data["benchmarks"]:
        raise _err("missing_field", "the file needs a non-empty top-level mapping 'benchmarks'", path, "benchmarks")
    extra = set(data) - {"benchmarks"}
    if extra:
        raise _err("bad_value", f"unknown top-level key(s) {sorted(extra)}", path, "benchmarks")
    out = {}
    for name, entry in data["benchmarks"].items():
        if not isinstance(name, str) or not name:
            raise _err("bad_type", f"benchmark names must be strings, got {name!r}", path, "benchmarks")
        out[name] = _benchmark(name, entry, path)
    return out
