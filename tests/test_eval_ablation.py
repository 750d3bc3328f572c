"""The ablation runner: two model folders over the same benchmark into one table."""
import csv
import json
from pathlib import Path

import pytest

from usam.errors import DataError
from usam.evaluation.ablation import DEFAULT_ABLATIONS, load_ablations, run_ablations
from usam.evaluation.generation import GenerationSettings
from usam.evaluation.tiny import TINY_SPLIT_ITEMS, build_talking_tiny_model, write_tiny_split


def test_the_shipped_ablation_list_is_valid():
    plan = load_ablations(DEFAULT_ABLATIONS, runs="/r")
    assert {"full", "no-moe", "no-sacl", "speech-only", "audio-only", "music-only"} <= set(plan.models)
    assert plan.models["no-moe"] == Path("/r/no-moe/final") and plan.benchmarks == ["synthetic-test"]


def test_bad_ablation_lists_name_the_field(tmp_path):
    bad = tmp_path / "a.yaml"
    bad.write_text("models: {full: '${oops}/x'}\nbenchmarks: [synthetic-test]\n")
    with pytest.raises(DataError, match=r"a.yaml: field 'models.full'.*\$\{runs\}"):
        load_ablations(bad)
    bad.write_text("models: {full: x}\n")
    with pytest.raises(DataError, match="field 'benchmarks'"):
        load_ablations(bad)
    bad.write_text("models: {full: x}\nbenchmarks: [synthetic-test]\n")
    with pytest.raises(DataError, match="unknown model"):
        load_ablations(bad, only=["nope"])
    with pytest.raises(DataError, match=r"field 'models.full'.*not a model folder"):
        run_ablations(load_ablations(bad), tmp_path / "out", data_root=tmp_path)


def test_two_model_folders_give_one_table(tmp_path):
    runs = tmp_path / "runs"
    build_talking_tiny_model(runs / "full" / "final", seed=0)
    build_talking_tiny_model(runs / "no-moe" / "final", seed=0, **{"projector.num_experts": 1})
    write_tiny_split(tmp_path / "data", TINY_SPLIT_ITEMS)
    listing = tmp_path / "ablations.yaml"
    listing.write_text("benchmarks: [synthetic-test]\nmodels:\n  full: ${runs}/full/final\n"
                       "  no-moe: ${runs}/no-moe/final\n")
    plan = load_ablations(listing, runs=runs)
    out = tmp_path / "out"
    result = run_ablations(plan, out, data_root=tmp_path / "data", progress=False,
                           settings=GenerationSettings(max_new_tokens=6))
    for name in ("full", "no-moe"):
        run = json.loads((out / name / "synthetic-test" / "metrics.json").read_text())
        assert run["model"] == name and set(run["metrics"]) == {"aac", "asr", "cls", "qa", "s2tt"}
        assert len(run["expert_usage"]["asr"]) == (3 if name == "full" else 1)
    with open(result["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["model"], r["task"]) for r in rows) == sorted(
        (m, t) for m in ("full", "no-moe") for t in ("aac", "asr", "cls", "qa", "s2tt"))
    assert all(r["benchmark"] == "synthetic-test" for r in rows) and all(r["wer"] for r in rows if r["task"] == "asr")
    table = Path(result["markdown"]).read_text()
    assert "| full | synthetic-test | asr |" in table and "| no-moe | synthetic-test | asr |" in table
    assert (out / "expert_usage_full.png").is_file()

    again = run_ablations(load_ablations(listing, runs=runs), out, data_root=tmp_path / "data", progress=False,
                          skip_existing=True, settings=GenerationSettings(max_new_tokens=6))
    assert len(again["rows"]) == len(rows)
