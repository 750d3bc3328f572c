"""Encoder feature cache: run the frozen encoders once over a manifest, read the features back in training.

Layout of a cache folder:
  meta.json                 {"version", "encoders": {name: {"fingerprint", "settings", "output_dim"}},
                             "keys": {sample key: [shard, num_samples, stored key]}, "shards": [...]}
  shard_00000.safetensors   tensors named "<stored key>\\t<encoder>": VALID frames only, (T_valid, D)

Samples that share a clip (one audio file and segment: an ASR and an S2TT line of one recording, several
questions about one piece) are encoded and stored once, under the first such sample's key.

A cached encoder is keyed by `model.encoder_fingerprint(name)` (a hash of its settings and weights). When the
training model's encoder has another fingerprint, the cache is refused (`StaleCacheError`), never silently
used. Only frozen encoders are cached: an encoder with any trained parameter (full or LoRA training, or
MERT's learned layer mix, whose output changes as its weights train) runs live, and the trainer combines
the live outputs with the cached ones (`encoder_outputs` for the model holds both).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

CACHE_VERSION = 2
META = "meta.json"


class StaleCacheError(RuntimeError):
    pass


def cacheable_encoders(model) -> list[str]:
    """Encoders with no trainable parameter (the only ones whose outputs never change in training)."""
    return [name for name, enc in model.encoders.items() if not any(p.requires_grad for p in enc.parameters())]


def live_encoders(model, cached: list[str]) -> list[str]:
    return [name for name in model.encoders if name not in cached]


def _tensor_name(key: str, encoder: str) -> str:
    return f"{key}\t{encoder}"


def _clip_id(entry) -> tuple:
    audio = entry.audio if isinstance(entry.audio, str) else hash(entry.audio)
    return (audio, float(entry.offset or 0.0), entry.end)


def build_cache(model, entries, out_dir: str | Path, max_audio_seconds: float = 60.0, max_samples: int = 16,
                shard_mb: float = 512.0, progress: bool = True, num_workers: int = 0) -> dict:
    """Encode `entries` (ManifestEntry list) with every frozen encoder of `model`; write the cache atomically
    (into `<out_dir>.tmp`, then renamed). Unreadable samples are skipped and reported. Returns meta."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    from usam.data.dataset import AudioDataset, SkipStats, split_skipped
    from usam.data.manifest import fill_durations
    from usam.data.sampler import DurationBucketSampler

    names = cacheable_encoders(model)
    if not names:
        raise ValueError("no encoder of this model is frozen: nothing can be cached")
    fill_durations(entries)
    entries = [e for e in entries if e.duration]
    # one encoding per clip: the other samples of a clip point at it
    first_of_clip: dict[tuple, str] = {}
    sharing: dict[str, list[str]] = {}
    unique = []
    for e in entries:
        clip = _clip_id(e)
        if clip in first_of_clip:
            sharing[first_of_clip[clip]].append(e.key)
        else:
            first_of_clip[clip] = e.key
            sharing[e.key] = [e.key]
            unique.append(e)
    entries = unique
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dataset = AudioDataset(entries, strict=False, target_sr=model.config.input_sample_rate)
    sampler = DurationBucketSampler([e.duration for e in entries], max_audio_seconds, max_samples, shuffle=False,
                                    num_replicas=1, rank=0)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=list, num_workers=num_workers)
    stats = SkipStats()
    model.eval()
    device = model.device
    keys: dict[str, list] = {}
    shards: list[str] = []
    pending: dict[str, torch.Tensor] = {}
    pending_bytes = 0

    def flush():
        nonlocal pending, pending_bytes
        if pending:
            name = f"shard_{len(shards):05d}.safetensors"
            save_file(pending, str(tmp / name))
            shards.append(name)
            pending, pending_bytes = {}, 0

    bar = tqdm(loader, desc="caching encoder features", unit="batch", disable=not progress)
    for items in bar:
        stats.update(items)
        samples, _ = split_skipped(items)
        if not samples:
            continue
        lengths = torch.tensor([len(s.audio) for s in samples])
        audio = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(s.audio) for s in samples], batch_first=True)
        with torch.no_grad():
            for name in names:
                out = model.encoders[name](audio.to(device), lengths.to(device))
                for c, s in enumerate(samples):
                    t = out.features[c][out.mask[c]].detach().to("cpu").contiguous()  # (T_valid, D)
                    pending[_tensor_name(s.key, name)] = t
                    pending_bytes += t.numel() * t.element_size()
        for s in samples:
            for key in sharing[s.key]:
                keys[key] = [len(shards), int(len(s.audio)), s.key]  # shard index assigned at the next flush
        if pending_bytes >= shard_mb * 2**20:
            flush()
    flush()
    meta = {
        "version": CACHE_VERSION,
        "encoders": {name: {"fingerprint": model.encoder_fingerprint(name),
                            "settings": model.config.sections_dict()[name],
                            "output_dim": model.encoders[name].output_dim} for name in names},
        "shards": shards, "keys": keys, "skipped": stats.as_dict(),
    }
    (tmp / META).write_text(json.dumps(meta))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    if stats.skipped:
        stats.log()
    return meta


