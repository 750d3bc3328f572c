"""A tiny random model folder that says something (for the evaluation tests and scripts/bench_eval.py).

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
