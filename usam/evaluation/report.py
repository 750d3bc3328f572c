"""`usam report`: compare evaluation runs in one table (Markdown + CSV), a bar chart per metric, and a
heatmap of the router's expert usage per task.

Each run folder holds the `metrics.json` that the evaluation runner writes. Its schema:

    {
      "model": "runs/stage2/checkpoint-3000",     # str, required: the evaluated model (name or path)
      "benchmark": "librispeech-test-clean",      # str, required: the registry name (configs/eval/benchmarks.yaml)
      "task": "asr",                              # str, required: a task name, or "mixed" (per-task metrics)
      "metric": "wer",                            # str, optional: the registry's metric name
      "n": 2620,                                  # int, required: number of items scored
      "metrics": {                                # required; what usam.metrics.compute_metrics returns,
        "wer": 2.61, "cer": 0.97,                 #   without "per_item": headline scores are top-level
        "n": 2620,                                #   numbers, an optional metric that could not run is
        "details": {...}                          #   {"status": "unavailable", "reason": "..."}; "details"
      },                                          #   holds counts and tables (not shown in the table)
      "generation": {"max_new_tokens": 200, "do_sample": false, "num_beams": 1, "batch_size": 16},
      "expert_usage": {"asr": [0.61, 0.27, 0.12]},  # optional: {task: mean routing weight of each expert
                                                    #   over the valid audio tokens of that task's items}
      "created": "2026-11-26T05:00:00Z"           # optional
    }

For "task": "mixed" (the synthetic test set), "metrics" maps each task group to such a dict:
`{"asr": {"wer": ...}, "s2tt": {"bleu": ...}, "qa": {"exact_match": ..., "exact_match[count]": ...}}`
(s2tt may be split by target language as "s2tt:zh", "s2tt:de"), and "expert_usage" has one row per task.

Units are those of usam.metrics (percent for WER/BLEU/accuracy/exact match; pycocoevalcap's scale for
captioning). The table has one row per run and task group, and one column per headline score.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

from usam.errors import DataError

METRICS_FILE = "metrics.json"
# Column order of the well-known scores; any other score follows, sorted.
SCORE_ORDER = ("wer", "cer", "bleu", "chrf", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l",
               "cider_d", "spice", "spider", "fense", "accuracy", "balanced_accuracy", "unmapped_rate",
               "exact_match")
ID_COLUMNS = ("model", "benchmark", "task", "n")


def find_metrics_files(paths: Iterable[str | Path]) -> list[Path]:
    """metrics.json of each run folder; a folder without one is searched recursively (sorted)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif (p / METRICS_FILE).is_file():
            found.append(p / METRICS_FILE)
        elif p.is_dir():
            nested = sorted(p.rglob(METRICS_FILE))
            if not nested:
                raise DataError("missing_file", f"no {METRICS_FILE} in this folder or below it", file=str(p))
            found.extend(nested)
        else:
            raise DataError("missing_file", "run folder does not exist", file=str(p))
    return found


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_status(v: Any) -> bool:
    return isinstance(v, dict) and "status" in v


def _check_scores(scores: Any, file: str, fld: str) -> None:
    if not isinstance(scores, dict):
        raise DataError("bad_type", "must be a mapping of scores", file=file, field=fld)
    for k, v in scores.items():
        if k in ("details", "per_item"):
            continue
        if v is not None and not (_is_number(v) or _is_status(v) or isinstance(v, (str, bool))):
            raise DataError("bad_type", f"score {k!r} must be a number, null or a status mapping, got "
                                        f"{type(v).__name__}", file=file, field=f"{fld}.{k}")


