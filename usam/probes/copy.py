"""How much of what the audio tokens spell reaches the LLM's answer, for each way the LLM can read them.

For a trained model folder and an ASR manifest: the greedy CTC spelling of each clip's tokens (no LLM), the
generated transcript for each audio-token reading (`audio_tokens` settings swapped in without retraining), scored
against the reference (WER) and against the spelling (copy WER), and an oracle: one-hot posteriors of the true
transcript through the same interface, the ceiling of what the LLM can read back.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch


def _batches(items, size):
    for start in range(0, len(items), size):
        yield items[start: start + size]


def spell(model, processor, waves: list, batch_size: int = 8) -> list[str]:
    """What each clip's audio tokens spell by greedy CTC (`USAMModel.ctc_transcribe`, no LLM), as text."""
    from usam.tasks import instruction_for

    instruction = instruction_for("asr", train=False)
    out = []
    with torch.no_grad():
        for chunk in _batches(waves, batch_size):
            batch = processor(list(chunk), [instruction] * len(chunk))
            out += [processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
                    for ids in model.ctc_transcribe(**batch)]
    return out


def score_token_modes(model_dir: str | Path, manifest: str | Path, readings: dict[str, dict], limit: int = 80,
                      batch_size: int = 8, max_new_tokens: int = 48, oracle: bool = True) -> dict[str, dict]:
    """readings: {name: audio_tokens settings (mode, top_k, ...)} -> {name: {"wer", "copy_wer", "n"}}, plus
    "ctc" (the spelling's own WER) and "oracle" (one-hot posteriors of the reference)."""
    from usam.data import AudioDataset, read_manifest
    from usam.metrics import compute_metrics, copy_fidelity
    from usam.modeling import USAMModel
    from usam.processing import USAMProcessor
    from usam.reading import oracle_audio
    from usam.tasks import instruction_for

    entries = [e for e in read_manifest(manifest, strict=True) if e.task == "asr"][:limit]
    if not entries:
        raise ValueError(f"{manifest}: no asr entries")
    model = USAMModel.from_pretrained(model_dir).eval()
    if model.ctc is None:
        raise ValueError(f"{model_dir}: the model has no CTC head (loss.lambda_ctc 0 and continuous audio tokens)")
    dataset = AudioDataset(entries, strict=True, target_sr=model.config.input_sample_rate)
    samples = [dataset[i] for i in range(len(dataset))]
    refs = [s.target for s in samples]
    instruction = instruction_for("asr", train=False)
    own = dataclasses.replace(model.config.audio_tokens)
    processor = USAMProcessor.from_model(model)
    spelt = spell(model, processor, [s.audio for s in samples], batch_size)
    results = {"ctc": {"wer": compute_metrics("asr", spelt, refs)["wer"], "n": len(refs)}}
    for name, settings in readings.items():
        model.config.audio_tokens = dataclasses.replace(own, **settings)
        processor = USAMProcessor.from_model(model)
        hyps = []
        with torch.no_grad():
            for chunk in _batches(samples, batch_size):
                batch = processor([s.audio for s in chunk], [instruction] * len(chunk))
                hyps += processor.batch_decode(model.generate(**batch, max_new_tokens=max_new_tokens))
        results[name] = {"wer": compute_metrics("asr", hyps, refs)["wer"], "n": len(refs),
                         "copy_wer": copy_fidelity("asr", hyps, spelt),
                         "examples": list(zip(refs, spelt, hyps))[:3]}
    model.config.audio_tokens = own
    if oracle:
        processor = USAMProcessor.from_model(model)
        hyps = []
        with torch.no_grad():
            for chunk in _batches(refs, batch_size):
                chats = [[{"role": "user", "content": [{"type": "audio", "audio": oracle_audio(processor.tokenizer, r)},
                                                       {"type": "text", "text": instruction}]}] for r in chunk]
                batch = processor.apply_chat(chats, add_generation_prompt=True, padding_side="left")
                hyps += processor.batch_decode(model.generate(**batch, max_new_tokens=max_new_tokens))
        results["oracle"] = {"wer": compute_metrics("asr", hyps, refs)["wer"], "n": len(refs)}
    return results
