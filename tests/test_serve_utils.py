"""Shared helpers for the chat / serve / web tests (no tests here): a tiny, fixed-seed U-SAM saved to disk,
clips encoded as files, free ports, and waiting for a server."""
from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

TINY_YAML = Path(__file__).resolve().parents[1] / "configs" / "model" / "tiny.yaml"


def build_tiny_model(directory) -> str:
    """configs/model/tiny.yaml with fixed-seed weights, saved with save_pretrained.

    An all-random tiny LLM answers every prompt with the same byte; the weights are redrawn larger (fixed seed)
    so that answers depend on the audio and the question, and the output embeddings of non-printable bytes are
    shrunk so that answers are mostly printable ASCII (they are printed on a terminal in the CLI test)."""
    from usam import USAMConfig, USAMModel

    torch.manual_seed(0)
    model = USAMModel(USAMConfig.from_yaml(TINY_YAML))
    gen = torch.Generator().manual_seed(0)
    tokenizer = model.tokenizer
    with torch.no_grad():
        for name, param in model.llm.named_parameters():
            if param.dim() >= 2:
                param.normal_(0, 0.5 if "embed" in name else 0.2, generator=gen)
        for param in model.projector.parameters():
            param.normal_(0, 0.3, generator=gen)
        embed = model.llm.get_input_embeddings().weight  # tied with the output layer: (V, D)
        printable = {tokenizer.convert_tokens_to_ids(tokenizer.convert_ids_to_tokens(tokenizer.encode(chr(c)))[0])
                     for c in range(32, 127)}
        printable.add(tokenizer.eos_token_id)
        for token in range(embed.shape[0]):
            if token not in printable:
                embed[token] *= 0.05
        embed[tokenizer.eos_token_id] *= 0.6  # some answers end early, most run to max_tokens
    model.save_pretrained(directory)
    return str(directory)


_built: dict[str, str] = {}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    # test modules import this fixture, and pytest then keeps one instance per module: build the folder once
    if "dir" not in _built:
        _built["dir"] = build_tiny_model(tmp_path_factory.mktemp("models") / "usam-tiny")
    return _built["dir"]


def tone(seconds: float = 1.0, freq: float = 440.0, rate: int = 16000, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.RandomState(seed).randn(t.size) * 0.01
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def encode(wave: np.ndarray, fmt: str = "WAV", rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, headers=None, proc=None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")
