"""The transformers way: Auto classes after `import usam`, a real audio token, the processor's own folder,
apply_chat_template, pipeline("any-to-any"), generate() options, and folders saved before these existed."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import GenerationConfig

from conftest import tone

RATE = 24000  # the tiny model's input rate (it has MERT)


def _chat(source, text="Describe the sound."):
    return [{"role": "user", "content": [{"type": "audio", **source}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def saved(loaded, tmp_path_factory):
    """The tiny model whose answers depend on its input, its processor, a folder saved by today's code (with a wav
    file beside it)."""
    model, processor = loaded
    folder = tmp_path_factory.mktemp("hf") / "model"
    model.save_pretrained(folder)
    wav = folder.parent / "clip.wav"
    sf.write(wav, tone(1.2, 500, sr=RATE), RATE)
    return model, processor, folder, wav


def test_the_audio_token_is_a_real_token_and_prompts_decode(saved):
    model, processor, _, _ = saved
    batch = processor([tone(1.0, sr=RATE)], ["What is it?"])
    ids = batch["input_ids"][0]
    n = processor.layout.num_audio_tokens(RATE)
    assert int((ids == processor.audio_token_id).sum()) == n == model.config.num_audio_tokens(RATE)
    assert processor.tokenizer.convert_ids_to_tokens(processor.audio_token_id) == "<|audio|>"
    assert model.config.audio_token_id == processor.audio_token_id == model.audio_token_id
    text = processor.tokenizer.decode(ids)  # raised OverflowError with a negative placeholder id
    assert text.count("<|audio|>") == n and "What is it?" in text
    assert "<|audio|>" not in processor.tokenizer.decode(ids, skip_special_tokens=True)
    with pytest.raises(ValueError, match="audio token"):  # typed text cannot forge audio positions
        processor([tone(1.0, sr=RATE)], ["say <|audio|> please"])


def test_auto_classes_load_a_saved_folder_in_a_fresh_process(saved, tmp_path):
    model, processor, folder, _ = saved
    for name in ("config.json", "generation_config.json", "processor_config.json", "chat_template.jinja",
                 "tokenizer.json", "usam_weights.safetensors", "usam_auto.py"):
        assert (folder / name).exists(), name
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["USAMForConditionalGeneration"]
    batch = processor([tone(1.0, 330, sr=RATE)], ["Describe."])
    torch.save(dict(batch), tmp_path / "batch.pt")
    with torch.no_grad():
        expected = model(**batch).logits
    script = f"""
import torch, usam
from transformers import AutoConfig, AutoModel, AutoModelForMultimodalLM, AutoProcessor
folder = {str(folder)!r}
config = AutoConfig.from_pretrained(folder)
assert type(config).__name__ == "USAMConfig", type(config)
processor = AutoProcessor.from_pretrained(folder)
assert type(processor).__name__ == "USAMProcessor", type(processor)
batch = torch.load({str(tmp_path / "batch.pt")!r}, weights_only=True)
again = processor([batch["audio"][0].numpy()], ["Describe."])
assert all(torch.equal(again[k], batch[k]) for k in batch), "processor batch differs"
for auto in (AutoModel, AutoModelForMultimodalLM):
    model = auto.from_pretrained(folder).eval()
    assert type(model).__name__ == "USAMForConditionalGeneration", type(model)
    with torch.no_grad():
        torch.save(model(**batch).logits, {str(tmp_path / "logits.pt")!r})
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt", weights_only=True), expected, rtol=0, atol=0)


