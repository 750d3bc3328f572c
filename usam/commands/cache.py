"""`usam cache`: run the frozen encoders once over a manifest and store their features for training."""
from __future__ import annotations

import argparse

HELP = "cache the frozen encoders' features of a manifest (safetensors shards) for faster training"
DESCRIPTION = """Run every frozen encoder of a model over a manifest once and store each sample's valid frames
as safetensors shards in --out, keyed by sample key and the encoder's fingerprint (a hash of its settings and
weights). Point a training config at it with data.cache_dir=OUT: cached encoders are then read from disk,
trained ones (LoRA/full, MERT's learned layer mix) still run live. A cache built for other encoder weights or
settings is refused at training time. Unreadable samples are skipped and reported."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="model YAML (configs/model/*.yaml), a training YAML with a model section, or a saved "
                        "model folder")
    parser.add_argument("--manifest", required=True, nargs="+", help="manifest(s) to encode (keys must be unique)")
    parser.add_argument("--out", required=True, help="cache folder (replaced atomically when done)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for randomly initialised encoders (must match the training config's seed)")
    parser.add_argument("--stage", type=int, default=1, choices=(1, 2),
                        help="training stage the cache is for (decides which parameters are trained)")
    parser.add_argument("--max-audio-seconds", type=float, default=60.0, help="padded audio seconds per batch")
    parser.add_argument("--max-samples", type=int, default=16, help="samples per batch at most")
    parser.add_argument("--shard-mb", type=float, default=512.0, help="size of one shard file in MiB")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers reading audio")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def load_model_for_cache(spec: str, seed: int, stage: int):
    """A model from a model YAML / training YAML (random parts drawn with `seed`, as the trainer does) or a
    saved folder."""
    from pathlib import Path

    import torch

    from usam.modeling import USAMModel
    from usam.training.config import TrainConfig, _model_sections, find_file

    path = find_file(spec)
    if path.is_dir() and (path / "config.json").exists():
        model = USAMModel.from_pretrained(path)
    else:
        from usam.training.trainer import build_model, seed_everything

        seed_everything(seed)
        cfg = TrainConfig(model=_model_sections(str(path), Path.cwd()), stage=stage)
        return build_model(cfg)
    model.set_stage(stage)
    torch.manual_seed(seed)
    return model


def main(args: argparse.Namespace) -> int:
    import sys

    import torch

    from usam.data.manifest import read_manifests
    from usam.training.cache import build_cache, cacheable_encoders

    try:
        model = load_model_for_cache(args.model, args.seed, args.stage)
    except (ValueError, FileNotFoundError) as err:
        print(f"usam cache: error: {err}", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    entries, problems = read_manifests(args.manifest, strict=False)
    for err in problems[:10]:
        print(f"usam cache: skipped: {err}", file=sys.stderr)
    names = cacheable_encoders(model)
    if not names:
        print("usam cache: error: no encoder of this model is frozen; nothing to cache", file=sys.stderr)
        return 2
    print(f"caching {', '.join(names)} for {len(entries)} samples "
          f"(live in training: {', '.join(n for n in model.encoders if n not in names) or 'none'})")
    meta = build_cache(model, entries, args.out, args.max_audio_seconds, args.max_samples, args.shard_mb,
                       progress=not args.no_progress, num_workers=args.num_workers)
    print(f"wrote {len(meta['keys'])} samples in {len(meta['shards'])} shard(s) to {args.out} "
          f"(skipped {meta['skipped']['skipped']})")
    return 0
