"""save_pretrained / from_pretrained / merged export, and every config in configs/ loads."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import make_tiny_model, tone

ROOT = Path(__file__).resolve().parents[1]


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _trained_a_little(model, processor):
    batch = processor([tone(1.0, 300), tone(1.4, 900, seed=1)], ["Transcribe the speech.", "Describe the sound."],
                      ["hello", "a beep"])
    opt = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    return processor([tone(1.0, 300)], ["Transcribe the speech."], ["hello"])


def test_save_and_load_give_identical_logits(tmp_path):
    from usam import USAMModel, USAMProcessor

    model, processor = make_tiny_model(seed=3)
    batch = _trained_a_little(model, processor)
    expected = _logits(model, batch)
    model.save_pretrained(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "usam.yaml", "usam_weights.safetensors", "llm_adapter", "llm"} <= files
    loaded = USAMModel.from_pretrained(tmp_path / "m")
    reloaded_processor = USAMProcessor.from_pretrained(tmp_path / "m")
    batch2 = reloaded_processor([tone(1.0, 300)], ["Transcribe the speech."], ["hello"])
    assert torch.equal(batch2["input_ids"], batch["input_ids"])
    torch.testing.assert_close(_logits(loaded, batch2), expected, atol=0, rtol=0)


def test_pretrained_frozen_encoders_are_referenced_not_copied(tmp_path):
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    from usam import USAMConfig, USAMModel
    from safetensors import safe_open

    torch.manual_seed(0)
    WhisperForConditionalGeneration(WhisperConfig(
        d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1)).save_pretrained(tmp_path / "whisper")
    config = USAMConfig.from_yaml(ROOT / "configs/model/tiny.yaml", overrides={
        "whisper.name_or_path": str(tmp_path / "whisper"), "whisper.architecture": None})
    model = USAMModel(config)
    model.save_pretrained(tmp_path / "m")
    with safe_open(str(tmp_path / "m/usam_weights.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not any(k.startswith("encoders.whisper.") for k in keys)
    assert any(k.startswith("encoders.beats.") for k in keys)  # random-init encoders travel with the checkpoint
    loaded = USAMModel.from_pretrained(tmp_path / "m")
    batch = __import__("usam").USAMProcessor.from_model(model)([tone(1.0)], ["Describe."], ["a"])
    torch.testing.assert_close(_logits(loaded, batch), _logits(model, batch), atol=0, rtol=0)


def test_merged_export_gives_identical_logits(tmp_path):
    from usam import USAMModel

    model, processor = make_tiny_model(seed=4)
    batch = _trained_a_little(model, processor)
    expected = _logits(model, batch)
    model.export_merged(tmp_path / "merged")
    assert not (tmp_path / "merged/llm_adapter").exists()
    merged = USAMModel.from_pretrained(tmp_path / "merged")
    assert merged.config.llm.train == "frozen" and all(
        getattr(merged.config, n).name_or_path is None for n in ("whisper", "beats", "mert"))
    torch.testing.assert_close(_logits(merged, batch), expected, atol=1e-5, rtol=1e-5)


def test_missing_or_foreign_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file
    from usam import USAMModel

    model, _ = make_tiny_model()
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m/usam_weights.safetensors"
    state = load_file(str(path))
    state.pop("projector.router.weight")
    save_file(state, str(path))
    with pytest.raises(KeyError, match="projector.router.weight"):
        USAMModel.from_pretrained(tmp_path / "m")
    state["projector.router.weight"] = torch.zeros(1)
    state["projector.extra"] = torch.zeros(1)
    save_file(state, str(path))
    with pytest.raises(KeyError, match="projector.extra"):
        USAMModel.from_pretrained(tmp_path / "m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        USAMModel.from_pretrained(tmp_path / "empty")
    with pytest.raises(Exception, match="not found"):  # neither a folder nor a hub id
        USAMModel.from_pretrained(tmp_path / "nothing")


def test_config_yaml_round_trip_and_errors(tmp_path):
    from usam import USAMConfig

    config = USAMConfig.from_yaml(ROOT / "configs/model/tiny.yaml")
    config.to_yaml(tmp_path / "c.yaml")
    again = USAMConfig.from_yaml(tmp_path / "c.yaml")
    assert again.sections_dict() == config.sections_dict()
    (tmp_path / "bad.yaml").write_text("qformer: {windw_s: 0.5}\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*qformer.*windw_s"):
        USAMConfig.from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "none.yaml").write_text(yaml.safe_dump({**config.sections_dict(), "whisper": {"enabled": False},
                                                        "beats": {"enabled": False}, "mert": {"enabled": False}}))
    with pytest.raises(ValueError, match="at least one encoder"):
        USAMConfig.from_yaml(tmp_path / "none.yaml")


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs/model").glob("*.yaml")))
def test_every_model_config_loads(path):
    from usam import USAMConfig

    config = USAMConfig.from_yaml(ROOT / path)
    assert config.enabled_encoders
    assert config.num_audio_tokens(16000) >= 1


def test_usam_8b_builds_on_the_meta_device():
    import importlib.util

    spec = importlib.util.spec_from_file_location("count_params", ROOT / "scripts/count_params.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    counts = module.count(str(ROOT / "configs/model/usam-8b.yaml"))
    assert 8.0e9 < counts["total"] < 8.6e9  # Llama-3.1-8B (8.03 B) + three encoders + connector
    assert 8.0e9 < counts["llm"] < 8.1e9
    assert counts["trainable"] < 0.02 * counts["total"]


# Llama 3.1's turns with the date header its official template writes into every chat (a stand-in written here:
# the real template needs the gated tokenizer)
DATED_TEMPLATE = (
    "{{- bos_token }}<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
    "Today Date: 26 Jul 2024\n\n{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}"
    "<|eot_id|>{% for m in messages %}{% if m['role'] != 'system' %}<|start_header_id|>{{ m['role'] }}"
    "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


def test_chat_template_without_the_date_header_shortens_every_sample_and_travels_with_the_model(tmp_path):
    from conftest import make_tiny_model, tone
    from usam import USAMModel, USAMProcessor

    def encoded(template):
        model, processor = make_tiny_model(**{"llm.chat_template": template, "llm.system_prompt": "Answer."})
        batch = processor([tone(1.0)], ["Transcribe the speech."], ["hello there"], tasks=["asr"])
        text = processor.tokenizer.decode([t for t in batch["input_ids"][0].tolist() if t != processor.audio_token_id])
        return model, batch, text

    _, dated, dated_text = encoded(DATED_TEMPLATE)
    model, plain, plain_text = encoded("configs/chat_templates/llama3_no_date.jinja")
    assert "Today Date" in dated_text and "Today Date" not in plain_text and "Cutting Knowledge" not in plain_text
    header = len("Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n")  # byte tokenizer: 1 per byte
    assert dated["input_ids"].shape[1] - plain["input_ids"].shape[1] == header
    for text in (dated_text, plain_text):  # the same turns otherwise, the answer labelled in both
        assert "<|start_header_id|>user<|end_header_id|>\n\nTranscribe the speech." in text
        assert "Answer." in text
    assert int((plain["labels"] != -100).sum()) == int((dated["labels"] != -100).sum())
    model.save_pretrained(tmp_path / "m")
    again = USAMModel.from_pretrained(tmp_path / "m")  # the text was saved, not the repository path
    assert again.config.llm.chat_template == again.tokenizer.chat_template == model.tokenizer.chat_template
    batch = USAMProcessor.from_model(again)([tone(1.0)], ["Transcribe the speech."], ["hello there"], tasks=["asr"])
    assert batch["input_ids"].tolist() == plain["input_ids"].tolist()
    with pytest.raises(FileNotFoundError, match="llm.chat_template: 'no/such.jinja' is neither"):
        make_tiny_model(**{"llm.chat_template": "no/such.jinja"})


def test_lora_merged_for_inference_generates_as_before():
    """The evaluation folds LoRA into the LLM: same greedy tokens, logits equal to rounding, no adapter left."""
    import torch
    from peft import PeftModel

    from conftest import make_tiny_model, tone

    model, processor = make_tiny_model()
    model.eval()
    with torch.no_grad():
        for name, param in model.llm.named_parameters():
            if "lora_B" in name:  # a trained adapter (lora_B starts at zero: merging that would prove nothing)
                param.copy_(torch.randn_like(param) * 0.05)
        batch = processor([tone(1.2, 330), tone(2.0, 520, seed=3)], ["What is said?", "Describe the audio."])
        before_ids = model.generate(**batch, max_new_tokens=8)
        before = model(**batch).logits
        assert isinstance(model.llm, PeftModel)
        assert model.merge_lora_for_inference() is model and not isinstance(model.llm, PeftModel)
        assert not any("lora_" in n for n, _ in model.llm.named_parameters())
        assert torch.allclose(model(**batch).logits, before, atol=1e-4)
        assert model.generate(**batch, max_new_tokens=8).tolist() == before_ids.tolist()


def test_a_training_process_loads_the_llm_onto_its_own_device(tmp_path, monkeypatch):
    """With a GPU, each rank streams the LLM's checkpoint straight onto its device (device_map), holding no host
    copy; not when ZeRO-3 shards the frozen weights (an LLM too big for one GPU) or without CUDA."""
    import usam.llm as llm_module
    from usam.config import LLMSettings
    from usam.training.config import TrainConfig
    from usam.training.trainer import llm_load_device

    whole, sharded = TrainConfig(), TrainConfig(zero3_frozen="partitioned")
    assert llm_load_device(whole, 2, cuda=True, local_rank=3) == torch.device("cuda", 3)
    assert llm_load_device(whole, 3, cuda=True, local_rank=1) == torch.device("cuda", 1)
    assert llm_load_device(sharded, 3, cuda=True, local_rank=1) is None
    assert llm_load_device(whole, 2, cuda=False, local_rank=0) is None

    model, _ = make_tiny_model(**{"llm.train": "frozen"})  # a plain LLM, no LoRA layers
    model.llm.save_pretrained(tmp_path / "llm")
    seen = []
    original = llm_module.AutoModelForCausalLM.from_pretrained

    def recording(*args, **kwargs):
        seen.append(kwargs.get("device_map"))
        return original(*args, **kwargs)

    monkeypatch.setattr(llm_module.AutoModelForCausalLM, "from_pretrained", recording)
    settings = LLMSettings(name_or_path=str(tmp_path / "llm"), dtype="float32")
    on_device, _ = llm_module.load_llm(settings, device=torch.device("cpu"))
    on_host, _ = llm_module.load_llm(settings)
    assert seen == [{"": "cpu"}, None]
    for (name, a), (_, b) in zip(on_device.state_dict().items(), on_host.state_dict().items()):
        assert a.device.type == "cpu" and torch.equal(a, b), name


def test_from_pretrained_takes_dtype_attention_and_one_device(tmp_path):
    from usam import USAMModel

    model, processor = make_tiny_model()
    model.save_pretrained(tmp_path / "m")
    half = USAMModel.from_pretrained(tmp_path / "m", dtype=torch.bfloat16, attn_implementation="eager",
                                     device_map="cpu").eval()
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half.llm.config._attn_implementation == "eager" and half.device == torch.device("cpu")
    with torch.no_grad():
        assert half.generate(**processor([tone(1.0)], ["Describe the sound."]), max_new_tokens=3).shape == (1, 3)
    assert {p.dtype for p in USAMModel.from_pretrained(tmp_path / "m", dtype="auto").parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="dtype must be"):
        USAMModel.from_pretrained(tmp_path / "m", dtype="int8")
    with pytest.raises(ValueError, match="one device for the whole model"):
        USAMModel.from_pretrained(tmp_path / "m", device_map={"llm": 0})


def test_adapter_names_its_base_as_the_config_does_and_export_leaves_the_model_as_it_was(tmp_path, monkeypatch):
    """PEFT would write the resolved local folder of the base LLM; a shared adapter must name the hub id."""
    from transformers import AutoConfig, AutoModelForCausalLM

    import usam.llm
    from usam import USAMConfig, USAMModel

    torch.manual_seed(0)
    arch = yaml.safe_load((ROOT / "configs/model/tiny.yaml").read_text())["llm"]["architecture"]
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**arch)).save_pretrained(tmp_path / "cache/tiny-llm")
    real = usam.llm.resolve_path
    monkeypatch.setattr(usam.llm, "resolve_path", lambda name, kind=None: tmp_path / "cache/tiny-llm"
                        if name == "org/tiny-llm" else real(name, kind))
    config = USAMConfig.from_yaml(ROOT / "configs/model/tiny.yaml", overrides={
        "llm.name_or_path": "org/tiny-llm", "llm.architecture": None, "llm.tokenizer": "byte"})
    model = USAMModel(config).eval()
    model.save_pretrained(tmp_path / "m")
    adapter = json.loads((tmp_path / "m/llm_adapter/adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "org/tiny-llm"
    assert USAMModel.from_pretrained(tmp_path / "m").config.llm.name_or_path == "org/tiny-llm"
    # the merged export folds LoRA in place and takes it out again: the model goes on as it was
    with torch.no_grad():
        for name, param in model.llm.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    batch = __import__("usam").USAMProcessor.from_model(model)([tone(1.0)], ["Describe."], ["a"])
    before = _logits(model, batch)
    model.export_merged(tmp_path / "merged")
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    assert any("lora_" in n for n, _ in model.llm.named_parameters())
    torch.testing.assert_close(_logits(USAMModel.from_pretrained(tmp_path / "merged"), batch), before,
                               atol=1e-5, rtol=1e-5)