def test_without_import_usam_the_folder_loads_with_trust_remote_code(saved):
    _, _, folder, _ = saved
    script = f"""
from transformers import AutoConfig, AutoModelForMultimodalLM, AutoProcessor
folder = {str(folder)!r}
try:
    AutoConfig.from_pretrained(folder)
    raise SystemExit("loaded without trust_remote_code")
except ValueError as err:
    assert "trust_remote_code" in str(err), err
for auto in (AutoConfig, AutoProcessor, AutoModelForMultimodalLM):
    assert type(auto.from_pretrained(folder, trust_remote_code=True)).__module__.startswith("usam.")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]


def test_the_processor_reloads_from_its_own_folder(saved, tmp_path):
    _, processor, _, _ = saved
    processor.save_pretrained(tmp_path / "processor")
    assert not (tmp_path / "processor" / "config.json").exists()  # nothing of the model needed
    from transformers import AutoProcessor

    from usam import USAMProcessor

    for loaded in (USAMProcessor.from_pretrained(tmp_path / "processor"),
                   AutoProcessor.from_pretrained(tmp_path / "processor")):
        assert loaded.layout == processor.layout and loaded.sampling_rate == processor.sampling_rate
        clips, texts = [tone(0.7, sr=RATE), tone(2.1, 300, seed=1, sr=RATE)], ["Describe.", "Transcribe the speech."]
        for kwargs in ({}, {"answers": ["a", "bc"]}):
            a, b = processor(clips, texts, **kwargs), loaded(clips, texts, **kwargs)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_apply_chat_template_reads_paths_urls_and_arrays(saved):
    _, processor, _, wav = saved
    wave, _ = sf.read(wav, dtype="float32")
    by_array = processor.apply_chat([_chat({"audio": wave})])
    for source in ({"path": str(wav)}, {"url": wav.as_uri()}, {"audio": (RATE, wave)}):
        batch = processor.apply_chat_template(_chat(source), add_generation_prompt=True, tokenize=True,
                                              return_dict=True, return_tensors="pt")
        assert batch.keys() == by_array.keys()
        assert all(torch.equal(batch[k], by_array[k]) for k in batch), source
    text = processor.apply_chat_template(_chat({"path": str(wav)}), add_generation_prompt=True)
    assert text.count("<|audio|>") == processor.layout.num_audio_tokens(len(wave)) and "Describe the sound." in text
    ids = processor.apply_chat_template([_chat({"path": str(wav)})] * 2, add_generation_prompt=True, tokenize=True)
    assert ids.shape[0] == 2 and torch.equal(ids[0], by_array["input_ids"][0])
    with pytest.raises(ValueError, match="continue_final_message"):
        processor.apply_chat_template(_chat({"path": str(wav)}), continue_final_message=True)


def test_pipeline_any_to_any_gives_what_generate_gives(saved):
    from transformers import pipeline

    model, processor, folder, wav = saved
    messages = _chat({"path": str(wav)})
    batch = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    expected = processor.batch_decode(model.generate(**batch, max_new_tokens=6))[0]
    other = processor.batch_decode(model.generate(**processor([tone(2.0, 200, seed=3, sr=RATE)], ["Who?"]),
                                                  max_new_tokens=6))[0]
    assert expected.strip() and expected != other  # answers that depend on the input
    pipe = pipeline("any-to-any", model=str(folder))
    out = pipe(text=messages, max_new_tokens=6, return_full_text=False)
    assert out[0]["generated_text"].strip() == expected
    chat = pipe(text=messages, max_new_tokens=6)[0]["generated_text"]  # the chat, with the answer appended
    assert chat[-1]["role"] == "assistant" and chat[-1]["content"].strip() == expected


def test_generate_options_streamer_and_batching(saved):
    from transformers import TextIteratorStreamer

    model, processor, _, _ = saved
    clips, texts = [tone(0.8, sr=RATE), tone(1.9, 300, seed=1, sr=RATE)], ["Describe.", "What is heard?"]
    batch = processor(clips, texts)
    greedy = model.generate(**batch, generation_config=GenerationConfig(max_new_tokens=5))
    assert greedy.shape[1] <= 5
    torch.manual_seed(0)
    sampled = model.generate(**batch, generation_config=GenerationConfig(do_sample=True, top_k=0, max_new_tokens=5,
                                                                         temperature=5.0))
    assert not torch.equal(sampled, greedy)  # sampling at a high temperature leaves the greedy path
    beams = model.generate(**batch, num_beams=3, num_return_sequences=2, max_new_tokens=4,
                           return_dict_in_generate=True)
    assert beams.sequences.shape[0] == 4
    assert not torch.equal(greedy[0], greedy[1])
    for i in range(2):  # a left-padded batch decodes as each sample alone
        alone = model.generate(**processor([clips[i]], [texts[i]]), max_new_tokens=5)
        n = alone.shape[1]
        assert torch.equal(greedy[i, :n], alone[0]), i
    streamer = TextIteratorStreamer(processor.tokenizer, skip_special_tokens=True)
    one = processor([clips[0]], [texts[0]])
    ids = model.generate(**one, max_new_tokens=5, streamer=streamer)
    assert "".join(streamer).strip() == processor.batch_decode(ids)[0]


def test_the_merged_export_loads_with_auto_classes(saved, tmp_path):
    from transformers import AutoModel, AutoModelForCausalLM

    from usam import USAMModel

    _, processor, folder, _ = saved
    model = USAMModel.from_pretrained(folder).eval()  # (export merges LoRA in place and takes it out again)
    model.export_merged(tmp_path / "merged")
    batch = processor([tone(1.0, 410, sr=RATE)], ["Describe."])
    with torch.no_grad():
        expected = model(**batch).logits
        whole = AutoModel.from_pretrained(tmp_path / "merged").eval()
        # LoRA folded into the weights: the same function up to float rounding (logits of size ~10 here)
        assert (whole(**batch).logits - expected).abs().max() <= 1e-5 * expected.abs().max()
        llm = AutoModelForCausalLM.from_pretrained(tmp_path / "merged" / "llm").eval()
        text = torch.tensor([[5, 17, 42, 9]])
        torch.testing.assert_close(llm(input_ids=text).logits, whole.llm(input_ids=text).logits, rtol=0, atol=1e-5)


def test_a_folder_saved_before_the_audio_token_and_processor_config_still_loads(saved, tmp_path):
    """Earlier folders: no processor files, no generation config, config.json without audio_token_id, text_config
    or architectures, and a tokenizer without <|audio|>."""
    import shutil

    from usam import USAMModel, USAMProcessor
    from usam.llm import byte_tokenizer

    model, processor, folder, _ = saved
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    for name in ("processor_config.json", "generation_config.json", "chat_template.jinja", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json"):
        (old / name).unlink(missing_ok=True)
    byte_tokenizer().save_pretrained(old)  # the tokenizer as it was saved: no <|audio|>
    config = json.loads((old / "config.json").read_text())
    for key in ("audio_token_id", "text_config", "architectures"):
        config.pop(key, None)
    (old / "config.json").write_text(json.dumps(config))
    loaded, loaded_processor = USAMModel.from_pretrained(old).eval(), USAMProcessor.from_pretrained(old)
    today = USAMModel.from_pretrained(folder).eval()
    assert loaded_processor.audio_token_id == loaded.audio_token_id == today.audio_token_id
    batch = loaded_processor([tone(1.0, 350, sr=RATE)], ["Describe."])
    assert all(torch.equal(batch[k], v) for k, v in processor([tone(1.0, 350, sr=RATE)], ["Describe."]).items())
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, today(**batch).logits, rtol=0, atol=0)
    assert np.array_equal(loaded.generate(**batch, max_new_tokens=4), today.generate(**batch, max_new_tokens=4))


def test_the_audio_token_is_never_generated_even_where_the_llm_has_a_row_for_it():
    from conftest import make_tiny_model

    model, processor = make_tiny_model()  # byte tokenizer (259 ids) + <|audio|> at 259; the tiny LLM has 320 rows
    model.eval()
    audio_id = processor.audio_token_id
    assert audio_id < model.get_output_embeddings().weight.shape[0]
    assert model.generation_config.suppress_tokens == [audio_id]
    with torch.no_grad():  # make <|audio|> the LLM's favourite next token everywhere
        model.get_output_embeddings().bias = torch.nn.Parameter(torch.zeros(model.get_output_embeddings().weight.shape[0]))
        model.get_output_embeddings().bias[audio_id] = 1e4
    batch = processor([tone(1.0, sr=RATE)], ["Describe."])
    with torch.no_grad():
        assert int(model(**batch).logits[0, -1].argmax()) == audio_id  # unsuppressed, it would come first
    for settings in ({}, {"suppress_tokens": None}, {"suppress_tokens": [5]}):  # whatever the settings say
        ids = model.generate(**batch, max_new_tokens=4, **settings)
        assert ids.numel() and audio_id not in ids.tolist()[0], settings


def test_from_pretrained_refuses_what_it_would_ignore(saved):
    from usam import USAMModel

    _, _, folder, _ = saved
    with pytest.raises(TypeError, match="revision"):
        USAMModel.from_pretrained(folder, revision="v2")
    with pytest.raises(TypeError, match="unknown keyword"):
        USAMModel.from_pretrained(folder, load_in_8bit=True)


def test_a_folder_written_by_the_earlier_code_loads_and_answers_as_it_did():
    """tests/data/folder-0.1: the tiny model saved by the code before the audio token, the processor config and the
    Auto classes existed (-200 placeholders, no processor_config.json); its logits at the last position and greedy
    answers for two clips were recorded then, on a 2-core AMD EPYC (Zen 4)."""
    from pathlib import Path

    from transformers import AutoModel, AutoProcessor

    from usam.serving.testing import tone as served_tone

    folder = Path(__file__).parent / "data" / "folder-0.1"
    expected = torch.load(folder.parent / "folder-0.1-expected.pt", weights_only=True)
    model, processor = AutoModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    batch = processor([served_tone(1.0, 440), served_tone(1.5, 300)], ["What is said?", "Describe the sound."])
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits[:, -1], expected["logits"], rtol=0, atol=1e-4)
    assert torch.equal(model.generate(**batch, max_new_tokens=8), expected["ids"])


@pytest.mark.parametrize("mode", ["continuous", "hybrid"])
def test_a_clips_audio_embeddings_depend_on_the_clip_and_its_instruction_only(mode):
    """What a serving engine with its own KV cache (a vLLM plugin) needs: per-clip embeddings for the audio tokens."""
    from conftest import make_tiny_model

    overrides = {"audio_tokens.mode": mode, "loss.lambda_ctc": 1.0} if mode == "hybrid" else {}
    model, processor = make_tiny_model(**overrides)
    model.eval()
    clip, other = tone(1.3, 520, sr=RATE), tone(2.6, 250, seed=2, sr=RATE)
    alone = processor([clip], ["Describe."])
    together = processor.apply_chat([_chat({"audio": other}, "Transcribe the speech."), _chat({"audio": clip}, "Describe."),
                                     [{"role": "user", "content": [{"type": "audio", "audio": other},
                                                                   {"type": "audio", "audio": clip},
                                                                   {"type": "text", "text": "Compare."}]}]])
    (single, single_attended), = model.audio_embeddings(**alone)
    parts = model.audio_embeddings(**together)
    assert [p[0].shape[0] for p in parts] == [processor.layout.num_audio_tokens(len(c)) for c in (other, clip, other,
                                                                                                   clip)]
    assert single.shape[0] == int((alone["input_ids"] == processor.audio_token_id).sum())
    torch.testing.assert_close(parts[1][0], single, rtol=1e-5, atol=1e-5)  # same clip, same instruction
    assert torch.equal(parts[1][1], single_attended)
    # another instruction routes the same clip otherwise (a little, in the random tiny model's router)
    assert float((parts[3][0] - single).abs().max()) > 1e-4
    if mode == "hybrid":
        assert not bool(single_attended.all())  # dropped spelled frames are marked, not removed
