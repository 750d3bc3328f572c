"""Manifests: the list of training/evaluation samples, read from three formats into `ManifestEntry`s.

Formats (`read_manifest(..., format=...)`, "auto" guesses from the path and the first line):

* ``jsonl`` (ours), one JSON object per line::

    {"key": "ls-1089-0001", "audio": "wav/1089-0001.flac", "task": "asr", "text": "he hoped there would be stew",
     "instruction": null, "duration": 10.4, "offset": 0.0, "end": null, "lang": "en", "speaker": "1089"}

  `key` (unique string), `audio` (path relative to the manifest's folder, or absolute), `task` (one of
  usam.tasks.TASKS) and `text` (a string, or a list of reference strings; the first is the training target)
  are required. `instruction`, `duration` (seconds of the selected segment), `offset`/`end` (seconds; a
  segment of a longer file) and `lang` are optional. Any other field lands in `ManifestEntry.extra`.
* ``official``: the JSON lines of the paper's released code (github.com/Honee-W/U-SAM, data/eg_*.data):
  `key`, `wav` (path), `label` (the text; several references separated by TAB characters, as in its test
  files), `dur` (seconds, a string or a number) and `task`. Its task names are upper case ("ASR", "S2TT",
  "AAC", "MC": see OFFICIAL_TASKS); its example files carry no `task` at all (the released tools add it per
  folder), so `default_task=` supplies one.
* ``hf``: a Hugging Face dataset on local disk: a `save_to_disk` folder (Dataset or DatasetDict with
  `split=`), or one parquet file / a folder of parquet files. The audio column is read with
  `datasets.Audio(decode=False)`, so the encoded bytes (or a path) come back raw and soundfile decodes them.
  Column names are arguments (`audio_column`, `text_column`, `task_column` or a fixed `task`, `key_column`...).

Audio is a path (str, absolute) or the encoded file bytes (bytes, e.g. from a parquet dataset):
`ManifestEntry.audio` holds either, and `usam.data.audio.load_audio` accepts both.

`line` is the 1-based line number in a JSON Lines file, and the 1-based row number in a HF dataset.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from usam.errors import DataError
from usam.tasks import check_task

logger = logging.getLogger("usam.data")

FORMATS = ("auto", "jsonl", "official", "hf")
# Task names of the official code (tools.py of the release tags each folder with one of these).
OFFICIAL_TASKS = {"ASR": "asr", "S2TT": "s2tt", "AAC": "aac", "MC": "mc"}
_JSONL_KNOWN = ("key", "audio", "task", "text", "instruction", "duration", "offset", "end", "lang")
_OFFICIAL_KNOWN = ("key", "wav", "label", "dur", "task")


@dataclass
class ManifestEntry:
    key: str
    audio: str | bytes             # absolute path, or the encoded bytes of an audio file
    task: str
    text: list[str]                # references; text[0] is the training target
    instruction: str | None = None
    duration: float | None = None  # seconds of the selected segment (None until known)
    offset: float = 0.0
    end: float | None = None
    lang: str | None = None
    source: str = ""               # manifest path or dataset path
    line: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def target(self) -> str:
        return self.text[0]

    @property
    def audio_name(self) -> str:
        """A printable name for the audio (the path, or a description of in-memory bytes)."""
        return f"<{len(self.audio)} bytes of row {self.line}>" if isinstance(self.audio, bytes) else self.audio

    def error(self, err: DataError) -> DataError:
        """`err` relocated to this entry's manifest line (the audio path stays in the message)."""
        return err.with_context(file=self.source, line=self.line, key=self.key, field=err.field or "audio")


