"""PNG plots of a run's metrics.jsonl: loss curves (train parts + validation), validation scores per task (when
logged) and expert usage per task."""
from __future__ import annotations

import json
from pathlib import Path

from usam.training.logging import METRICS


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics file (is {run_dir} a training output_dir?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def expert_usage(records: list[dict]) -> tuple[list[str], list[list[float]]]:
    """Mean routing weight per task and expert over the whole run (token-weighted)."""
    sums: dict[str, list[float]] = {}
    counts: dict[str, float] = {}
    for r in records:
        if r.get("kind") != "train":
            continue
        for task, means in (r.get("experts") or {}).items():
            n = (r.get("expert_tokens") or {}).get(task, 1)
            prev = sums.get(task, [0.0] * len(means))
            sums[task] = [a + m * n for a, m in zip(prev, means)]
            counts[task] = counts.get(task, 0) + n
    tasks = sorted(sums)
    return tasks, [[v / counts[t] for v in sums[t]] for t in tasks]


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    out_dir = Path(out_dir or Path(run_dir) / "plots")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    if train or valid:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for key in ("loss", "ce", "sacl", "balance"):
            pts = [(r["step"], r[key]) for r in train if key in r]
            if pts:
                axes[0].plot(*zip(*pts), label=f"train {key}")
        pts = [(r["step"], r["loss"]) for r in valid if "loss" in r]
        if pts:
            axes[0].plot(*zip(*pts), "o-", label="valid loss")
        axes[0].set_xlabel("step")
        axes[0].set_title("loss")
        axes[0].legend()
        tasks = sorted({k.split("/", 1)[1] for r in valid for k in r if k.startswith("ce/")})
        for task in tasks:
            pts = [(r["step"], r[f"ce/{task}"]) for r in valid if f"ce/{task}" in r]
            axes[1].plot(*zip(*pts), "o-", label=task)
        axes[1].set_xlabel("step")
        axes[1].set_title("validation cross-entropy per task")
        if tasks:
            axes[1].legend()
        fig.tight_layout()
        path = out_dir / "loss.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    scores = sorted({k for r in valid for k in r if "/" in k and not k.startswith("ce/")})
    if scores:  # logging.score_per_task: generated answers scored per task (WER, accuracy, ...)
        fig, axes = plt.subplots(1, len(scores), figsize=(4 * len(scores), 3.5), squeeze=False)
        for ax, key in zip(axes[0], scores):
            pts = [(r["step"], r[key]) for r in valid if key in r]
            ax.plot(*zip(*pts), "o-")
            ax.set_xlabel("step")
            ax.set_title(f"valid {key}")
        fig.tight_layout()
        path = out_dir / "scores.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    tasks, usage = expert_usage(records)
    if tasks:
        fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(usage[0]), 1 + 0.6 * len(tasks)))
        image = ax.imshow(usage, cmap="viridis", vmin=0, vmax=max(max(row) for row in usage), aspect="auto")
        ax.set_xticks(range(len(usage[0])), [f"expert {e}" for e in range(len(usage[0]))])
        ax.set_yticks(range(len(tasks)), tasks)
        for i, row in enumerate(usage):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 * max(row) else "k")
        ax.set_title("mean routing weight per task")
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        path = out_dir / "experts.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def score_curve(run_dirs: list[str | Path]) -> list[dict]:
    """Validation scores of consecutive runs (stage 1, then stage 2, ...) on one time axis: one row per
    validation, {"run", "step", "minutes" (wall time since the first run started), score: value, ...}.
    Each run's clock starts where the previous run's last record ended."""
    rows, offset_s = [], 0.0
    for index, run_dir in enumerate(run_dirs):
        records = read_metrics(run_dir)
        for r in records:
            if r.get("kind") == "valid":
                scores = {k: v for k, v in r.items() if "/" in k and not k.startswith("ce/")}
                rows.append({"run": index, "step": r["step"],
                             "minutes": round((offset_s + r.get("elapsed_s", 0.0)) / 60, 2), **scores})
        offset_s += max((r.get("elapsed_s", 0.0) for r in records), default=0.0)
    return rows


def plot_score_curve(rows: list[dict], path: str | Path, run_names: list[str] | None = None) -> Path | None:
    """One panel per score (score_curve's rows) against minutes, a marker style per run. None without scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = sorted({k for r in rows for k in r if "/" in k})
    if not scores:
        return None
    runs = sorted({r["run"] for r in rows})
    cols = min(3, len(scores))
    lines = -(-len(scores) // cols)
    fig, axes = plt.subplots(lines, cols, figsize=(4.5 * cols, 3.5 * lines), squeeze=False)
    for ax in axes.flat[len(scores):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, scores):
        for run in runs:
            pts = [(r["minutes"], r[key]) for r in rows if r["run"] == run and key in r]
            if pts:
                # one colour per run in every panel, also where a score exists in some runs only
                ax.plot(*zip(*pts), "o-", color=f"C{run % 10}", label=run_names[run] if run_names else f"run {run}")
        ax.set_xlabel("minutes of training")
        ax.set_title(f"valid {key}")
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