def load_run(path: str | Path) -> dict:
    """Read and validate one metrics.json (schema in the module docstring)."""
    path = Path(path)
    file = str(path)
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError("unreadable", str(e), file=file) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError("malformed_json", f"not valid JSON: {e}", file=file) from None
    if not isinstance(run, dict):
        raise DataError("bad_type", "must hold one JSON object", file=file)
    for fld in ("model", "benchmark", "task"):
        if not isinstance(run.get(fld), str) or not run[fld]:
            raise DataError("missing_field" if fld not in run else "bad_type", "must be a non-empty string",
                            file=file, field=fld)
    if isinstance(run.get("n"), bool) or not isinstance(run.get("n"), int) or run["n"] < 0:
        raise DataError("missing_field" if "n" not in run else "bad_type", "must be a non-negative integer",
                        file=file, field="n")
    if "metrics" not in run:
        raise DataError("missing_field", "is required", file=file, field="metrics")
    if run["task"] == "mixed":
        if not isinstance(run["metrics"], dict) or not run["metrics"]:
            raise DataError("bad_type", "a mixed run needs a mapping {task: scores}", file=file, field="metrics")
        for group, scores in run["metrics"].items():
            _check_scores(scores, file, f"metrics.{group}")
    else:
        _check_scores(run["metrics"], file, "metrics")
    usage = run.get("expert_usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise DataError("bad_type", "must be a mapping {task: [weight per expert]}", file=file,
                            field="expert_usage")
        for task, weights in usage.items():
            if not isinstance(weights, list) or not weights or not all(_is_number(w) for w in weights):
                raise DataError("bad_type", "must be a non-empty list of numbers", file=file,
                                field=f"expert_usage.{task}")
    run["_file"] = file
    return run


def _groups(run: dict) -> list[tuple[str, dict]]:
    if run["task"] == "mixed":
        return sorted(run["metrics"].items())
    return [(run["task"], run["metrics"])]


def _score_keys(scores: dict) -> list[str]:
    return [k for k, v in scores.items() if k not in ("n", "details", "per_item") and (_is_number(v) or _is_status(v))]


def _ordered(keys: set[str]) -> list[str]:
    known = [k for k in SCORE_ORDER if k in keys]
    rest = sorted(keys - set(SCORE_ORDER), key=lambda k: (k.split("[")[0] not in SCORE_ORDER, k))
    return known + rest


def comparison_table(runs: Sequence[dict], metrics: Sequence[str] | None = None) -> tuple[list[str], list[dict]]:
    """(columns, rows): one row per run and task group; a cell is a number, a status mapping, or None."""
    rows = []
    keys: set[str] = set()
    for run in runs:
        for group, scores in _groups(run):
            row = {"model": run["model"], "benchmark": run["benchmark"], "task": group,
                   "n": scores.get("n", run["n"]) if _is_number(scores.get("n")) else run["n"]}
            for k in _score_keys(scores):
                row[k] = scores[k]
                keys.add(k)
            rows.append(row)
    score_cols = list(metrics) if metrics else _ordered(keys)
    return list(ID_COLUMNS) + score_cols, rows


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if _is_status(v):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _markdown(columns: list[str], rows: list[dict], title: str, charts: list[str], heatmaps: list[str]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    notes: dict[str, str] = {}
    for row in rows:
        lines.append("| " + " | ".join(esc(_fmt(row.get(c))) for c in columns) + " |")
        for c in columns:
            if _is_status(row.get(c)):
                notes.setdefault(c, f"{row[c]['status']}: {row[c].get('reason', '')}")
    if notes:
        lines += ["", "n/a:"] + [f"- {c}: {why}" for c, why in notes.items()]
    if charts:
        lines += ["", "## Scores", ""] + [f"![{Path(c).stem}]({Path(c).name})" for c in charts]
    if heatmaps:
        lines += ["", "## Router expert usage per task", ""] + [f"![{Path(h).stem}]({Path(h).name})" for h in heatmaps]
    return "\n".join(lines) + "\n"


def _csv(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None or _is_status(row.get(c)) else row[c] for c in columns])
    return buf.getvalue()


