"""Data: manifests (three formats), robust audio loading, the dataset and the duration-bucketing sampler.

Heavy imports (torch, soundfile, datasets) happen in the submodules, so `import usam.data` stays light;
the names below are loaded on first use.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "SAMPLE_RATE": "usam.data.audio", "load_audio": "usam.data.audio", "audio_info": "usam.data.audio",
    "ManifestEntry": "usam.data.manifest", "read_manifest": "usam.data.manifest",
    "read_manifests": "usam.data.manifest", "fill_durations": "usam.data.manifest",
    "mix_entries": "usam.data.manifest", "MixedManifest": "usam.data.manifest",
    "detect_format": "usam.data.manifest",
    "Sample": "usam.data.dataset", "SkippedSample": "usam.data.dataset", "AudioDataset": "usam.data.dataset",
    "SkipStats": "usam.data.dataset", "split_skipped": "usam.data.dataset",
    "DurationBucketSampler": "usam.data.sampler", "FixedSizeBatchSampler": "usam.data.sampler",
    "padding_fraction": "usam.data.sampler",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'usam.data' has no attribute {name!r}")