def _mismatches(meta: dict, model) -> list[tuple[str, str, str]]:
    """(name, cached fingerprint, model's fingerprint) of each frozen encoder the cache holds with other weights."""
    out = []
    for name in cacheable_encoders(model):
        if name in meta["encoders"]:
            now = model.encoder_fingerprint(name)
            if meta["encoders"][name]["fingerprint"] != now:
                out.append((name, meta["encoders"][name]["fingerprint"], now))
    return out


def stale_encoders(cache_dir: str | Path, model) -> list[str]:
    """The encoders that `model` would read from the cache at `cache_dir` but whose fingerprint differs (or
    every frozen encoder, when the cache's format is another version). [] means the cache can be reused."""
    meta = json.loads((Path(cache_dir) / META).read_text())
    if meta.get("version") != CACHE_VERSION:
        return cacheable_encoders(model)
    return [name for name, _, _ in _mismatches(meta, model)]


class FeatureCacheReader:
    """Reads a cache for one model; `encoders` are those served from the cache (the others run live)."""

    def __init__(self, cache_dir: str | Path, model):
        self.dir = Path(cache_dir)
        meta_path = self.dir / META
        if not meta_path.exists():
            raise FileNotFoundError(f"{self.dir}: not a feature cache (no {META}); build one with `usam cache`")
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != CACHE_VERSION:
            raise StaleCacheError(f"{self.dir}: cache format {meta.get('version')} != {CACHE_VERSION}; rebuild it")
        self.meta = meta
        stale = _mismatches(meta, model)
        if stale:
            name, saved, now = stale[0]
            raise StaleCacheError(
                f"{self.dir}: the cached {name} features are stale: cache fingerprint {saved}, "
                f"this model's {name} encoder has {now} (its settings or weights changed). Rebuild the cache "
                f"with `usam cache` for this model, or remove data.cache_dir.")
        # the others are not cached, or trained in this run: they run live
        self.encoders = [name for name in cacheable_encoders(model) if name in meta["encoders"]]
        self._handles: dict[int, object] = {}

    def __getstate__(self):  # DataLoader workers reopen the shards themselves
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def _shard(self, index: int):
        from safetensors import safe_open

        if index not in self._handles:
            self._handles[index] = safe_open(str(self.dir / self.meta["shards"][index]), framework="pt")
        return self._handles[index]

    def has(self, key: str) -> bool:
        return key in self.meta["keys"]

    def features(self, encoder: str, keys: list[str], num_samples: list[int]) -> list[torch.Tensor]:
        rows = []
        for key, n in zip(keys, num_samples):
            if key not in self.meta["keys"]:
                raise StaleCacheError(f"{self.dir}: sample {key!r} is not in the cache; rebuild it for this manifest")
            shard, cached_n, stored = self.meta["keys"][key]
            if cached_n != n:
                raise StaleCacheError(f"{self.dir}: sample {key!r} has {n} audio samples but was cached with "
                                      f"{cached_n}; the audio changed, rebuild the cache")
            rows.append(self._shard(shard).get_tensor(_tensor_name(stored, encoder)))
        return rows


def encoder_outputs_for(model, batch: dict, cached: dict | None) -> dict | None:
    """The model's `encoder_outputs`: cached encoders from `cached`, the others run live on batch["audio"]
    (with gradients when they train). None when nothing is cached (the model runs all encoders itself)."""
    import contextlib

    from usam.encoders import EncoderOutput

    if not cached:
        return None
    device = batch["audio_lengths"].device
    out = {}
    for name, encoder in model.encoders.items():
        if name in cached:
            features, mask = cached[name]
            out[name] = EncoderOutput(features.to(device), mask.to(device))
        else:
            trainable = any(p.requires_grad for p in encoder.parameters())
            with contextlib.nullcontext() if trainable else torch.no_grad():
                out[name] = encoder(batch["audio"], batch["audio_lengths"])
    return out