def _atomic_write(path: Path, data: str | bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _atomic_write(path, buf.getvalue())


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "x"


def bar_charts(columns: list[str], rows: list[dict], out_dir: Path) -> list[Path]:
    """One PNG per score column that has at least one number: a bar per run/task row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from usam.metrics import LOWER_IS_BETTER

    from collections import Counter

    per_run = Counter((r["model"], r["benchmark"]) for r in rows)  # >1: a mixed run, so name the task too
    label = {id(r): f"{r['model']}\n{r['benchmark']}" + (f"/{r['task']}" if per_run[r["model"], r["benchmark"]] > 1
                                                          else "") for r in rows}
    written = []
    for col in columns[len(ID_COLUMNS):]:
        points = [(label[id(r)], r[col]) for r in rows if _is_number(r.get(col))]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(points) + 1.5), 4.0))
        labels, values = zip(*points)
        bars = ax.bar(range(len(values)), values, color="tab:blue")
        ax.bar_label(bars, labels=[_fmt(float(v)) for v in values], fontsize=8)
        ax.set_xticks(range(len(values)), labels, rotation=30, ha="right", fontsize=8)
        arrow = "lower is better" if col.split("[")[0] in LOWER_IS_BETTER else "higher is better"
        ax.set_title(f"{col} ({arrow})")
        path = out_dir / f"bar_{_safe(col)}.png"
        _save_figure(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def expert_usage_heatmaps(runs: Sequence[dict], out_dir: Path) -> list[Path]:
    """One PNG per model: tasks x experts, the mean routing weight (averaged over that model's runs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    per_model: dict[str, dict[str, list[list[float]]]] = {}
    width: dict[str, tuple[int, str]] = {}
    for run in runs:
        for task, weights in (run.get("expert_usage") or {}).items():
            model = run["model"]
            seen = width.setdefault(model, (len(weights), run["_file"]))
            if seen[0] != len(weights):
                raise DataError("bad_value", f"{len(weights)} experts, but {seen[1]} gives model {model!r} "
                                             f"{seen[0]}", file=run["_file"], field=f"expert_usage.{task}")
            per_model.setdefault(model, {}).setdefault(task, []).append([float(w) for w in weights])
    written = []
    for model, tasks in per_model.items():
        names = sorted(tasks)
        matrix = np.array([np.mean(tasks[t], axis=0) for t in names])  # (tasks, experts)
        n_exp = matrix.shape[1]
        fig, ax = plt.subplots(figsize=(max(3.5, 0.9 * n_exp + 2.0), max(2.5, 0.55 * len(names) + 1.5)))
        im = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(1.0, float(matrix.max())), aspect="auto")
        ax.set_xticks(range(n_exp), [f"expert {e}" for e in range(n_exp)])
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for e in range(n_exp):
                ax.text(e, i, f"{matrix[i, e]:.2f}", ha="center", va="center",
                        color="white" if matrix[i, e] < 0.5 else "black", fontsize=8)
        fig.colorbar(im, ax=ax, label="mean routing weight")
        ax.set_title(f"Expert usage per task: {model}", fontsize=9)
        path = out_dir / f"expert_usage_{_safe(model)}.png"
        _save_figure(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def write_report(run_paths: Iterable[str | Path], out_dir: str | Path, *, metrics: Sequence[str] | None = None,
                 title: str = "U-SAM evaluation report") -> dict[str, Any]:
    """Write report.md, report.csv, bar_<metric>.png and expert_usage_<model>.png into out_dir.

    Returns {"runs": [metrics.json paths], "markdown": Path, "csv": Path, "bar_charts": [...],
    "heatmaps": [...], "columns": [...], "rows": [...]}.
    """
    files = find_metrics_files(run_paths)
    runs = [load_run(f) for f in files]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns, rows = comparison_table(runs, metrics)
    charts = bar_charts(columns, rows, out_dir)
    heatmaps = expert_usage_heatmaps(runs, out_dir)
    md_path, csv_path = out_dir / "report.md", out_dir / "report.csv"
    _atomic_write(md_path, _markdown(columns, rows, title, [str(c) for c in charts], [str(h) for h in heatmaps]))
    _atomic_write(csv_path, _csv(columns, rows))
    return {"runs": files, "markdown": md_path, "csv": csv_path, "bar_charts": charts, "heatmaps": heatmaps,
            "columns": columns, "rows": rows}


# Public names for the evaluation runner (it writes metrics.md and its files with these).
atomic_write = _atomic_write
markdown_report = _markdown
