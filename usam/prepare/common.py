"""What every dataset preparer shares: reading metadata tables, audio headers and writing manifests.

A dataset module turns its official metadata into clip records (dicts with an absolute `audio` Path);
`prepare_dataset` then checks the audio, reads durations from the headers (soundfile.info), and writes
one JSON Lines manifest per split, atomically, plus an `info.json` summary next to them.
"""
from __future__ import annotations

import csv
import functools
import json
import logging
import os
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from usam.errors import DataError
from usam.tasks import EVAL_INSTRUCTIONS, check_task

log = logging.getLogger("usam.prepare")


@dataclass
class SplitSource:
    """What a dataset module found for one split: clip records, and clips it left out on purpose."""
    records: list[dict]
    skipped: dict[str, str] = field(default_factory=dict)  # key or file -> why it was left out


@dataclass
class SplitSummary:
    name: str
    path: Path
    count: int
    hours: float
    missing_audio: int
    no_duration: int
    skipped: int


def require_file(path: Path, what: str) -> Path:
    """`path` if it is an existing file, else a DataError naming it and what it should be."""
    if not path.is_file():
        raise DataError("missing_file", f"{path} not found ({what})", file=str(path))
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError("missing_file", f"folder {path} not found ({what})", file=str(path))
    return path


def read_table(path: Path, required: tuple[str, ...], *, delimiter: str = ",",
               quoting: int = csv.QUOTE_MINIMAL, escapechar: str | None = None) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV/TSV with a header, as (line number, row); a DataError names a missing column or cell."""
    require_file(path, "metadata table")
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: some copies carry a byte-order mark
        reader = csv.DictReader(f, delimiter=delimiter, quoting=quoting, escapechar=escapechar)
        columns = reader.fieldnames or []
        absent = [c for c in required if c not in columns]
        if absent:
            raise DataError("missing_field", f"column(s) {', '.join(absent)} absent; the header has: "
                            f"{', '.join(columns) or '(nothing)'}", file=str(path), line=1, field=absent[0])
        rows = []
        for row in reader:
            for column in required:
                if row.get(column) is None or not row[column].strip():
                    raise DataError("missing_field", f"empty cell in column {column!r}", file=str(path),
                                    line=reader.line_num, field=column)
            rows.append((reader.line_num, row))
    return rows


def fill_pattern(pattern: str, path_hint: str, **fields) -> str:
    """`pattern.format(**fields)` with a clear error for an unknown placeholder."""
    try:
        return pattern.format(**fields)
    except (KeyError, IndexError) as err:
        raise DataError("bad_value", f"audio pattern {pattern!r} uses unknown placeholder {err}; known: "
                        f"{', '.join('{' + k + '}' for k in fields)}", field=path_hint) from None


@functools.lru_cache(maxsize=4096)
def _folder_names(folder: str) -> frozenset[str]:
    try:
        return frozenset(os.listdir(folder))
    except OSError:
        return frozenset()


def forget_listings() -> None:
    """Drop cached folder listings (call before reading a split: files may have changed since)."""
    _folder_names.cache_clear()


def first_existing(candidates: list[Path]) -> Path:
    """The first candidate that exists, else the first candidate (then counted as missing audio).

    Looks names up in cached folder listings: AudioCaps tries up to 30 names per clip, and a stat per name
    is slow on network file systems."""
    for path in candidates:
        if path.name in _folder_names(str(path.parent)):
            return path
    return candidates[0]


def check_unique_keys(records: list[dict], where: str) -> None:
    counts = Counter(r["key"] for r in records)
    duplicates = sorted(k for k, n in counts.items() if n > 1)
    if duplicates:
        shown = ", ".join(duplicates[:10]) + (f" and {len(duplicates) - 10} more" if len(duplicates) > 10 else "")
        raise DataError("duplicate_key", f"{len(duplicates)} key(s) occur more than once: {shown}",
                        file=where, field="key")


def audio_seconds(path: Path) -> float | None:
    """Duration from the audio header, or None (with a warning) when libsndfile cannot read it."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except Exception as err:  # libsndfile raises several types (LibsndfileError, RuntimeError, TypeError)
        log.warning("cannot read the audio header of %s (%s); duration omitted", path, err)
        return None
    if not info.samplerate or info.frames <= 0:
        log.warning("%s has no samples according to its header; duration omitted", path)
        return None
    return info.frames / info.samplerate


