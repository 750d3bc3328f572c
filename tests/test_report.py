"""`usam report` on metrics.json files written here: table values, CSV, valid PNG charts and heatmaps."""
import csv
import json

import pytest
from PIL import Image

from usam.cli import main as usam_main
from usam.errors import DataError
from usam.evaluation.report import load_run, write_report


def write_run(folder, **run):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(run))
    return folder


@pytest.fixture
def runs(tmp_path):
    gen = {"max_new_tokens": 200, "do_sample": False, "num_beams": 1}
    a = write_run(tmp_path / "runs" / "a-libri", model="model-a", benchmark="librispeech-test-clean", task="asr",
                  n=3, generation=gen, metrics={"wer": 4.25, "cer": 1.5, "n": 3, "details": {"substitutions": 2}},
                  expert_usage={"asr": [0.7, 0.2, 0.1]})
    b = write_run(tmp_path / "runs" / "b-libri", model="model-b", benchmark="librispeech-test-clean", task="asr",
                  n=3, generation=gen, metrics={"wer": 3.0, "cer": 1.25, "n": 3})
    c = write_run(tmp_path / "runs" / "a-clotho", model="model-a", benchmark="clotho-v2-evaluation", task="aac",
                  n=2, generation=gen, metrics={"cider_d": 0.4125, "bleu_4": 0.15, "n": 2,
                                                "spice": {"status": "unavailable", "reason": "no CoreNLP jars"}},
                  expert_usage={"aac": [0.1, 0.3, 0.6]})
    d = write_run(tmp_path / "runs" / "a-synth", model="model-a", benchmark="synthetic-test", task="mixed", n=5,
                  generation=gen, metrics={"asr": {"wer": 10.0, "n": 3}, "qa": {"exact_match": 50.0, "n": 2,
                                                                                  "exact_match[count]": 100.0}},
                  expert_usage={"asr": [0.5, 0.3, 0.2], "qa": [0.2, 0.2, 0.6]})
    return tmp_path, [a, b, c, d]


def check_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_report_table_charts_and_heatmaps(runs):
    tmp, folders = runs
    out = write_report(folders, tmp / "report")
    rows = list(csv.DictReader((tmp / "report" / "report.csv").open()))
    assert [(r["model"], r["benchmark"], r["task"]) for r in rows] == [
        ("model-a", "librispeech-test-clean", "asr"), ("model-b", "librispeech-test-clean", "asr"),
        ("model-a", "clotho-v2-evaluation", "aac"), ("model-a", "synthetic-test", "asr"),
        ("model-a", "synthetic-test", "qa")]
    assert list(rows[0])[:6] == ["model", "benchmark", "task", "n", "wer", "cer"]
    assert float(rows[0]["wer"]) == 4.25 and float(rows[1]["cer"]) == 1.25 and rows[2]["wer"] == ""
    assert float(rows[2]["cider_d"]) == 0.4125 and rows[2]["spice"] == ""  # unavailable is never a number
    assert float(rows[3]["wer"]) == 10.0 and rows[3]["n"] == "3"
    assert float(rows[4]["exact_match[count]"]) == 100.0
    assert "substitutions" not in rows[0]  # details stay out of the table

    md = (tmp / "report" / "report.md").read_text()
    assert "| model-a | librispeech-test-clean | asr | 3 | 4.25 | 1.5 |" in md
    assert "| n/a |" in md and "spice: unavailable: no CoreNLP jars" in md
    names = sorted(p.name for p in out["bar_charts"])
    assert names == sorted(["bar_wer.png", "bar_cer.png", "bar_bleu_4.png", "bar_cider_d.png",
                            "bar_exact_match.png", "bar_exact_match_count.png"])  # no chart for spice
    assert [p.name for p in out["heatmaps"]] == ["expert_usage_model-a.png"]
    for p in out["bar_charts"] + out["heatmaps"]:
        check_png(p)
        assert f"]({p.name})" in md


def test_cli_runs_on_a_folder_of_runs_and_filters_metrics(runs, capsys):
    tmp, _ = runs
    assert usam_main(["report", str(tmp / "runs"), "--out", str(tmp / "r2"), "--metrics", "wer,cider_d"]) == 0
    header = (tmp / "r2" / "report.csv").read_text().splitlines()[0]
    assert header == "model,benchmark,task,n,wer,cider_d"
    assert sorted(p.name for p in (tmp / "r2").glob("bar_*.png")) == ["bar_cider_d.png", "bar_wer.png"]
    assert "4 run(s), 5 row(s)" in capsys.readouterr().out


def test_bad_metrics_files_are_named(tmp_path, capsys):
    bad = write_run(tmp_path / "bad", model="m", benchmark="b", task="asr", n=1, metrics={"wer": [1, 2]})
    with pytest.raises(DataError) as err:
        load_run(bad / "metrics.json")
    assert err.value.field == "metrics.wer" and str(bad / "metrics.json") in str(err.value)
    nomodel = write_run(tmp_path / "nomodel", benchmark="b", task="asr", n=1, metrics={})
    with pytest.raises(DataError, match="field 'model': missing_field"):
        load_run(nomodel / "metrics.json")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{")
    assert usam_main(["report", str(tmp_path / "broken"), "--out", str(tmp_path / "o")]) == 2
    assert "malformed_json" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no metrics.json"):
        write_report([tmp_path / "empty"], tmp_path / "o2")
    with pytest.raises(DataError, match="run folder does not exist"):
        write_report([tmp_path / "nowhere"], tmp_path / "o2")
    w3 = write_run(tmp_path / "w3", model="m", benchmark="b", task="asr", n=1, metrics={}, expert_usage={"asr": [1.0]})
    w2 = write_run(tmp_path / "w2", model="m", benchmark="c", task="asr", n=1, metrics={},
                   expert_usage={"asr": [0.5, 0.5]})
    with pytest.raises(DataError, match="2 experts"):
        write_report([w3, w2], tmp_path / "o3")
