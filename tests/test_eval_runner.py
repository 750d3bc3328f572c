"""The evaluation runner on a tiny random model (saved, loaded back) and a synthetic-style test split."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from usam.errors import DataError
from usam.evaluation.generation import GenerationSettings
from usam.evaluation.registry import load_registry
from usam.evaluation.runner import build_items, evaluate, manifest_benchmark, plan_batches
from usam.evaluation.sharding import DistContext
from usam.evaluation.tiny import TINY_QUESTIONS, TINY_SPLIT_ITEMS, build_talking_tiny_model, write_tiny_split

REPO = Path(__file__).resolve().parents[1]
ITEMS, QUESTIONS = TINY_SPLIT_ITEMS, TINY_QUESTIONS
MAX_NEW = 10
write_split = write_tiny_split


def read_jsonl(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_talking_tiny_model(tmp_path_factory.mktemp("model") / "tiny", seed=0)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_split(root)
    return root


@pytest.fixture(scope="module")
def synthetic_test():
    return load_registry()["synthetic-test"]


@pytest.fixture(scope="module")
def batched_run(model_dir, data_root, synthetic_test, tmp_path_factory):
    out = tmp_path_factory.mktemp("batched")
    settings = GenerationSettings(max_audio_seconds=1000.0, max_batch_size=32, max_new_tokens=MAX_NEW)
    metrics = evaluate(model_dir, synthetic_test, out, data_root=data_root, settings=settings, progress=False)
    return out, metrics


def test_batches_are_sorted_single_task_and_partition_the_items(data_root, synthetic_test):
    from usam.data import read_manifest

    entries = read_manifest(data_root / "synth" / "test.jsonl")
    settings = GenerationSettings(max_audio_seconds=4.0, max_batch_size=2)
    items = build_items(entries, synthetic_test, settings)
    assert items[6].instruction == QUESTIONS["count"] and items[0].instruction == "Transcribe the speech."
    assert [it.max_new_tokens for it in items[:4]] == [96, 96, 96, 16]  # per-task budgets from the registry
    seen = []
    for rank in range(2):
        batches = plan_batches(items, settings, DistContext(rank=rank, world_size=2))
        for batch in batches:
            assert len({items[p].entry.task for p in batch}) == 1
            durations = [items[p].entry.duration for p in batch]
            assert durations == sorted(durations) and len(batch) * max(durations) <= 4.0 or len(batch) == 1
        seen += [p for b in batches for p in b]
    # every item on exactly one rank, except the lone s2tt item: a task with fewer items than ranks is
    # repeated on both (the merge keeps one prediction per key)
    assert sorted(seen) == sorted(list(range(len(items))) + [len(items) - 1])


def test_batched_predictions_equal_one_at_a_time(model_dir, data_root, synthetic_test, batched_run, tmp_path):
    out, metrics = batched_run
    single = evaluate(model_dir, synthetic_test, tmp_path, data_root=data_root, progress=False,
                      settings=GenerationSettings(max_batch_size=1, max_new_tokens=MAX_NEW))
    many, one = read_jsonl(out / "predictions.jsonl"), read_jsonl(tmp_path / "predictions.jsonl")
    assert [r["prediction"] for r in many] == [r["prediction"] for r in one]
    assert len({r["prediction"] for r in many}) >= 8, "the tiny model should say different things per clip"
    for a, b in zip(many, one):
        np.testing.assert_allclose(a["expert_weights"], b["expert_weights"], atol=1e-5)
    assert json.dumps(metrics["metrics"], sort_keys=True) == json.dumps(single["metrics"], sort_keys=True)
    assert metrics["generation"]["max_batch_size"] == 32 and single["generation"]["max_batch_size"] == 1


def test_end_to_end_writes_all_outputs_with_every_task_scored(batched_run, data_root):
    from usam.evaluation.report import load_run

    out, metrics = batched_run
    assert {"predictions.jsonl", "metrics.json", "metrics.md"} <= {p.name for p in out.iterdir()}
    assert not (out / ".shards").exists()
    run = load_run(out / "metrics.json")  # the report's schema
    assert run["benchmark"] == "synthetic-test" and run["task"] == "mixed" and run["n"] == len(ITEMS)
    assert set(run["metrics"]) == {"asr", "cls", "qa", "aac", "s2tt"}
    assert run["metrics"]["asr"]["n"] == 3 and 0 <= run["metrics"]["asr"]["wer"]
    assert "accuracy" in run["metrics"]["cls"] and "exact_match[count]" in run["metrics"]["qa"]
    assert "cider_d" in run["metrics"]["aac"]
    assert run["metrics"]["s2tt"]["n"] == 1 and "bleu" in run["metrics"]["s2tt"]
    gen = run["generation"]
    assert gen["do_sample"] is False and gen["num_beams"] == 1
    assert gen["max_new_tokens"] == {t: MAX_NEW for t in ("aac", "asr", "cls", "qa", "s2tt")}
    assert set(run["expert_usage"]) == {"asr", "cls", "qa", "aac", "s2tt"}
    for weights in run["expert_usage"].values():
        assert len(weights) == 3 and abs(sum(weights) - 1) < 1e-4

    rows = read_jsonl(out / "predictions.jsonl")
    manifest = read_jsonl(data_root / "synth" / "test.jsonl")
    assert [r["key"] for r in rows] == [m["key"] for m in manifest]  # manifest order, one line per key
    for row, line in zip(rows, manifest):
        assert {"key", "task", "instruction", "prediction", "references"} <= set(row)
        assert row["duration"] == pytest.approx(line["duration"], abs=1e-3)  # the full clip, never a crop
        assert row["new_tokens"] <= MAX_NEW
        assert "<|" not in row["prediction"]  # special tokens skipped
    asr = [r for r in rows if r["task"] == "asr"]
    assert all("wer" in r and "cer" in r for r in asr)
    assert sum(r["errors"] for r in asr) == metrics["metrics"]["asr"]["details"]["substitutions"] + \
        metrics["metrics"]["asr"]["details"]["deletions"] + metrics["metrics"]["asr"]["details"]["insertions"]
    qa = [r for r in rows if r["task"] == "qa"]
    assert [r["qtype"] for r in qa] == ["count", "drums"] and all("correct" in r for r in qa)
    assert qa[0]["instruction"] == QUESTIONS["count"]
    assert rows[-1]["instruction"] == "Translate the speech into Chinese." and rows[-1]["lang"] == "zh"
    assert [r["references"] for r in rows if r["task"] == "aac"][0] == ["a dog barks", "a dog is barking loudly"]
    table = (out / "metrics.md").read_text()
    for task in ("asr", "cls", "qa", "aac", "s2tt"):
        assert f"| synthetic-test | {task} |" in table


def test_manifest_mode_infers_the_task(model_dir, data_root, tmp_path):
    one_task = write_split(tmp_path, ITEMS[:3], name="asr.jsonl")
    out = evaluate(model_dir, None, tmp_path / "out", manifest=one_task, progress=False,
                   settings=GenerationSettings(max_new_tokens=4))
    assert out["task"] == "asr" and out["benchmark"] == "asr" and out["metrics"]["n"] == 3
    assert manifest_benchmark("x.jsonl", None, [type("E", (), {"task": t}) for t in ("asr", "qa")]).mixed
    with pytest.raises(DataError, match=r"asr.jsonl:1: key 'utt0-asr': field 'task'.*'cls' benchmark"):
        evaluate(model_dir, None, tmp_path / "bad", manifest=one_task, task="cls", progress=False)


def test_the_whole_model_evaluates_in_the_asked_dtype(model_dir, tmp_path, monkeypatch):
    """--dtype casts encoders, connector and LLM alike (auto: the LLM's own dtype); bf16 runs end to end."""
    import torch

    import usam.evaluation.runner as runner

    seen = []

    class Recording(runner.BatchGenerator):
        def __init__(self, model, *args, **kwargs):
            seen.append({p.dtype for p in model.parameters()})
            super().__init__(model, *args, **kwargs)

    monkeypatch.setattr(runner, "BatchGenerator", Recording)
    one_task = write_split(tmp_path, ITEMS[:3], name="asr.jsonl")
    for name, dtype in (("auto", torch.float32), ("bfloat16", torch.bfloat16)):  # the tiny LLM is fp32
        out = evaluate(model_dir, None, tmp_path / name, manifest=one_task, progress=False, dtype=name,
                       settings=GenerationSettings(max_new_tokens=4))
        assert seen[-1] == {dtype} and out["run"]["dtype"] == name and out["metrics"]["n"] == 3
    with pytest.raises(ValueError, match="dtype 'int8'"):
        evaluate(model_dir, None, tmp_path / "bad", manifest=one_task, progress=False, dtype="int8")
    assert runner.default_workers(torch.device("cpu")) == 0


def test_duplicate_keys_stop_the_run(model_dir, tmp_path):
    path = write_split(tmp_path, ITEMS[:3])
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"utt2-asr"', '"utt0-asr"')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        evaluate(model_dir, None, tmp_path / "out", manifest=path, progress=False)
    err = info.value
    assert err.reason == "duplicate_key" and err.key == "utt0-asr" and err.line == 3 and err.file == str(path)
    assert "already used at" in str(err) and f"{path}:1" in str(err)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_bad_audio_stops_the_run_with_file_line_and_reason(model_dir, tmp_path):
    path = write_split(tmp_path, ITEMS[:4])
    (tmp_path / "synth" / "audio" / "c2.wav").write_bytes(b"this is not a wav file at all" * 10)
    with pytest.raises(DataError) as info:
        evaluate(model_dir, None, tmp_path / "out", manifest=path, progress=False)
    assert (info.value.file, info.value.line, info.value.reason) == (str(path), 3, "not_audio")
    assert str(info.value).startswith(f"{path}:3: key 'utt2-asr'")
    # without durations in the manifest, the headers are read first: the same error, before any generation
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in x.items() if k != "duration"}) + "\n" for x in lines))
    with pytest.raises(DataError) as info:
        evaluate(model_dir, None, tmp_path / "out", manifest=path, progress=False)
    assert (info.value.file, info.value.line, info.value.reason) == (str(path), 3, "not_audio")
    sf.write(tmp_path / "synth" / "audio" / "c2.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(DataError) as info:
        evaluate(model_dir, None, tmp_path / "out", manifest=path, progress=False)
    assert (info.value.file, info.value.line, info.value.reason) == (str(path), 3, "zero_length")


def test_nan_audio_found_while_generating_stops_the_run(model_dir, tmp_path):
    path = write_split(tmp_path, ITEMS[:4])
    wave = np.zeros(8000, dtype=np.float32)
    wave[100] = np.nan  # the header is fine: only decoding finds it, inside the generation loop
    sf.write(tmp_path / "synth" / "audio" / "c1.wav", wave, 16000, subtype="FLOAT")
    with pytest.raises(DataError) as info:
        evaluate(model_dir, None, tmp_path / "out", manifest=path, progress=False)
    assert (info.value.file, info.value.line, info.value.reason) == (str(path), 2, "nan_inf")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(world: int, args: list[str], timeout=240, attempts=3):
    """Start `world` processes of `usam eval` by hand (RANK, WORLD_SIZE, MASTER_ADDR/PORT), without torchrun,
    whose agent would stop the other ranks when one fails.
    The free port is only free when it is picked: other programs on this machine may take it before rank 0
    listens, so a launch that fails with "address already in use" is retried on a new port."""
    for attempt in range(attempts):
        port = _free_port()
        procs = []
        for rank in range(world):
            env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
            procs.append(subprocess.Popen([sys.executable, "-m", "usam.cli", "eval", *args, "--no-progress"],
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          cwd=REPO))
        results = []
        try:
            for p in procs:
                out, err = p.communicate(timeout=timeout)
                results.append((p.returncode, out, err))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if not any("address already in use" in err.lower() for _, _, err in results):
            return results
    return results


def rank_report(results) -> str:
    return "\n".join(f"--- rank {r}: exit {code}\n{err[-2500:]}" for r, (code, _, err) in enumerate(results))


def test_two_ranks_give_the_same_predictions_and_metrics_as_one(model_dir, data_root, batched_run, tmp_path):
    one_dir, one = batched_run
    # torchrun, as in real use (--standalone picks a free rendezvous port itself)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "usam.cli", "eval", str(model_dir), "--benchmark", "synthetic-test", "--data-root",
                          str(data_root), "--out", str(tmp_path), "--max-new-tokens", str(MAX_NEW),
                          "--max-audio-seconds", "3", "--no-progress"], capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert run.returncode == 0, run.stderr[-5000:]
    two = json.loads((tmp_path / "metrics.json").read_text())
    assert two["run"]["world_size"] == 2 and one["run"]["world_size"] == 1
    assert json.dumps(two["metrics"], sort_keys=True) == json.dumps(one["metrics"], sort_keys=True)
    rows_two, rows_one = read_jsonl(tmp_path / "predictions.jsonl"), read_jsonl(one_dir / "predictions.jsonl")
    strip = lambda r: {k: v for k, v in r.items() if k != "expert_weights"}  # noqa: E731
    assert [strip(r) for r in rows_two] == [strip(r) for r in rows_one]
    for a, b in zip(rows_two, rows_one):
        np.testing.assert_allclose(a["expert_weights"], b["expert_weights"], atol=1e-5)
    assert not (tmp_path / ".shards").exists()


@pytest.mark.slow
def test_a_bad_sample_on_one_rank_stops_every_rank(model_dir, tmp_path):
    path = write_split(tmp_path, ITEMS[:6])
    wave = np.zeros(8000, dtype=np.float32)
    wave[5] = np.inf
    sf.write(tmp_path / "synth" / "audio" / "c4.wav", wave, 16000, subtype="FLOAT")
    results = launch_ranks(2, [str(model_dir), "--manifest", str(path), "--out", str(tmp_path / "out"),
                               "--max-new-tokens", "3", "--batch-size", "1"], timeout=180)
    # both ranks exit (no hang at the barrier: no supervisor kills them here) and name the bad line
    for code, out, err in results:
        assert code != 0, rank_report(results)
        assert f"{path}:5: key 'utt4-cls'" in err and "nan_inf" in err, rank_report(results)
    assert not (tmp_path / "out" / "metrics.json").exists()
