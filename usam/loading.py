"""Reading weights and resolving model names to folders.

Weights are read with safetensors or with `torch.load(weights_only=True)`; never unpickled in full.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open


def resolve_path(name_or_path: str, kind: str | None = None) -> Path:
    """A local folder or file for a hub id or path (local folder, HF cache/hub, or a pip-shipped conversion)."""
    local = Path(name_or_path).expanduser()
    if local.exists():
        return local
    from usam.hub.resolve import resolve_model  # the resolver owns the lookup order and its error message

    return Path(resolve_model(name_or_path, kind=kind))


def _weight_files(folder: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.exists():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [folder / f for f in files]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return [folder / name]
    raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin (nor a sharded index) found")


def load_state_dict(folder_or_file: str | Path, prefixes: tuple[str, ...] = ("",)) -> dict[str, torch.Tensor]:
    """Tensors whose names start with one of `prefixes` (the prefix is stripped), from a checkpoint folder/file.

    With safetensors only the selected tensors are read, so e.g. a Whisper decoder never enters memory.
    """
    path = Path(folder_or_file)
    files = _weight_files(path) if path.is_dir() else [path]
    out: dict[str, torch.Tensor] = {}

    def take(name: str) -> str | None:
        for prefix in prefixes:
            if name.startswith(prefix):
                return name[len(prefix):]
        return None

    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    short = take(name)
                    if short is not None:
                        out[short] = f.get_tensor(name)
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
            for name, tensor in state.items():
                short = take(name)
                if short is not None:
                    out[short] = tensor
    return out


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict=True) with an error that names the offending keys and the file."""
    expected = set(module.state_dict().keys())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        raise KeyError(f"{source}: checkpoint does not match the {type(module).__name__} architecture: "
                       + "; ".join(parts))
    module.load_state_dict(state, strict=True)
