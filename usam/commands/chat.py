"""`usam chat MODEL_DIR`: talk with a model in the terminal, with audio clips, tokens streamed as they come."""
from __future__ import annotations

import argparse

HELP = "chat with a model in the terminal (attach audio clips, multi-turn, streamed answers)"
DESCRIPTION = """\
Interactive terminal chat with a U-SAM model folder. Type a question and press Enter; the answer streams.
Earlier clips, questions and answers stay in the conversation. Commands:
  /audio PATH   attach an audio file (wav, flac, ogg, mp3, ...) to the next question
  /reset        forget the conversation and the attached clips
  /quit         leave (Ctrl-D too)
With --question the answer is printed once and the command exits (for scripts).
"""
PROMPT = "you> "


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a U-SAM model folder (save_pretrained output)")
    parser.add_argument("--audio", action="append", default=[], metavar="FILE",
                        help="attach this audio file to the first question (repeat for several clips)")
    parser.add_argument("--question", default=None, help="ask this, print the answer and exit")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest answer in tokens (default: 256)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="sampling temperature; 0 is greedy decoding (default: 0)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass when sampling (default: 1)")
    parser.add_argument("--system", default=None, help="a system message for the conversation")
    parser.add_argument("--max-audio-seconds", type=float, default=None, help="refuse longer clips (default: no limit)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def printable(text: str) -> str:
    """Model output without terminal control characters (an answer must not be able to move the cursor or
    change colours); newlines and tabs stay."""
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in text)


def _answer(chat, question: str, out) -> None:
    out.write("usam> ")
    out.flush()
    for piece in chat.ask(None, question, stream=True):
        out.write(printable(piece))
        out.flush()
    out.write("\n")
    out.flush()


def _attach(chat, path: str, out) -> bool:
    from usam.errors import DataError

    try:
        clip = chat.attach(path)
    except (DataError, ValueError) as err:
        out.write(f"error: {err}\n")
        return False
    out.write(f"[attached {path}: {len(clip) / chat.sampling_rate:.2f} s; "
              f"clips in the conversation: {chat.num_clips}]\n")
    return True


def main(args: argparse.Namespace) -> int:
    import sys

    import torch

    from usam.chat import USAMChat

    out = sys.stdout
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    chat = USAMChat.from_pretrained(args.model_dir, device=device, max_new_tokens=args.max_new_tokens,
                                    temperature=args.temperature, top_p=args.top_p, system=args.system,
                                    max_audio_seconds=args.max_audio_seconds)
    for path in args.audio:
        if not _attach(chat, path, sys.stderr if args.question else out):
            return 2
    if args.question is not None:
        for piece in chat.ask(None, args.question, stream=True):
            out.write(printable(piece))
            out.flush()
        out.write("\n")
        return 0
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    out.write("U-SAM chat. /audio PATH attaches a clip, /reset clears the conversation, /quit leaves.\n")
    while True:
        try:
            line = input(PROMPT).strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return 0
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            chat.reset()
            out.write("[conversation cleared]\n")
        elif line.startswith("/audio"):
            path = line[len("/audio"):].strip()
            if path:
                _attach(chat, path, out)
            else:
                out.write("usage: /audio PATH\n")
        elif line.startswith("/"):
            out.write(f"unknown command {line.split()[0]}; use /audio PATH, /reset or /quit\n")
        else:
            try:
                _answer(chat, line, out)
            except KeyboardInterrupt:  # Ctrl-C stops the answer, not the chat
                out.write("\n[interrupted]\n")
