import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from usam.data.dataset import AudioDataset, Sample, SkippedSample, SkipStats, split_skipped
from usam.data.manifest import read_manifest
from usam.errors import DataError


def make_manifest(tmp_path):
    """Six entries: two good clips and four bad ones that pass the manifest checks (the file exists)."""
    sr = 16000
    t = np.arange(sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(tmp_path / "good.wav", tone, sr)
    tone44 = (0.3 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)).astype(np.float32)
    sf.write(tmp_path / "good44.flac", np.stack([tone44, tone44], 1), 44100)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_bytes(b"not audio at all\n" * 50)
    nan = tone.copy()
    nan[5] = np.nan
    sf.write(tmp_path / "nan.wav", nan, sr, subtype="FLOAT")
    sf.write(tmp_path / "long.wav", np.zeros(5 * sr, np.float32), sr)
    names = ["good.wav", "empty.wav", "good44.flac", "text.wav", "nan.wav", "long.wav"]
    lines = [json.dumps({"key": f"k{i}", "audio": n, "task": "aac", "text": ["ref a", "ref b"]})
             for i, n in enumerate(names)]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_strict_raises_with_manifest_location(tmp_path):
    m = make_manifest(tmp_path)
    ds = AudioDataset(read_manifest(m), strict=True, max_seconds=3.0)
    s = ds[0]
    assert isinstance(s, Sample) and s.audio.dtype == np.float32 and s.duration == pytest.approx(1.0)
    assert s.references == ["ref a", "ref b"] and s.target == "ref a" and s.line == 1
    assert len(ds[2].audio) == pytest.approx(16000, abs=1)  # 44.1 kHz stereo -> 16 kHz mono
    for index, reason in [(1, "empty_audio"), (3, "not_audio"), (4, "nan_inf"), (5, "too_long")]:
        with pytest.raises(DataError) as e:
            ds[index]
        err = e.value
        assert (err.reason, err.file, err.line, err.key, err.field) == (reason, str(m), index + 1, f"k{index}", "audio")
        assert str(err).startswith(f"{m}:{index + 1}: key 'k{index}': field 'audio': {reason}: ")


def test_non_strict_skips_and_counts_through_dataloader_workers(tmp_path, caplog):
    m = make_manifest(tmp_path)
    ds = AudioDataset(read_manifest(m), strict=False, max_seconds=3.0)
    stats = SkipStats(max_examples=2)
    kept = []

    def collate(items):
        samples, skipped = split_skipped(items)
        return samples, items

    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    for samples, items in loader:  # counting happens here, in the main process
        stats.update(items)
        kept += [s.key for s in samples]
    assert kept == ["k0", "k2"]
    d = stats.as_dict()
    assert d["seen"] == 6 and d["skipped"] == 4
    assert d["by_reason"] == {"empty_audio": 1, "nan_inf": 1, "not_audio": 1, "too_long": 1}
    assert len(d["examples"]) == 2 and d["examples"][0].startswith(f"{m}:2: key 'k1'")
    with caplog.at_level(logging.WARNING, logger="usam.data"):
        stats.log()
    assert "skipped 4 of 6 samples" in caplog.text and "empty_audio: 1" in caplog.text


def test_split_skipped():
    s = Sample(key="a", audio=np.zeros(3, np.float32), task="asr", references=["x"])
    k = SkippedSample(key="b", file="m.jsonl", line=2, reason="nan_inf", message="bad")
    assert split_skipped([s, k, s]) == ([s, s], [k])
    assert k.error().reason == "nan_inf"


def test_dataloader_with_bucket_sampler(tmp_path):
    from usam.data.manifest import fill_durations
    from usam.data.sampler import DurationBucketSampler

    lines = []
    for i, seconds in enumerate([0.5, 1.0, 1.5, 2.0, 0.7]):
        sf.write(tmp_path / f"c{i}.wav", np.full(int(seconds * 16000), 0.1, np.float32), 16000)
        lines.append(json.dumps({"key": f"c{i}", "audio": f"c{i}.wav", "task": "asr", "text": "x"}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    entries = read_manifest(tmp_path / "m.jsonl")
    assert fill_durations(entries) == []
    ds = AudioDataset(entries, strict=True)
    sampler = DurationBucketSampler(ds.durations, max_audio_seconds=3.0, seed=0, num_replicas=1, rank=0)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=lambda items: items)
    assert len(loader) == len(sampler)
    seen = []
    for batch in loader:
        assert len(batch) * max(s.duration for s in batch) <= 3.0 + 1e-6
        seen += [s.key for s in batch]
    assert sorted(seen) == [f"c{i}" for i in range(5)]


def test_every_caption_of_a_multi_reference_entry_is_a_training_target(tmp_path):
    """Clotho has five captions per clip: each is the training target about equally often across epochs,
    reproducibly from the seed; the training batch's answer is that caption; validation keeps them all."""
    from collections import Counter

    from usam.training.collate import TrainItems

    sf.write(tmp_path / "a.wav", np.zeros(8000, np.float32), 16000)
    captions = [f"caption number {i}" for i in range(5)]
    row = {"key": "clotho1", "audio": "a.wav", "task": "aac", "text": captions, "instruction": "Describe."}
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "key": "clotho2"}) + "\n")
    entries = read_manifest(tmp_path / "m.jsonl")

    def targets(seed, epochs=300):
        return [TrainItems(AudioDataset(entries), seed=seed, epoch=epoch)[index].target
                for epoch in range(epochs) for index in range(2)]

    drawn = targets(0)
    counts = Counter(drawn)
    assert set(counts) == set(captions)
    assert all(90 <= n <= 150 for n in counts.values()), counts  # 600 draws over 5 captions: 120 each expected
    assert drawn == targets(0) and drawn != targets(1)  # reproducible from the seed, and the seed matters
    assert Counter(TrainItems(AudioDataset(entries), seed=0, epoch=0, train=False)[0].target for _ in range(3)) \
        == Counter({captions[0]: 3})  # validation: the first, as before (its scores use every reference)
    item = TrainItems(AudioDataset(entries), seed=0, epoch=0)[0]
    assert item.references == captions  # the other captions stay with the sample for scoring
