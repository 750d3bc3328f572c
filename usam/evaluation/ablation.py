"""The ablation runner: the same benchmarks over the model folders of the ablation switches, one table.

configs/eval/ablations.yaml lists `models` (name -> model folder, "${runs}" filled at run time) and
`benchmarks` (registry names). Each (model, benchmark) pair is one `usam.evaluation.runner.evaluate` run
into OUT/<model>/<benchmark>/, with the ablation's name as the model name; then
`usam.evaluation.report.write_report` puts every run into OUT/report.md and OUT/report.csv (one row per
model, benchmark and task group) with its bar charts and expert-usage heatmaps.
Under torchrun the process group is created once for all runs; rank 0 writes the report.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from usam.errors import DataError

DEFAULT_ABLATIONS = Path(__file__).resolve().parents[2] / "configs" / "eval" / "ablations.yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # used as a folder name


@dataclass
class AblationPlan:
    models: dict[str, Path]                 # name -> model folder
    benchmarks: list[str]
    source: str = ""
    skipped: list[str] = field(default_factory=list)


def load_ablations(path: str | Path | None = None, *, runs: str | Path = "runs",
                   only: Sequence[str] | None = None) -> AblationPlan:
    """Read and check the ablation list; `only` keeps the named models (in the file's order)."""
    import yaml

    path = Path(path) if path is not None else DEFAULT_ABLATIONS
    file = str(path)
    if not path.is_file():
        raise DataError("missing_file", "ablation list not found", file=file)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataError("unreadable", f"not valid YAML: {e}", file=file) from None
    if not isinstance(data, Mapping):
        raise DataError("bad_type", "must be a mapping with 'models' and 'benchmarks'", file=file)
    extra = set(data) - {"models", "benchmarks"}
    if extra:
        raise DataError("bad_value", f"unknown key(s) {sorted(extra)}; allowed: models, benchmarks", file=file)
    models = data.get("models")
    if not isinstance(models, Mapping) or not models:
        raise DataError("missing_field", "needs a non-empty mapping name -> model folder", file=file, field="models")
    benchmarks = data.get("benchmarks")
    if not isinstance(benchmarks, list) or not benchmarks or not all(isinstance(b, str) and b for b in benchmarks):
        raise DataError("missing_field", "needs a non-empty list of benchmark names", file=file, field="benchmarks")
    out = {}
    for name, folder in models.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise DataError("bad_value", f"model name {name!r}: letters, digits, '.', '_' or '-' only", file=file,
                            field="models")
        if not isinstance(folder, str) or not folder:
            raise DataError("bad_type", "must be a folder path", file=file, field=f"models.{name}")
        try:
            out[name] = Path(string.Template(folder).substitute(runs=str(runs)))
        except (KeyError, ValueError) as e:
            raise DataError("bad_value", f"only ${{runs}} may be used ({e})", file=file, field=f"models.{name}") \
                from None
    if only:
        unknown = [n for n in only if n not in out]
        if unknown:
            raise DataError("bad_value", f"unknown model(s) {unknown}; listed: {', '.join(out)}", file=file,
                            field="models")
        out = {n: p for n, p in out.items() if n in only}
    return AblationPlan(out, list(benchmarks), file)


def check_plan(plan: AblationPlan, registry: Mapping) -> None:
    """Fail before any run: every model folder must exist and every benchmark be registered."""
    for name in plan.benchmarks:
        if name not in registry:
            raise DataError("bad_value", f"unknown benchmark {name!r}; known: {', '.join(registry)}",
                            file=plan.source, field="benchmarks")
    for name, folder in plan.models.items():
        if not (folder / "config.json").is_file():
            raise DataError("missing_file", f"{folder}: not a model folder (no config.json)", file=plan.source,
                            field=f"models.{name}")


def run_ablations(plan: AblationPlan, out_dir: str | Path, *, data_root: str | Path | None = None,
                  synth_dir: str | Path | None = None, registry_path: str | Path | None = None,
                  settings=None, skip_existing: bool = False, title: str = "U-SAM ablations", **evaluate_kwargs):
    """Evaluate every model on every benchmark, then write the comparison. Returns write_report's dict on
    rank 0 (None on other ranks). skip_existing: reuse a run folder that already has its metrics.json."""
    from usam.evaluation.registry import load_registry
    from usam.evaluation.report import write_report
    from usam.evaluation.runner import METRICS_FILE, evaluate
    from usam.evaluation.sharding import close_distributed, init_distributed

    registry = load_registry(registry_path)
    check_plan(plan, registry)
    out_dir = Path(out_dir)
    ctx = init_distributed()  # once for all runs (evaluate() joins this group)
    try:
        run_dirs = []
        for name, folder in plan.models.items():
            for bench in plan.benchmarks:
                run_dir = out_dir / name / bench
                run_dirs.append(run_dir)
                if skip_existing and (run_dir / METRICS_FILE).is_file():
                    plan.skipped.append(f"{name}/{bench}")
                    continue
                evaluate(folder, registry[bench], run_dir, data_root=data_root, synth_dir=synth_dir,
                         settings=settings, model_name=name, **evaluate_kwargs)
        if not ctx.is_main:
            return None
        return write_report(run_dirs, out_dir, title=title)
    finally:
        close_distributed(ctx)
