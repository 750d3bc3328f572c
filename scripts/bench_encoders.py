#!/usr/bin/env python
"""Whisper encoder: the padded-to-30 s path versus the true-length path, for speed and feature drift.

    python scripts/bench_encoders.py [--whisper openai/whisper-tiny.en] [--seconds 3 10] [--batch 8]

Without --whisper a random Whisper-tiny-shaped encoder is used (speed only; drift on random weights says little).
Prints seconds per clip for each path and the cosine similarity / relative L2 distance of the features.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from usam.config import WhisperSettings
from usam.encoders.whisper import WhisperAudioEncoder

TINY = dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536, num_mel_bins=80,
            max_source_positions=1500, vocab_size=51864, decoder_layers=1, decoder_attention_heads=6,
            decoder_ffn_dim=64, pad_token_id=50256, bos_token_id=50256, eos_token_id=50256, decoder_start_token_id=50257)


def build(args, true_length: bool) -> WhisperAudioEncoder:
    torch.manual_seed(0)
    settings = (WhisperSettings(name_or_path=args.whisper, true_length=true_length) if args.whisper
                else WhisperSettings(architecture=TINY, true_length=true_length))
    return WhisperAudioEncoder(settings).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--whisper", default=None, help="Whisper hub id or folder (default: random tiny-shaped)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[3.0, 10.0], help="clip durations to test")
    parser.add_argument("--batch", type=int, default=8, help="clips per batch")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats (after one warm-up)")
    args = parser.parse_args()
    padded, exact = build(args, False), build(args, True)
    exact.load_state_dict(padded.state_dict())
    rng = np.random.default_rng(0)
    print(f"threads={torch.get_num_threads()} batch={args.batch}")
    for seconds in args.seconds:
        n = int(seconds * 16000)
        audio = torch.from_numpy((0.1 * rng.standard_normal((args.batch, n))).astype(np.float32))
        lengths = torch.full((args.batch,), n)
        times, feats = {}, {}
        for name, enc in (("padded", padded), ("true_length", exact)):
            with torch.no_grad():
                enc(audio, lengths)
                start = time.perf_counter()
                for _ in range(args.repeats):
                    out = enc(audio, lengths)
            times[name] = (time.perf_counter() - start) / args.repeats / args.batch
            feats[name] = out.features[out.mask]
        a, b = feats["padded"], feats["true_length"]
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).mean().item()
        rel = ((a - b).norm() / a.norm()).item()
        print(f"{seconds:5.1f} s clips: padded {times['padded']:.3f} s/clip, true-length {times['true_length']:.3f} s/clip "
              f"(x{times['padded'] / times['true_length']:.1f}); feature cosine {cos:.4f}, relative L2 {rel:.4f}")


if __name__ == "__main__":
    main()
