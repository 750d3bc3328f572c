"""`usam serve MODEL_DIR`: an OpenAI-compatible HTTP server (POST /v1/chat/completions) for a U-SAM model."""
from __future__ import annotations

import argparse

HELP = "serve a model over an OpenAI-compatible HTTP API (chat completions with audio, streaming, batching)"
DESCRIPTION = """\
Serves MODEL_DIR (a folder written by save_pretrained) with FastAPI + uvicorn:
  POST /v1/chat/completions  OpenAI chat format; content parts 'text' and 'input_audio'
                             ({"data": base64, "format": "wav"|"flac"|"ogg"|"mp3"}); multi-turn; stream: true
                             sends server-sent events; max_tokens, temperature (default 0: greedy), top_p, stop, seed
  GET  /v1/models            the model name (the folder name, or --model-name)
  GET  /health               status, queue length, batching counters
Requests that arrive within --batch-window-ms of each other and share sampling settings run as one batch.
With an API key (--api-key or the USAM_API_KEY environment variable) every request must send
'Authorization: Bearer KEY'. The server never reads files or fetches URLs named in a request.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a U-SAM model folder (save_pretrained output)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--model-name", default=None, help="model name clients send (default: the folder name)")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' on every request (default: $USAM_API_KEY, else none)")
    parser.add_argument("--max-audio-seconds", type=float, default=60.0,
                        help="longest audio clip accepted; longer ones get 413 (default: 60)")
    parser.add_argument("--max-body-mb", type=float, default=25.0,
                        help="largest request body in MB; larger ones get 413 (default: 25)")
    parser.add_argument("--max-tokens", type=int, default=256, dest="default_max_tokens",
                        help="max_tokens of requests that do not set it (default: 256)")
    parser.add_argument("--max-tokens-limit", type=int, default=2048,
                        help="largest max_tokens a request may ask for (default: 2048)")
    parser.add_argument("--batch-window-ms", type=float, default=10.0,
                        help="how long the first request of a batch waits for others to join it (default: 10)")
    parser.add_argument("--max-batch", type=int, default=8,
                        help="most requests generated together; 1 turns batching off (default: 8)")
    parser.add_argument("--max-queue", type=int, default=64,
                        help="most requests waiting for the model; more get 503 (default: 64)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                        help="uvicorn log level (default: info)")


def main(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    import torch
    import uvicorn

    from usam.modeling import USAMModel
    from usam.processing import USAMProcessor
    from usam.serving.app import ServeSettings, create_app

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = USAMModel.from_pretrained(args.model_dir).to(device).eval()
    processor = USAMProcessor.from_pretrained(args.model_dir)
    settings = ServeSettings(
        model_name=args.model_name or Path(args.model_dir).resolve().name,
        api_key=args.api_key or os.environ.get("USAM_API_KEY") or None,
        max_audio_seconds=args.max_audio_seconds, max_body_mb=args.max_body_mb,
        default_max_tokens=args.default_max_tokens, max_tokens_limit=args.max_tokens_limit,
        batch_window_ms=args.batch_window_ms, max_batch=args.max_batch, max_queue=args.max_queue)
    app = create_app(model, processor, settings)
    print(f"serving {settings.model_name!r} on http://{args.host}:{args.port}/v1 "
          f"(batch <= {settings.max_batch}, window {settings.batch_window_ms:g} ms)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
