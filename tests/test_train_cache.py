"""Encoder feature cache: the same losses as the live encoders; a stale cache is refused."""
import json

import pytest
import torch

from usam.training.cache import FeatureCacheReader, StaleCacheError
from usam.training.testing import tiny_train_config, train_losses, write_corpus
from usam.training.trainer import train


def _cache(tmp_path, manifest, out, seed=0):
    from usam.cli import main

    assert main(["cache", "--model", "configs/model/tiny.yaml", "--manifest", str(manifest), "--out", str(out),
                 "--seed", str(seed), "--no-progress"]) == 0


def test_cache_matches_live_and_stale_cache_is_refused(tmp_path):
    manifest = write_corpus(tmp_path / "data", 8)
    cache = tmp_path / "cache"
    _cache(tmp_path, manifest, cache)
    meta = json.loads((cache / "meta.json").read_text())
    # stage 1 trains MERT's layer mix, so MERT runs live; Whisper and BEATs are frozen and cached
    assert sorted(meta["encoders"]) == ["beats", "whisper"]
    assert len(meta["keys"]) == 8
    # valid frames only: a 0.5 s clip has ~25 Whisper frames, not 1500
    from safetensors import safe_open
    with safe_open(str(cache / meta["shards"][0]), framework="pt") as f:
        name = next(k for k in f.keys() if k.endswith("\twhisper"))
        assert f.get_tensor(name).shape[0] < 100

    over = {"schedule.max_steps": 3, "data.batch_size": 3, "data.bucketing": False}
    train(tiny_train_config(tmp_path / "live", manifest, overrides=over))
    train(tiny_train_config(tmp_path / "cached", manifest, overrides={**over, "data.cache_dir": str(cache)}))
    live, cached = train_losses(tmp_path / "live"), train_losses(tmp_path / "cached")
    assert len(live) == len(cached) == 3
    for (s1, l1, _), (s2, l2, _) in zip(live, cached):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-5, abs=1e-6)

    # a cache made with other encoder weights (another seed) is refused with a clear message
    stale = tmp_path / "stale"
    _cache(tmp_path, manifest, stale, seed=1)
    with pytest.raises(StaleCacheError, match="stale"):
        train(tiny_train_config(tmp_path / "refused", manifest, overrides={**over, "data.cache_dir": str(stale)}))


def test_cached_features_give_the_live_forward(tmp_path):
    """One batch: model(encoder_outputs=cached + live MERT) equals model(audio) to float tolerance."""
    from usam.training.cache import build_cache, encoder_outputs_for
    from usam.training.collate import Collator, TrainItems
    from usam.training.config import TrainConfig, _model_sections
    from usam.training.trainer import build_model, seed_everything
    from usam.data import AudioDataset, read_manifest
    from usam.processing import USAMProcessor

    manifest = write_corpus(tmp_path / "data", 4)
    entries = read_manifest(manifest)
    seed_everything(0)
    model = build_model(TrainConfig(model=_model_sections("configs/model/tiny.yaml", tmp_path)))
    build_cache(model, entries, tmp_path / "cache", progress=False)
    reader = FeatureCacheReader(tmp_path / "cache", model)
    items = TrainItems(AudioDataset(entries, target_sr=model.config.input_sample_rate), seed=0, epoch=0)
    processor = USAMProcessor.from_model(model)
    live_batch = Collator(processor)([items[i] for i in range(4)]).batch
    cached_batch = Collator(processor, reader)([items[i] for i in range(4)]).batch
    model.eval()
    with torch.no_grad():
        inputs = {k: v for k, v in live_batch.items() if k != "tasks"}
        live = model(**inputs)
        cached = {k: v for k, v in cached_batch.items() if k not in ("tasks", "cached_features")}
        enc = encoder_outputs_for(model, cached, cached_batch["cached_features"])
        from_cache = model(**cached, encoder_outputs=enc)
    torch.testing.assert_close(from_cache.loss, live.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(from_cache.logits, live.logits, rtol=1e-4, atol=1e-5)


def test_samples_of_one_clip_are_encoded_once(tmp_path):
    """Two tasks on one recording: one stored tensor, read back for both keys; another clip stays apart."""
    import dataclasses

    from safetensors import safe_open

    from usam.training.cache import build_cache
    from usam.training.config import TrainConfig, _model_sections
    from usam.training.trainer import build_model, seed_everything
    from usam.data import read_manifest

    manifest = write_corpus(tmp_path / "data", 2)
    first, second = read_manifest(manifest)
    twin = dataclasses.replace(first, key=first.key + "-twin", task="aac", text=["another answer"])
    seed_everything(0)
    model = build_model(TrainConfig(model=_model_sections("configs/model/tiny.yaml", tmp_path)))
    meta = build_cache(model, [first, twin, second], tmp_path / "cache", progress=False)
    assert set(meta["keys"]) == {first.key, twin.key, second.key}
    stored = set()
    for shard in meta["shards"]:
        with safe_open(str(tmp_path / "cache" / shard), framework="pt") as f:
            stored |= {k.split("\t")[0] for k in f.keys()}
    assert stored == {first.key, second.key}
    reader = FeatureCacheReader(tmp_path / "cache", model)
    n = meta["keys"][first.key][1]
    a, b = reader.features("whisper", [first.key, twin.key], [n, n])
    assert torch.equal(a, b)
    (c,) = reader.features("whisper", [second.key], [meta["keys"][second.key][1]])
    assert not (c.shape == a.shape and torch.equal(c, a))


def test_stale_encoders_names_the_encoders_whose_weights_changed(tmp_path):
    from usam.commands.cache import load_model_for_cache
    from usam.training.cache import stale_encoders

    manifest = write_corpus(tmp_path / "data", 4)
    cache = tmp_path / "cache"
    _cache(tmp_path, manifest, cache, seed=0)
    same = load_model_for_cache("configs/model/tiny.yaml", 0, 1)
    assert stale_encoders(cache, same) == []
    other = load_model_for_cache("configs/model/tiny.yaml", 1, 1)  # other random BEATs and Whisper weights
    assert sorted(stale_encoders(cache, other)) == ["beats", "whisper"]
    meta = json.loads((cache / "meta.json").read_text())
    meta["version"] = -1
    (cache / "meta.json").write_text(json.dumps(meta))
    assert sorted(stale_encoders(cache, same)) == ["beats", "whisper"]  # an older format: all of them
