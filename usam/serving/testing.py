"""Small, deterministic things for testing and benchmarking the chat / serving / web stack without downloads:
a tiny U-SAM saved to disk whose answers depend on the audio and the question, test tones, encoded clips,
a free local port, and waiting for a local server."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

TINY_YAML = Path(__file__).resolve().parents[2] / "configs" / "model" / "tiny.yaml"


def build_tiny_model(directory: str | Path, reuse: bool = False) -> str:
    """configs/model/tiny.yaml with fixed-seed weights, written with save_pretrained (atomically: a temporary
    folder beside it, then os.replace). reuse=True returns an existing complete folder as it is.

    An all-random tiny LLM answers every prompt with the same byte; here the weights are redrawn larger (fixed
    seed) so that answers depend on the audio and the question, and the output embeddings of non-printable
    bytes are shrunk so that answers are mostly printable ASCII (the CLI prints them on a terminal)."""
    import torch

    from usam import USAMConfig, USAMModel

    directory = Path(directory)
    if reuse and (directory / "config.json").exists() and (directory / "usam_weights.safetensors").exists():
        return str(directory)
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
        keep = {tokenizer.convert_tokens_to_ids(tokenizer.convert_ids_to_tokens(tokenizer.encode(chr(c)))[0])
                for c in range(32, 127)}
        keep.add(tokenizer.eos_token_id)
        for token in range(embed.shape[0]):
            if token not in keep:
                embed[token] *= 0.05
        embed[tokenizer.eos_token_id] *= 0.6  # some answers end early, most run to max_tokens
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.save_pretrained(staging)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(directory)


TINY_RATE = 24000  # the tiny model's input rate (its MERT is enabled): arrays and files made here use it


def tone(seconds: float = 1.0, freq: float = 440.0, rate: int = TINY_RATE, seed: int = 0) -> np.ndarray:
    """A sine with a little fixed-seed noise, float32 mono."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.RandomState(seed).randn(t.size) * 0.01
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def encode(wave: np.ndarray, fmt: str = "WAV", rate: int = TINY_RATE) -> bytes:
    """The bytes of an audio file (soundfile format name: WAV, FLAC, OGG, MP3)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, headers=None, proc=None) -> None:
    """Poll `url` until it answers (any status below 500); fail early if the server process `proc` exits."""
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


@contextlib.contextmanager
def serve_in_thread(app, timeout: float = 60.0):
    """Run an ASGI app with uvicorn in a thread of this process on a free loopback port; yields its base URL
    (http://127.0.0.1:PORT) once /health answers, and stops the server on exit."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=timeout)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