def _attach_durations(records: list[dict], workers: int, desc: str) -> None:
    """Fill `duration` from headers; a segment (offset/end) gets its own length, clipped to the file."""
    from tqdm import tqdm

    # Threads: soundfile.info spends its time in libsndfile (file I/O), which runs without the GIL.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        seconds = list(tqdm(pool.map(lambda r: audio_seconds(r["audio"]), records), total=len(records),
                            desc=desc, unit="clip", leave=False))
    for record, total in zip(records, seconds):
        if total is None:
            continue
        start = float(record.get("offset", 0.0))
        stop = min(float(record.get("end", total)), total)
        if stop <= start:
            log.warning("%s: segment %.3f-%s s lies outside the %.3f s file; duration omitted",
                        record["audio"], start, record.get("end"), total)
            continue
        record["duration"] = round(stop - start, 4)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private (0600); manifests are shared data
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_manifest(path: Path, records: list[dict], *, relative: bool = False) -> None:
    """One JSON object per line; `audio` absolute, or relative to the manifest's folder if `relative`."""
    check_unique_keys(records, str(path))
    lines = []
    for record in records:
        check_task(record["task"])
        row = dict(record)
        audio = Path(row["audio"]).absolute()
        row["audio"] = os.path.relpath(audio, path.parent.absolute()) if relative else str(audio)
        lines.append(json.dumps(row, ensure_ascii=False))
    _atomic_write_text(path, "".join(line + "\n" for line in lines))


def finish_split(source: SplitSource, out_path: Path, *, keep_missing: bool, relative: bool,
                 workers: int) -> SplitSummary:
    """Check audio presence, read durations, write the manifest; return its counts."""
    check_unique_keys(source.records, f"source of {out_path.name}")
    present, missing = [], []
    for record in source.records:
        (present if Path(record["audio"]).is_file() else missing).append(record)
    if missing:
        log.warning("%s: audio missing for %d clip(s), e.g. %s; %s", out_path.name, len(missing),
                    missing[0]["audio"], "kept without duration" if keep_missing else "skipped")
    _attach_durations(present, workers, out_path.stem)
    records = source.records if keep_missing else present
    for key, reason in source.skipped.items():
        log.info("%s: skipped %s: %s", out_path.name, key, reason)
    write_manifest(out_path, records, relative=relative)
    return SplitSummary(name=out_path.stem, path=out_path, count=len(records),
                        hours=sum(r.get("duration", 0.0) for r in records) / 3600.0,
                        missing_audio=len(missing), no_duration=sum("duration" not in r for r in present),
                        skipped=len(source.skipped))


def write_info(out_dir: Path, dataset: str, task: str, summaries: list[SplitSummary], notes: str) -> None:
    """`info.json`: which task (hence which fixed evaluation instruction) the manifests use, and counts.

    Splits written by an earlier run (e.g. `--splits test-clean` after `--splits dev-clean`) are kept."""
    path = out_dir / "info.json"
    earlier = {}
    if path.is_file():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8")).get("splits", {})
        except (ValueError, AttributeError):
            log.warning("%s is not valid JSON; rewriting it", path)
    info = {
        "dataset": dataset,
        "task": task,
        "eval_instruction": EVAL_INSTRUCTIONS[task],
        "notes": notes,
        "splits": {s.name: {"manifest": s.path.name, "clips": s.count, "hours": round(s.hours, 4),
                            "missing_audio": s.missing_audio, "no_duration": s.no_duration,
                            "skipped": s.skipped} for s in summaries},
    }
    info["splits"] = {**earlier, **info["splits"]}
    _atomic_write_text(path, json.dumps(info, ensure_ascii=False, indent=2) + "\n")
