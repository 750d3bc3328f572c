#!/usr/bin/env python
"""Latency and throughput of a running `usam serve`: N concurrent chat requests, each with its own audio clip.

    python scripts/bench_serve.py http://127.0.0.1:8000 --n 64 --concurrency 16
    # batching on vs off: starts `usam serve MODEL_DIR` twice (--max-batch 1, then --max-batch 8) and compares
    python scripts/bench_serve.py --compare MODEL_DIR --n 64 --concurrency 16
    python scripts/bench_serve.py --compare tiny ...   # a random tiny model from configs/model/tiny.yaml

Prints p50 / p95 latency per request, requests per second, generated tokens per second, and the server's
batching counters (generations run for the requests). Only 127.0.0.1 servers are started.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def clip_b64(index: int, seconds: float) -> str:
    import numpy as np
    import soundfile as sf

    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * (200 + 37 * index) * t) + 0.01 * np.random.RandomState(index).randn(t.size)
    buf = io.BytesIO()
    sf.write(buf, wave.astype(np.float32), rate, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def run_benchmark(url: str, n: int, concurrency: int, max_tokens: int, audio_seconds: float,
                  api_key: str | None, model: str | None) -> dict:
    import httpx
    from tqdm import tqdm

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=600,
                        limits=httpx.Limits(max_connections=concurrency + 2))
    model = model or http.get("/v1/models").raise_for_status().json()["data"][0]["id"]
    clips = [clip_b64(i, audio_seconds) for i in range(n)]

    def payload(i):
        return {"model": model, "max_tokens": max_tokens, "temperature": 0, "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": clips[i], "format": "wav"}},
            {"type": "text", "text": f"Describe clip {i}."}]}]}

    def one(i):
        start = time.perf_counter()
        response = http.post("/v1/chat/completions", json=payload(i))
        response.raise_for_status()
        return time.perf_counter() - start, response.json()["usage"]["completion_tokens"]

    one(0)  # warm-up (first-call costs are not the steady state)
    before = http.get("/health").json()
    latencies, tokens = [], 0
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        for future in tqdm(as_completed(futures), total=n, desc="requests", unit="req", disable=None, leave=False):
            latency, generated = future.result()
            latencies.append(latency)
            tokens += generated
    wall = time.perf_counter() - start
    after = http.get("/health").json()
    return {"n": n, "concurrency": concurrency, "p50_s": statistics.median(latencies),
            "p95_s": percentile(latencies, 95), "req_per_s": n / wall, "tokens_per_s": tokens / wall,
            "wall_s": wall, "generations": after["batches"] - before["batches"]}


def build_tiny(directory: Path) -> Path:
    import torch

    from usam import USAMConfig, USAMModel

    torch.manual_seed(0)
    USAMModel(USAMConfig.from_yaml(ROOT / "configs" / "model" / "tiny.yaml")).save_pretrained(directory)
    return directory


@contextlib.contextmanager
def running_server(model_dir: Path, max_batch: int, args):
    """`usam serve MODEL_DIR --max-batch B` on a free 127.0.0.1 port; yields its URL, stops it after."""
    from usam.serving.testing import free_port, wait_http

    port = free_port()
    cmd = [sys.executable, "-m", "usam.cli", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
           "--max-batch", str(max_batch), "--batch-window-ms", str(args.batch_window_ms),
           "--max-queue", str(max(64, args.n)), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=180, proc=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def median_of(rounds: list[dict]) -> dict:
    """Per-figure median over rounds (an idle server takes no CPU, so the two servers' rounds alternate and
    share whatever else the machine is doing)."""
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def show(label: str, r: dict) -> None:
    print(f"{label:<22} p50 {r['p50_s'] * 1000:8.1f} ms   p95 {r['p95_s'] * 1000:8.1f} ms   "
          f"{r['req_per_s']:7.2f} req/s   {r['tokens_per_s']:8.1f} tok/s   "
          f"{int(r['n'])} requests in {r['generations']:g} generations ({r['wall_s']:.1f} s)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", help="base URL of a running usam serve, e.g. http://127.0.0.1:8000")
    parser.add_argument("--compare", metavar="MODEL_DIR", default=None,
                        help="start usam serve for MODEL_DIR with --max-batch 1 and then --max-batch B, and compare "
                             "('tiny': a random model from configs/model/tiny.yaml)")
    parser.add_argument("--max-batch", type=int, default=8, help="--compare: the batched server's cap (default: 8)")
    parser.add_argument("--batch-window-ms", type=float, default=10.0,
                        help="--compare: the servers' collection window (default: 10)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="--compare: rounds per server, alternating between them (default: 3)")
    parser.add_argument("--n", type=int, default=64, help="requests to send (default: 64)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (default: 16)")
    parser.add_argument("--max-tokens", type=int, default=32, help="max_tokens of each request (default: 32)")
    parser.add_argument("--audio-seconds", type=float, default=2.0, help="length of each request's clip (default: 2)")
    parser.add_argument("--api-key", default=os.environ.get("USAM_API_KEY"), help="API key (default: $USAM_API_KEY)")
    parser.add_argument("--model", default=None, help="model name (default: the one /v1/models lists)")
    args = parser.parse_args()
    if (args.url is None) == (args.compare is None):
        parser.error("give either URL or --compare MODEL_DIR")
    if args.url:
        show(args.url, run_benchmark(args.url, args.n, args.concurrency, args.max_tokens, args.audio_seconds,
                                     args.api_key, args.model))
        return 0
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
        model_dir = build_tiny(Path(tmp) / "usam-tiny") if args.compare == "tiny" else Path(args.compare)
        print(f"model {model_dir.name}: {args.n} requests, concurrency {args.concurrency}, max_tokens "
              f"{args.max_tokens}, {args.audio_seconds:g} s clips, greedy, {args.rounds} alternating rounds "
              "(medians shown)", flush=True)
        configs = {"batching off (B=1)": 1, f"batching on (B={args.max_batch})": args.max_batch}
        urls = {label: servers.enter_context(running_server(model_dir, b, args)) for label, b in configs.items()}
        rounds = {label: [] for label in configs}
        for _ in range(args.rounds):
            for label, url in urls.items():
                rounds[label].append(run_benchmark(url, args.n, args.concurrency, args.max_tokens,
                                                   args.audio_seconds, None, None))
        for label in configs:
            show(label, median_of(rounds[label]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
