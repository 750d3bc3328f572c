"""Tiny fixtures for the evaluation tests and scripts/bench_eval.py: a random model folder that says something
(`build_talking_tiny_model`) and a synthetic-style test split of a few noise clips (`write_tiny_split`).

The all-random tiny config (configs/model/tiny.yaml) echoes its last prompt token (a newline) forever,
which decodes to "" for every input: a batched-vs-single comparison would then prove nothing. Here the LLM's
weights are redrawn (fixed seed) so that its greedy output depends on the audio and the prompt: the (tied)
embedding rows of the lower-case letters, the space and the end-of-turn token are large and all other rows
tiny, so it writes letter strings of varied lengths and sometimes stops by itself.
"""
from __future__ import annotations

from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "model" / "tiny.yaml"


def build_talking_tiny_model(out_dir: str | Path, *, seed: int = 0, config: str | Path | None = None,
                             talk: bool = True, **overrides) -> Path:
    """Build the tiny model (seeded), optionally make it talk, save_pretrained into out_dir.

    overrides: dotted config fields, e.g. {"projector.num_experts": 1} or {"beats.enabled": False}.
    """
    import torch

    from usam import USAMConfig, USAMModel

    cfg = USAMConfig.from_yaml(config or DEFAULT_CONFIG)
    for dotted, value in overrides.items():
        section, key = dotted.split(".", 1)
        setattr(getattr(cfg, section), key, value)
    torch.manual_seed(seed)
    model = USAMModel(cfg)
    if talk:
        tok = model.tokenizer
        allowed = {tok.convert_tokens_to_ids(c) for c in "abcdefghijklmnopqrstuvwxyz"}
        allowed.add(tok.convert_tokens_to_ids("\u0120"))  # the byte-level space
        allowed.add(tok.convert_tokens_to_ids("<|im_end|>"))
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in model.llm.named_parameters():
                if p.dim() < 2 or "lora_A" in name:
                    continue
                if "embed_tokens" in name:
                    rows = torch.randn(p.shape, generator=g) * 0.02
                    idx = torch.tensor(sorted(allowed))
                    rows[idx] = torch.randn(len(idx), p.shape[1], generator=g)
                    p.copy_(rows)
                else:  # the layers (and LoRA B, zero at init) drawn wide enough to mix the audio in
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            for p in model.projector.parameters():  # louder audio tokens, so the answer depends on the clip
                if p.dim() >= 2:
                    p.mul_(4.0)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    return out_dir


# (task, references, qa question type): every task kind of the synthetic test split, a few items each
TINY_SPLIT_ITEMS = [
    ("asr", "the cat sat on the mat", None), ("asr", "hello world", None), ("asr", "one two three", None),
    ("cls", "dog", None), ("cls", "rain", None), ("cls", "dog", None),
    ("qa", "3", "count"), ("qa", "yes", "drums"),
    ("aac", ["a dog barks", "a dog is barking loudly"], None), ("aac", ["rain falls on a roof"], None),
    ("s2tt", "猫坐在垫子上", None),
]
TINY_QUESTIONS = {"count": "How many times does the sound occur? Answer with a number.",
                  "drums": "Are there drums in this music? Answer yes or no."}


def write_tiny_split(root: str | Path, items=TINY_SPLIT_ITEMS, name: str = "test.jsonl", seed: int = 0) -> Path:
    """ROOT/synth/<name> in the layout of `usam synth` (so `--data-root ROOT` finds it as synthetic-test):
    one 16 kHz noise wav per line, item i lasting 0.4 + 0.23 i seconds, durations in the manifest."""
    import json

    import numpy as np
    import soundfile as sf

    folder = Path(root) / "synth"
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i, (task, text, qtype) in enumerate(items):
        seconds = round(0.4 + 0.23 * i, 4)
        wave = (rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)
        sf.write(folder / "audio" / f"c{i}.wav", wave, 16000, subtype="FLOAT")
        line = {"key": f"utt{i}-{task}", "audio": f"audio/c{i}.wav", "task": task, "text": text, "duration": seconds}
        if task == "s2tt":
            line["lang"] = "zh"  # the target language
        if qtype:
            line.update(qtype=qtype, instruction=TINY_QUESTIONS[qtype])
        lines.append(line)
    path = folder / name
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return path
