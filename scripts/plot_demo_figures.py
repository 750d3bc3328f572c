"""Draw the README's demo table as a bar chart: docs/figures/demo_figures.png.

    python scripts/plot_demo_figures.py [--readme README.md] [--out docs/figures/demo_figures.png]

Reads the first Markdown table under the README's "## The demo" heading (one row per figure, one column per test
split; "a / b" cells give two bars, "-" none), so the picture always matches the table: edit the table, rerun.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def demo_table(readme: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(split names, [(figure, cells)]) of the first table after '## The demo'."""
    section = readme.split("\n## The demo", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    if len(rows) < 3:
        raise SystemExit("no table under '## The demo' in the README")
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    return cells[0][1:], [(row[0], row[1:]) for row in cells[2:]]


def bars(splits, rows):
    """[(label, split, value)], one per number. "AAC / MC CIDEr-D" with "0.60 / 0.37" gives the bars
    "AAC CIDEr-D" and "MC CIDEr-D"; "-" gives none."""
    out = []
    for figure, values in rows:
        names = [n.strip() for n in figure.split("/")]
        suffix = names[-1].split(" ", 1)[1] if len(names) > 1 and " " in names[-1] else ""
        for split, cell in zip(splits, values):
            numbers = [v.strip() for v in cell.split("/")]
            if numbers == ["-"]:
                continue
            if len(numbers) == 1:
                out.append((figure, split, float(numbers[0])))
                continue
            for name, number in zip(names, numbers):
                label = name if name.endswith(suffix) else f"{name} {suffix}".strip()
                out.append((label, split, float(number)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "demo_figures.png"))
    parser.add_argument("--title", default="usam demo, 20-minute budget (2-core CPU, no GPU, 2026-11)")
    args = parser.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits, rows = demo_table(Path(args.readme).read_text())
    data = bars(splits, rows)
    labels = list(dict.fromkeys(label for label, _, _ in data))
    used = [s for s in splits if any(s == split for _, split, _ in data)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 1]})
    groups = [("%", [label for label in labels if "%" in label]), ("score", [label for label in labels if "%" not in label])]
    width = 0.8 / len(used)
    for ax, (ylabel, group) in zip(axes, groups):
        for j, split in enumerate(used):
            xs, ys = [], []
            for i, label in enumerate(group):
                for bar_label, bar_split, value in data:
                    if bar_label == label and bar_split == split:
                        xs.append(i + (j - (len(used) - 1) / 2) * width)
                        ys.append(value)
            ax.bar(xs, ys, width, label=split, color=f"C{j}")
        ax.set_xticks(range(len(group)))
        ax.set_xticklabels([g.replace(" %", "").replace(" accuracy", "\naccuracy") for g in group], fontsize=8)
        ax.set_ylabel(ylabel)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