class _Collector:
    """Receives problems: raises the first one (strict) or keeps them all."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.problems: list[DataError] = []

    def __call__(self, err: DataError) -> None:
        if self.strict:
            raise err
        self.problems.append(err)


# ----------------------------------------------------------------------------------------------- fields
def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require_str(record: dict, name: str, where: dict, *, label: str | None = None) -> str:
    label = label or name
    if name not in record or record[name] is None:
        raise DataError("missing_field", f"required field {label!r} is absent", field=label, **where)
    value = record[name]
    if not isinstance(value, str):
        raise DataError("bad_type", f"{label!r} must be a string, got {type(value).__name__}", field=label, **where)
    if not value.strip():
        raise DataError("missing_field", f"{label!r} is empty", field=label, **where)
    return value


def _optional_str(record: dict, name: str, where: dict) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataError("bad_type", f"{name!r} must be a string or null, got {type(value).__name__}",
                        field=name, **where)
    return value


def _optional_seconds(record: dict, name: str, where: dict, *, allow_string: bool = False,
                      minimum: float = 0.0, strict_min: bool = False) -> float | None:
    value = record.get(name)
    if value is None:
        return None
    if allow_string and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise DataError("bad_type", f"{name!r} must be a number of seconds, got {value!r}",
                            field=name, **where) from None
    if not _is_number(value):
        raise DataError("bad_type", f"{name!r} must be a number of seconds, got {type(value).__name__}",
                        field=name, **where)
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict_min and value == minimum):
        bound = f"> {minimum:g}" if strict_min else f">= {minimum:g}"
        raise DataError("bad_value", f"{name!r} must be finite and {bound}, got {value!r}", field=name, **where)
    return value


def _text_list(value, label: str, where: dict, *, tab_separated: bool = False) -> list[str]:
    if value is None:
        raise DataError("missing_field", f"required field {label!r} is absent", field=label, **where)
    if isinstance(value, str):
        texts = value.split("\t") if tab_separated else [value]
    elif isinstance(value, (list, tuple)):
        texts = list(value)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise DataError("bad_type", f"{label!r}[{i}] must be a string, got {type(t).__name__}",
                                field=label, **where)
    else:
        raise DataError("bad_type", f"{label!r} must be a string or a list of strings, got {type(value).__name__}",
                        field=label, **where)
    if not texts or not texts[0].strip():
        raise DataError("missing_field", f"{label!r} is empty (each reference can be a training target)",
                        field=label, **where)
    for i, t in enumerate(texts[1:], 1):
        if not t.strip():
            raise DataError("missing_field", f"{label!r}[{i}] is empty (each reference can be a training target)",
                            field=label, **where)
    return texts


def _task(value, label: str, where: dict, *, official: bool = False) -> str:
    if value is None:
        raise DataError("missing_field", f"required field {label!r} is absent", field=label, **where)
    if not isinstance(value, str):
        raise DataError("bad_type", f"{label!r} must be a string, got {type(value).__name__}", field=label, **where)
    name = OFFICIAL_TASKS.get(value, value.lower()) if official else value
    try:
        return check_task(name)
    except ValueError as err:
        raise DataError("unknown_task", str(err), field=label, **where) from None


def _resolve(path: str, base_dir: str) -> str:
    # normpath, not Path.resolve(): no file-system access per line (100k-line manifests), symlinks kept
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))


def _segment(record: dict, where: dict, duration_name: str, *,
             allow_string: bool) -> tuple[float, float | None, float | None]:
    """(offset, end, duration) of a record; duration falls back to end - offset."""
    offset = _optional_seconds(record, "offset", where) or 0.0
    end = _optional_seconds(record, "end", where)
    if end is not None and end <= offset:
        raise DataError("bad_value", f"'end' ({end}) must be greater than 'offset' ({offset})", field="end", **where)
    duration = _optional_seconds(record, duration_name, where, allow_string=allow_string, strict_min=True)
    if duration is None and end is not None:
        duration = end - offset
    return offset, end, duration


# ---------------------------------------------------------------------------------------------- readers
def _entry_from_jsonl(record: dict, where: dict, base_dir: str) -> ManifestEntry:
    key = _require_str(record, "key", where)
    where = {**where, "key": key}
    audio = _resolve(_require_str(record, "audio", where), base_dir)
    task = _task(record.get("task"), "task", where)
    text = _text_list(record.get("text"), "text", where)
    offset, end, duration = _segment(record, where, "duration", allow_string=False)
    return ManifestEntry(key=key, audio=audio, task=task, text=text,
                         instruction=_optional_str(record, "instruction", where), duration=duration,
                         offset=offset, end=end, lang=_optional_str(record, "lang", where),
                         source=where["file"], line=where["line"],
                         extra={k: v for k, v in record.items() if k not in _JSONL_KNOWN})


def _entry_from_official(record: dict, where: dict, base_dir: str, default_task: str | None) -> ManifestEntry:
    key = _require_str(record, "key", where)
    where = {**where, "key": key}
    audio = _resolve(_require_str(record, "wav", where), base_dir)
    task = _task(record.get("task", default_task), "task", where, official=True)
    text = _text_list(record.get("label"), "label", where, tab_separated=True)
    offset, end, duration = _segment(record, where, "dur", allow_string=True)
    return ManifestEntry(key=key, audio=audio, task=task, text=text, duration=duration, offset=offset, end=end,
                         lang=_optional_str(record, "lang", where), source=where["file"], line=where["line"],
                         extra={k: v for k, v in record.items() if k not in _OFFICIAL_KNOWN})


def _read_json_lines(path: Path, fmt: str, collect: _Collector, *, default_task: str | None) -> list[ManifestEntry]:
    entries = []
    base_dir = str(path.resolve().parent)
    with open(path, "r", encoding="utf-8-sig") as f:  # -sig: tolerate a byte-order mark
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = {"file": str(path), "line": line_no}
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as err:
                collect(DataError("malformed_json", f"{err.msg} at column {err.colno}", **where))
                continue
            if not isinstance(record, dict):
                collect(DataError("malformed_json", f"expected a JSON object, got {type(record).__name__}", **where))
                continue
            try:
                if fmt == "official":
                    entries.append(_entry_from_official(record, where, base_dir, default_task))
                else:
                    entries.append(_entry_from_jsonl(record, where, base_dir))
            except DataError as err:
                collect(err)
    return entries


def _load_hf(path: Path, split: str | None, cache_dir: str | None):
    import datasets

    where = {"file": str(path)}
    if path.is_dir() and not any(path.glob("*.parquet")):
        try:
            ds = datasets.load_from_disk(str(path))
        except FileNotFoundError as err:
            raise DataError("not_audio", f"not a saved Hugging Face dataset ({err})", **where) from None
        if isinstance(ds, datasets.DatasetDict):
            if split is None and len(ds) == 1:
                split = next(iter(ds))
            if split not in ds:
                raise DataError("bad_value", f"choose a split with split=...; this DatasetDict has "
                                f"{', '.join(ds)} (asked for {split!r})", field="split", **where)
            ds = ds[split]
        return ds
    files = sorted(str(p) for p in path.glob("*.parquet")) if path.is_dir() else [str(path)]
    return datasets.Dataset.from_parquet(files, cache_dir=cache_dir)


def _read_hf(path: Path, collect: _Collector, *, audio_column: str, text_column: str, task_column: str | None,
             default_task: str | None, key_column: str | None, instruction_column: str | None,
             lang_column: str | None, duration_column: str | None, split: str | None,
             cache_dir: str | None) -> list[ManifestEntry]:
    import datasets

    ds = _load_hf(path, split, cache_dir)
    where_file = {"file": str(path)}
    for column in (audio_column, text_column):
        if column not in ds.column_names:
            raise DataError("missing_field", f"no column {column!r}; columns: {', '.join(ds.column_names)}",
                            field=column, **where_file)
    if task_column not in ds.column_names and default_task is None:
        raise DataError("missing_field", f"no task column {task_column!r}: name one (task_column=) or give a "
                        f"fixed task (task=)", field=task_column, **where_file)
    # decode=False: the raw bytes/path come back and soundfile decodes them (datasets' own decoder
    # needs torchcodec, which does not work with the CPU torch wheel here).
    ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
    named = {audio_column, text_column, task_column, key_column, instruction_column, lang_column, duration_column}
    base_dir = str(path.resolve() if path.is_dir() else path.resolve().parent)
    prefix = path.stem
    entries = []
    for row, record in enumerate(ds, start=1):
        where = {"file": str(path), "line": row}
        try:
            key = record.get(key_column) if key_column in record else f"{prefix}/{row - 1}"
            if not isinstance(key, (str, int)) or isinstance(key, bool) or str(key) == "":
                raise DataError("bad_type", f"key column {key_column!r} must hold strings or integers, got {key!r}",
                                field=key_column, **where)
            key = str(key)
            where = {**where, "key": key}
            value = record[audio_column] or {}
            if value.get("bytes"):
                audio: str | bytes = bytes(value["bytes"])
            elif value.get("path"):
                audio = _resolve(value["path"], base_dir)
            else:
                raise DataError("missing_field", "the audio column holds neither bytes nor a path",
                                field=audio_column, **where)
            task_value = record[task_column] if task_column in record else default_task
            task = _task(task_value, task_column or "task", where)
            text = _text_list(record[text_column], text_column, where)
            duration = None
            if duration_column and duration_column in record:
                duration = _optional_seconds(record, duration_column, where, strict_min=True)
            entries.append(ManifestEntry(
                key=key, audio=audio, task=task, text=text,
                instruction=_optional_str(record, instruction_column, where) if instruction_column else None,
                duration=duration, lang=_optional_str(record, lang_column, where) if lang_column else None,
                source=str(path), line=row,
                extra={k: v for k, v in record.items()
                       if k not in named and (v is None or isinstance(v, (str, int, float, bool)))}))
        except DataError as err:
            collect(err)
    return entries


def detect_format(path) -> str:
    """'hf' for a folder or a parquet file, else 'official' if the first record has `wav`, else 'jsonl'."""
    path = Path(path)
    if path.is_dir() or path.suffix in (".parquet", ".arrow"):
        return "hf"
    with open(path, "r", encoding="utf-8-sig") as f:
        for raw in f:
            if raw.strip():
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError:
                    return "jsonl"
                return "official" if isinstance(record, dict) and "wav" in record and "audio" not in record else "jsonl"
    return "jsonl"


def read_manifest(path, strict: bool = True, *, format: str = "auto", check_files: bool = True,
                  read_durations: bool = False, task: str | None = None, audio_column: str = "audio",
                  text_column: str = "text", task_column: str | None = "task", key_column: str | None = "key",
                  instruction_column: str | None = None, lang_column: str | None = None,
                  duration_column: str | None = None, split: str | None = None, cache_dir: str | None = None,
                  progress: bool = False):
    """Read one manifest.

    strict=True: returns list[ManifestEntry] and raises the first DataError.
    strict=False: returns (entries, problems): the good entries and one DataError per bad line.
    check_files: stat every audio path (reason missing_file); read_durations: read every audio header to
    fill in missing durations (costs one file open per entry: optional for big manifests).
    task: the fixed task of a HF dataset without a task column, or of an official file without `task`.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown manifest format {format!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    collect = _Collector(strict)
    if not path.exists():
        collect(DataError("missing_file", f"manifest {path} does not exist", file=str(path)))
        return [] if strict else ([], collect.problems)
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "hf":
        try:
            entries = _read_hf(path, collect, audio_column=audio_column, text_column=text_column,
                               task_column=task_column, default_task=task, key_column=key_column,
                               instruction_column=instruction_column, lang_column=lang_column,
                               duration_column=duration_column, split=split, cache_dir=cache_dir)
        except DataError as err:  # a problem with the whole dataset (missing column, bad split)
            collect(err)
            entries = []
    else:
        entries = _read_json_lines(path, fmt, collect, default_task=task)
    entries = _drop_duplicates(entries, collect)
    if check_files:
        entries = _drop_missing(entries, collect)
    if read_durations:
        bad = fill_durations(entries, strict=strict, progress=progress)
        for err in bad:
            collect(err)
        failed = {id(e) for e in entries if e.duration is None}
        entries = [e for e in entries if id(e) not in failed]
    return entries if strict else (entries, collect.problems)


def read_manifests(paths, strict: bool = True, **kwargs):
    """Several manifests read as one list; keys must be unique across all of them (the feature cache and
    the prediction files are keyed by sample key)."""
    collect = _Collector(strict)
    entries: list[ManifestEntry] = []
    for path in paths:
        if strict:
            entries.extend(read_manifest(path, True, **kwargs))
        else:
            got, problems = read_manifest(path, False, **kwargs)
            entries.extend(got)
            collect.problems.extend(problems)
    entries = _drop_duplicates(entries, collect)
    return entries if strict else (entries, collect.problems)


def _drop_duplicates(entries: list[ManifestEntry], collect: _Collector) -> list[ManifestEntry]:
    first: dict[str, ManifestEntry] = {}
    kept = []
    for e in entries:
        if e.key in first:
            f = first[e.key]
            collect(DataError("duplicate_key", f"key {e.key!r} already used at {f.source}:{f.line}",
                              file=e.source, line=e.line, key=e.key, field="key"))
            continue
        first[e.key] = e
        kept.append(e)
    return kept


def _drop_missing(entries: list[ManifestEntry], collect: _Collector) -> list[ManifestEntry]:
    kept = []
    for e in entries:
        if isinstance(e.audio, str) and not os.path.isfile(e.audio):
            collect(DataError("missing_file", f"{e.audio} does not exist", file=e.source, line=e.line, key=e.key,
                              field="audio"))
            continue
        kept.append(e)
    return kept


def fill_durations(entries: list[ManifestEntry], strict: bool = False, progress: bool = False) -> list[DataError]:
    """Set `duration` from the audio header where the manifest lacks it. Returns the problems (entries whose
    header cannot be read keep duration None); strict raises the first."""
    from usam.data.audio import audio_info

    problems = []
    todo = [e for e in entries if e.duration is None]
    if progress:
        from tqdm import tqdm
        todo = tqdm(todo, desc="reading audio headers", unit="file", disable=None)  # None: only on a terminal
    for e in todo:
        try:
            total, _ = audio_info(e.audio)
        except DataError as err:
            err = e.error(err)
            if strict:
                raise err from None
            problems.append(err)
            continue
        e.duration = max(0.0, (total if e.end is None else min(e.end, total)) - e.offset)
    return problems


# ----------------------------------------------------------------------------------------------- mixing
def mix_entries(sources, seed: int, epoch: int = 0) -> list[ManifestEntry]:
    """One epoch's list from several manifests with sampling weights: `sources` = [(entries, weight), ...].

    Semantics, per source of N entries and weight w >= 0: every entry appears floor(w) times, and
    round(frac(w) * N) further entries, drawn without replacement by (seed, epoch, source index), appear once
    more. So weight 1.0 = each entry once per epoch, 2.0 = twice, 0.5 = a different random half each epoch,
    and the epoch length is the same for every epoch. The list is in source order (shuffling is the
    sampler's job); the same (seed, epoch) gives the same list on every run.
    """
    out: list[ManifestEntry] = []
    for index, (entries, weight) in enumerate(sources):
        if not _is_number(weight) or weight < 0 or not math.isfinite(weight):
            raise ValueError(f"mixing weight of source {index} must be a finite number >= 0, got {weight!r}")
        whole = int(math.floor(weight))
        out.extend(list(entries) * whole)
        extra = int(round((weight - whole) * len(entries)))
        if extra:
            rng = np.random.default_rng([seed, epoch, index])
            picked = np.sort(rng.choice(len(entries), size=extra, replace=False))
            out.extend(entries[i] for i in picked)
    return out


class MixedManifest:
    """Several manifests with weights (see mix_entries). `epoch_entries(epoch)` gives the epoch's list:
    build the AudioDataset and the batch sampler from it once per epoch (its length never changes)."""

    def __init__(self, sources, seed: int = 0):
        self.sources = [(list(entries), float(weight)) for entries, weight in sources]
        self.seed = seed
        for index, (_, weight) in enumerate(self.sources):
            if weight < 0 or not math.isfinite(weight):
                raise ValueError(f"mixing weight of source {index} must be a finite number >= 0, got {weight!r}")

    def epoch_entries(self, epoch: int) -> list[ManifestEntry]:
        return mix_entries(self.sources, self.seed, epoch)

    def __len__(self) -> int:
        return sum(math.floor(w) * len(e) + int(round((w - math.floor(w)) * len(e))) for e, w in self.sources)
