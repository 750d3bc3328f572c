"""Whisper's own decoder on an ASR manifest: the reference figure a U-SAM model's ASR is compared against.

U-SAM uses only Whisper's encoder; this runs the whole checkpoint (encoder + decoder, greedy, no timestamps)
through transformers' `WhisperForConditionalGeneration` on the same clips, and scores it with the same
normaliser and WER as `usam eval`. Writes `predictions.jsonl` and `metrics.json` into `out_dir`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def transcribe(model_id: str, audios: list, batch_size: int = 8, max_new_tokens: int = 96,
               progress: bool = True) -> list[str]:
    """Greedy transcripts of 16 kHz mono float clips (each up to 30 s) by a Whisper checkpoint (id or folder)."""
    from tqdm import tqdm
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from usam.hub.resolve import resolve_model

    folder = resolve_model(model_id, kind="whisper")
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    processor = WhisperProcessor.from_pretrained(folder)
    texts: list[str] = []
    for start in tqdm(range(0, len(audios), batch_size), desc=f"whisper reference ({model_id})", unit="batch",
                      disable=not progress):
        chunk = [a for a in audios[start: start + batch_size]]
        too_long = [start + i for i, a in enumerate(chunk) if len(a) > 30 * 16000]
        if too_long:
            raise ValueError(f"clips {too_long} are longer than Whisper's 30 s window")
        features = processor(chunk, sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            ids = model.generate(features, max_new_tokens=max_new_tokens)
        texts += [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    return texts


def whisper_reference(model_id: str, manifest: str | Path, out_dir: str | Path, batch_size: int = 8,
                      progress: bool = True) -> dict:
    """Transcribe every ASR line of `manifest` with Whisper; returns (and writes) {"wer", "cer", "n", ...}."""
    from usam.data import AudioDataset, read_manifest
    from usam.metrics.asr import asr_metrics

    entries = [e for e in read_manifest(manifest, strict=True) if e.task == "asr"]
    if not entries:
        raise ValueError(f"{manifest}: no asr lines to transcribe")
    dataset = AudioDataset(entries, strict=True)
    audios = [dataset[i].audio for i in range(len(entries))]
    hyps = transcribe(model_id, audios, batch_size=batch_size, progress=progress)
    metrics = asr_metrics(hyps, [e.text[0] for e in entries])
    per_item = metrics.pop("per_item", [])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "predictions.jsonl", "w") as f:
        for e, h, item in zip(entries, hyps, per_item):
            f.write(json.dumps({"key": e.key, "prediction": h, "reference": e.text[0], "wer": item.get("wer")},
                               ensure_ascii=False) + "\n")
    result = {"model": model_id, "manifest": str(manifest), "asr": metrics}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    logger.info("whisper reference %s on %s: WER %.2f%% over %d clips", model_id, manifest, metrics["wer"],
                metrics["n"])
    return result
