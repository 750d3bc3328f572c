"""Cached encoder features and probe labels read straight from a feature cache and its manifests."""
from __future__ import annotations

import json
from pathlib import Path

import torch

# label families of the synthetic corpus: (task, manifest field, field value)
LABEL_FAMILIES = {
    "sound": ("cls", "domain", "sound"),  # sound-event class
    "instrument": ("cls", "domain", "music"),  # the instrument of a music clip
    "tempo": ("qa", "qtype", "tempo"),  # the tempo answer of a music clip
}


class CachedFeatures:
    """Valid frames per sample key and encoder, read from a cache folder (usam.training.cache layout). Unlike
    the trainer's reader it needs no model: a probe looks at whatever features the cache holds."""

    def __init__(self, cache_dir: str | Path):
        from safetensors import safe_open

        self.dir = Path(cache_dir)
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{self.dir}: not a feature cache (no meta.json); build one with `usam cache`")
        self.meta = json.loads(meta_path.read_text())
        self.encoders = sorted(self.meta["encoders"])
        self._shards = [safe_open(str(self.dir / name), framework="pt") for name in self.meta["shards"]]

    def has(self, key: str) -> bool:
        return key in self.meta["keys"]

    def get(self, key: str, encoder: str) -> torch.Tensor:
        """(T_valid, D) float32 frames of one sample."""
        if encoder not in self.meta["encoders"]:
            raise KeyError(f"{self.dir}: no {encoder!r} features (cached: {self.encoders})")
        if key not in self.meta["keys"]:
            raise KeyError(f"{self.dir}: sample {key!r} is not in the cache")
        shard, _, stored = self.meta["keys"][key]
        return self._shards[shard].get_tensor(f"{stored}\t{encoder}").float()


def probe_labels(entries, family: str) -> list[tuple[str, str]]:
    """[(sample key, label)] of one label family (LABEL_FAMILIES) among manifest entries."""
    if family not in LABEL_FAMILIES:
        raise ValueError(f"unknown label family {family!r}; known: {sorted(LABEL_FAMILIES)}")
    task, field, value = LABEL_FAMILIES[family]
    return [(e.key, e.target.strip().lower()) for e in entries
            if e.task == task and e.extra.get(field) == value]
