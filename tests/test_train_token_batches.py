"""Micro-batches capped in LLM tokens (data.max_tokens): the processor's estimate bounds each real sample."""
import json

from conftest import make_tiny_model


def test_token_capped_micro_batches_stay_under_the_cap_with_real_samples(tmp_path):
    from usam.data.manifest import read_manifest
    from usam.training.collate import Collator
    from usam.training.data import TrainData
    from usam.training.testing import tiny_train_config, write_corpus

    model, processor = make_tiny_model()
    manifest = write_corpus(tmp_path / "data", 24, seed=3)
    # long captions on some clips: answers of very different lengths
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    for i, line in enumerate(lines):
        if line["task"] == "aac":
            line["text"] = ["a dog barks " * (2 + i % 5), "short"]
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    entries = read_manifest(manifest)
    estimates = processor.estimate_lengths(entries)
    collate = Collator(processor)
    data = TrainData(tiny_train_config(tmp_path / "run", manifest), collate, 0, 1, processor=processor)
    dataset = data.dataset(0, entries)
    for i, estimate in enumerate(estimates):  # every sample's real length, at its longest reference, is within it
        sample = dataset[i]
        sample.target_index = max(range(len(sample.references)), key=lambda k: len(sample.references[k]))
        real = int(collate([sample]).batch["attention_mask"].sum())
        assert real <= estimate, (entries[i].key, real, estimate)

    cap = 3 * max(estimates)
    cfg = tiny_train_config(tmp_path / "run", manifest, overrides={"data.max_tokens": cap, "data.max_samples": 64,
                                                                    "data.max_audio_seconds": 1000.0})
    assert cfg.data.max_tokens == cap
    data = TrainData(cfg, collate, 0, 1, processor=processor)
    loader, sampler = data.loader(0)
    seen = 0
    for collated in loader:
        batch = collated.batch
        assert batch["input_ids"].numel() <= cap  # samples x longest padded sequence
        seen += len(collated.samples)
    assert seen == len(data.mixed.epoch_entries(0))
