"""Two CPU ranks (gloo) with DeepSpeed ZeRO-2 and ZeRO-3 against one rank with the same global batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from usam.training.testing import write_corpus

REPO = Path(__file__).resolve().parents[1]


def _launch(out: Path, world: int, grad_accum: int, zero: str, data: tuple, extra=(), check: bool = True):
    """train/train.py in `world` processes under torchrun; check: the run must succeed. Returns the process."""
    train_m, valid_m = data
    overrides = [f"output_dir={out}", f"data.train=[{train_m}]", f"data.valid=[{valid_m}]", "data.bucketing=false",
                 "data.batch_size=2", "schedule.max_steps=3", f"schedule.grad_accum={grad_accum}", "optim.lr=0.01",
                 "logging.log_every=1", "logging.eval_every=2", "logging.save_every=2", "logging.num_generate=2",
                 "logging.log_keys=true", f"deepspeed=configs/deepspeed/{zero}.json", *extra]
    # torchrun --standalone hosts the rendezvous store in its agent: ranks launched by hand with env:// variables
    # (rank 0 hosting the store) aborted at exit now and then on this machine
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
           "train/train.py", "--config", "configs/train/stage1_tiny.yaml", "--no-progress", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:]
    return proc


def _records(out: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    # 11 clips in batches of 2: one micro-batch holds a single clip, for which SACL does not call its heads
    # (the ranks must still agree on which parameters have gradients)
    return root, (write_corpus(root / "data", 11), write_corpus(root / "data", 4, name="valid", seed=1))


@pytest.mark.parametrize("zero", ["zero2", pytest.param("zero3", marks=pytest.mark.slow)])
def test_two_ranks_match_one_rank(data, zero):
    root, manifests = data
    out = root / zero
    # ZeRO-3 partitions only parameters above a size threshold: 0 makes it partition every tiny weight
    extra = ["deepspeed_overrides={zero_optimization.stage3_param_persistence_threshold: 0}"] if zero == "zero3" else []
    _launch(root / f"one_{zero}", 1, 2, zero, manifests, extra)  # 1 rank x 2 micro-batches: the same global batch
    _launch(out, 2, 1, zero, manifests, extra)
    one, two = _records(root / f"one_{zero}", "train"), _records(out, "train")
    assert [r["step"] for r in two] == [1, 2, 3]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["lr"] == pytest.approx(a["lr"])
        rank0, rank1 = (set(k) for k in b["keys"])
        assert rank0 and rank1 and not rank0 & rank1  # the ranks' shards do not overlap
        assert rank0 | rank1 == set(a["keys"][0])  # together they are the 1-rank step's global batch
    assert any(len(k) == 1 for r in two for k in r["keys"])
    v1, v2 = _records(root / f"one_{zero}", "valid"), _records(out, "valid")
    assert [r["step"] for r in v2] == [2, 3]
    # (after the last update: Adam at lr 1e-2 amplifies the rounding differences of the gradient all-reduce)
    for a, b in zip(v1, v2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    # rank 0 alone writes the logs and the final folder
    steps = [r["step"] for r in _records(out, "train")]
    assert steps == sorted(set(steps))  # each step logged once
    assert len(list((out / "tensorboard").glob("events.*"))) == 1
    summaries = _records(out, "summary")
    assert len(summaries) == 1 and summaries[0]["seen"] == 11  # counted over both ranks: every clip once
    from usam.modeling import USAMModel

    model = USAMModel.from_pretrained(out / "final")
    assert model.num_parameters(only_trainable=True) > 0


def _first_batch_files(manifest: Path, rank: int, world: int, valid: bool) -> list[Path]:
    """The audio files of `rank`'s first training micro-batch (or validation batch) under _launch's settings."""
    from usam.training.data import TrainData, valid_batches
    from usam.training.testing import tiny_train_config

    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    if valid:
        indices = valid_batches(len(entries), 2, world)[rank][0]
        return [Path(entries[i]["audio"]) for i in indices]
    cfg = tiny_train_config(manifest.parent / "unused", manifest, None,
                            {"data.bucketing": False, "data.batch_size": 2})
    data = TrainData(cfg, None, rank, world)
    epoch_entries = data.mixed.epoch_entries(0)
    return [Path(epoch_entries[i].audio) for i in data.sampler(0).rank_batches()[0]]


@pytest.mark.parametrize("zero", ["zero2", pytest.param("zero3", marks=pytest.mark.slow)])
def test_a_rank_whose_first_batches_are_unreadable_runs_a_stand_in(tmp_path, zero):
    """Rank 1's first training micro-batch and first validation batch hold only unreadable audio. It runs a
    zero-weighted stand-in (the first readable samples) where it raised alone before (the other rank then waited
    in the gradient all-reduce) or skipped a validation forward (under ZeRO-3, a hang in the weight gathers)."""
    train_m = write_corpus(tmp_path / "data", 11)
    valid_m = write_corpus(tmp_path / "data", 4, name="valid", seed=1)
    broken = _first_batch_files(train_m, 1, 2, valid=False) + _first_batch_files(valid_m, 1, 2, valid=True)
    assert broken
    for path in broken:
        path.write_bytes(b"not audio" * 20)
    extra = ["deepspeed_overrides={zero_optimization.stage3_param_persistence_threshold: 0}"] if zero == "zero3" else []
    out = tmp_path / "run"
    _launch(out, 2, 1, zero, (train_m, valid_m), [*extra, "data.valid_batch_size=2"])
    assert [r["step"] for r in _records(out, "train")] == [1, 2, 3]
    assert [r["step"] for r in _records(out, "valid")] == [2, 3]
    summary = _records(out, "summary")[0]
    assert sum(summary["skipped"].values()) >= len(_first_batch_files(train_m, 1, 2, valid=False))


def test_no_readable_sample_is_one_error_on_every_rank(tmp_path):
    from usam.training.data import stand_in_batch

    class Items:
        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    class Good:
        audio = "wave"

    calls = []

    def collate(items):
        calls.append(items)
        return type("C", (), {"batch": {"n": len(items)}})()

    bad = object()  # no audio: what the dataset returns for an unreadable file
    assert stand_in_batch(Items([bad, Good(), bad, Good(), Good()]), collate, "training").batch == {"n": 2}
    assert len(calls[0]) == 2
    with pytest.raises(RuntimeError, match="no sample of the validation data is readable"):
        stand_in_batch(Items([bad, bad]), collate, "validation")


def test_a_checkpoint_of_two_ranks_restarts_from_its_weights_on_one(data):
    """An exact resume on another number of ranks stops with a message naming --resume-weights; the weights-only
    restart starts from the checkpoint's trained weights and step, and the learning-rate schedule goes on."""
    from safetensors.torch import load_file

    root, manifests = data
    out = root / "restart"
    _launch(out, 2, 1, "zero2", manifests, ["logging.eval_every=0"])
    checkpoint = out / "checkpoints" / "step_000002"
    assert (checkpoint / "model" / "usam_weights.safetensors").exists()  # the trained model, in every checkpoint
    two = {r["step"]: r for r in _records(out, "train")}
    failed = _launch(out, 1, 2, "zero2", manifests, ["logging.eval_every=0", f"--resume={checkpoint}"], check=False)
    assert failed.returncode != 0
    assert "written by 2 ranks" in failed.stdout and "--resume-weights" in failed.stdout
    saved = load_file(str(checkpoint / "model" / "usam_weights.safetensors"))
    # at a learning rate of 1e-30 the restarted run ends with the checkpoint's trained weights: they were loaded
    _launch(out, 1, 2, "zero2", manifests, ["logging.eval_every=0", "optim.lr=1e-30", f"--resume-weights={checkpoint}"])
    final = load_file(str(out / "final" / "usam_weights.safetensors"))
    assert saved.keys() == final.keys() and all(torch_close(saved[k], final[k]) for k in saved)
    _launch(out, 1, 2, "zero2", manifests, ["logging.eval_every=0", f"--resume-weights={checkpoint}"])
    records = _records(out, "train")
    assert [r["step"] for r in records] == [1, 2, 3]  # steps 1-2 of the first run, then the restart's step 3
    assert records[2]["lr"] == pytest.approx(two[3]["lr"])  # the schedule went on from step 2
    final = load_file(str(out / "final" / "usam_weights.safetensors"))
    assert any(not torch_equal(saved[k], final[k]) for k in saved)  # and it trained on from there


def torch_close(a, b) -> bool:
    import torch

    return torch.allclose(a, b, rtol=0, atol=1e-12)


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)
