"""The benchmark registry: the shipped YAML loads, and bad entries are named by file and field."""
import pytest

from usam.errors import DataError
from usam.evaluation import Benchmark, load_registry
from usam.tasks import EVAL_INSTRUCTIONS

EXPECTED = {"librispeech-test-clean", "librispeech-test-other", "covost2-en-zh-test", "clotho-v2-evaluation",
            "audiocaps-test", "musiccaps", "esc50", "gtzan", "synthetic-test"}


def test_shipped_registry_loads_with_the_field_conventions(tmp_path):
    reg = load_registry()
    assert set(reg) == EXPECTED and all(isinstance(b, Benchmark) for b in reg.values())
    clean = reg["librispeech-test-clean"]
    assert (clean.task, clean.metric, clean.max_new_tokens_for()) == ("asr", "wer", 200)
    assert clean.manifest_path(tmp_path) == tmp_path / "librispeech" / "test-clean.jsonl"
    assert clean.instruction_for() == EVAL_INSTRUCTIONS["asr"]
    assert reg["covost2-en-zh-test"].metric_options() == {"tokenize": "zh"}
    assert len(reg["esc50"].options["labels"]) == 50 and len(reg["gtzan"].options["labels"]) == 10
    for name in ("clotho-v2-evaluation", "audiocaps-test", "musiccaps"):
        assert reg[name].metric == "captioning" and reg[name].max_new_tokens_for() >= 64
    synth = reg["synthetic-test"]
    assert synth.mixed and synth.manifest_path(tmp_path, synth_dir=tmp_path / "s") == tmp_path / "s" / "test.jsonl"
    assert synth.manifest_path(tmp_path) == tmp_path / "synth" / "test.jsonl"
    assert synth.max_new_tokens_for("asr") == 96 and synth.max_new_tokens_for("cls") == 16
    assert synth.instruction_for("s2tt", lang="zh") == "Translate the speech into Chinese."
    assert synth.instruction_for("qa", question="How many dogs?") == "How many dogs?"


def test_benchmarks_score_their_predictions():
    reg = load_registry()
    metrics, per_item = reg["gtzan"].evaluate(["Hip-hop.", "jazz"], ["hiphop", "rock"])
    assert metrics["accuracy"] == 50.0 and per_item[0]["rule"] == "exact" and "per_item" not in metrics
    metrics, per_item = reg["synthetic-test"].evaluate(
        ["two cats", "yes", "no"], ["2 cats", "yes", "yes"], tasks=["asr", "qa", "qa"],
        item_fields={"qtype": [None, "yesno", "yesno"]})
    assert metrics["asr"]["wer"] == 0.0 and metrics["qa"]["exact_match[yesno]"] == 50.0
    assert per_item[2]["correct"] is False


def write(tmp_path, text):
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("body, field, reason", [
    ("x: {manifest: a.jsonl, task: ocr, max_new_tokens: 8}", "benchmarks.x.task", "unknown_task"),
    ("x: {manifest: a.jsonl, task: asr, metric: rouge, max_new_tokens: 8}", "benchmarks.x.metric", "bad_value"),
    ("x: {manifest: a.jsonl, task: asr, metric: bleu, max_new_tokens: 8}", "benchmarks.x.metric", "bad_value"),
    ("x: {manifest: a.jsonl, task: asr}", "benchmarks.x.max_new_tokens", "missing_field"),
    ("x: {manifest: a.jsonl, task: asr, max_new_tokens: 0}", "benchmarks.x.max_new_tokens", "bad_value"),
    ("x: {task: asr, max_new_tokens: 8}", "benchmarks.x.manifest", "missing_field"),
    ("x: {manifest: '${root}/a.jsonl', task: asr, max_new_tokens: 8}", "benchmarks.x.manifest", "bad_value"),
    ("x: {manifest: a.jsonl, task: s2tt, max_new_tokens: 8, options: {tokenizer: zh}}", "benchmarks.x.options",
     "bad_value"),
    ("x: {manifest: a.jsonl, task: cls, max_new_tokens: 8, options: {labels: []}}", "benchmarks.x.options.labels",
     "bad_type"),
    ("x: {manifest: a.jsonl, task: asr, max_new_tokens: 8, instruction: 'Say {what}'}", "benchmarks.x.instruction",
     "bad_value"),
    ("x: {manifest: a.jsonl, task: mixed, max_new_tokens: {asr: 8}}", "benchmarks.x.max_new_tokens",
     "missing_field"),
    ("x: {manifest: a.jsonl, task: mixed, max_new_tokens: 8, options: {ocr: {}}}", "benchmarks.x.options",
     "unknown_task"),
    ("x: {manifest: a.jsonl, task: asr, max_new_tokens: 8, prompt: hi}", "benchmarks.x", "bad_value"),
])
def test_bad_entries_name_the_file_and_field(tmp_path, body, field, reason):
    path = write(tmp_path, "benchmarks:\n  " + body + "\n")
    with pytest.raises(DataError) as err:
        load_registry(path)
    assert (err.value.field, err.value.reason, err.value.file) == (field, reason, str(path))
    assert str(path) in str(err.value) and field in str(err.value)


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(DataError, match="missing_file"):
        load_registry(tmp_path / "nope.yaml")
    with pytest.raises(DataError, match="not valid YAML"):
        load_registry(write(tmp_path, "benchmarks: [\n"))
    with pytest.raises(DataError, match="top-level mapping 'benchmarks'"):
        load_registry(write(tmp_path, "other: 1\n"))
