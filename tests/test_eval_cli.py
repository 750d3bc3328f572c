"""`usam eval` / `usam ablate` argument handling (no model needed)."""
from usam.cli import main


def test_eval_needs_a_benchmark_or_a_manifest(capsys, tmp_path):
    assert main(["eval", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "give --benchmark NAME --data-root DIR, or --manifest FILE" in capsys.readouterr().err


def test_eval_names_unknown_benchmarks(capsys, tmp_path):
    assert main(["eval", str(tmp_path), "--benchmark", "nope", "--data-root", str(tmp_path), "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'nope'" in err and "synthetic-test" in err


def test_eval_rejects_a_folder_that_is_not_a_model(capsys, tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    assert main(["eval", str(tmp_path), "--manifest", str(manifest), "--out", str(tmp_path / "o")]) == 1
    assert "no config.json (not a U-SAM model folder)" in capsys.readouterr().err


def test_ablate_reports_missing_model_folders(capsys, tmp_path):
    assert main(["ablate", "--runs", str(tmp_path), "--data-root", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--only", "no-moe"]) == 1
    err = capsys.readouterr().err
    assert "field 'models.no-moe'" in err and "not a model folder" in err
