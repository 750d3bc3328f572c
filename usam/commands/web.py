"""`usam web MODEL_DIR`: a local web page (gradio) to chat with a model about uploaded or recorded audio."""
from __future__ import annotations

import argparse

HELP = "a local web page (gradio) to chat with a model about uploaded or recorded audio, with expert usage"
DESCRIPTION = """\
Starts a gradio page for MODEL_DIR: upload or record a clip, ask questions over several turns (answers stream),
and see the mean routing weight of each projector expert for the last answer as a bar chart.
Bound to 127.0.0.1 (this machine only) unless --host says otherwise; never shared through gradio's tunnels.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a U-SAM model folder (save_pretrained output)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest answer in tokens (default: 256)")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 is greedy (default: 0)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass when sampling (default: 1)")
    parser.add_argument("--max-audio-seconds", type=float, default=120.0,
                        help="refuse longer clips (default: 120)")
    parser.add_argument("--title", default=None, help="page title (default: U-SAM - <folder name>)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from usam.web import build_demo, launch  # sets GRADIO_ANALYTICS_ENABLED=False before gradio loads

    from usam.modeling import USAMModel
    from usam.processing import USAMProcessor

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = USAMModel.from_pretrained(args.model_dir).to(device).eval()
    processor = USAMProcessor.from_pretrained(args.model_dir)
    demo = build_demo(model, processor, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                      top_p=args.top_p, max_audio_seconds=args.max_audio_seconds,
                      title=args.title or f"U-SAM - {Path(args.model_dir).resolve().name}")
    launch(demo, host=args.host, port=args.port)
    return 0
