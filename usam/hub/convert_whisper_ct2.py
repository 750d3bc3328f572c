"""CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json[, vocabulary.txt]) -> transformers folder.

The `ctranslate2` package runs such a model but exposes no API to read its variables back, so `read_ct2_model_bin`
parses the file. Format (binary version 6, written by `ctranslate2.specs.model_spec.ModelSpec._serialize`;
all integers little-endian; a "string" is uint16 length n, then n-1 UTF-8 bytes, then one NUL byte):

    uint32 binary_version | string spec_name | uint32 spec_revision | uint32 n_variables
    n_variables x: string name | uint8 ndim | ndim x uint32 dim | uint8 dtype_id | uint32 n_bytes | n_bytes data
    uint32 n_aliases | n_aliases x: string alias | string target_name

dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16 (row-major data).

Variable layout of `WhisperSpec` (CT2's converter from transformers, `WhisperLoader`/`BartLoader`):
  encoder/conv{1,2}/{weight,bias}                    = model.encoder.conv{1,2}        (weight [D, C_in, 3])
  encoder/position_encodings/encodings [1500, D]     = model.encoder.embed_positions.weight
  {enc,dec}/layer_i/self_attention/linear_0 [3D, D]  = cat(q_proj, k_proj, v_proj) (bias: k part is zeros,
                                                       Whisper's k_proj has no bias)
  {enc,dec}/layer_i/self_attention/linear_1          = self_attn.out_proj
  {enc,dec}/layer_i/self_attention/layer_norm         = self_attn_layer_norm (gamma=weight, beta=bias)
  decoder/layer_i/attention/linear_0 [D, D]           = encoder_attn.q_proj
  decoder/layer_i/attention/linear_1 [2D, D]          = cat(encoder_attn.k_proj, encoder_attn.v_proj)
  decoder/layer_i/attention/linear_2                  = encoder_attn.out_proj
  decoder/layer_i/attention/layer_norm                = encoder_attn_layer_norm
  {enc,dec}/layer_i/ffn/linear_{0,1}, ffn/layer_norm  = fc1, fc2, final_layer_norm
  {enc,dec}/layer_norm                                = model.{encoder,decoder}.layer_norm
  decoder/embeddings/weight [V, D]                    = model.decoder.embed_tokens (proj_out is tied: an alias)
  decoder/position_encodings/encodings [448, D]       = model.decoder.embed_positions.weight
"""
from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import numpy as np

from usam.hub._io import atomic_folder

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU


class CT2FormatError(ValueError):
    """The CTranslate2 folder or its model.bin is not what this converter reads; the message names the file."""


def read_ct2_model_bin(path: str | os.PathLike) -> tuple[str, int, dict[str, np.ndarray], dict[str, str]]:
    """Parse a CT2 model.bin -> (spec_name, revision, {name: array}, {alias: target}). Arrays keep their dtype
    (bfloat16 comes back as float32, which holds it exactly)."""
    path = Path(path)
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        fmt = "<" + fmt
        try:
            values = struct.unpack_from(fmt, data, pos)
        except struct.error as err:
            raise CT2FormatError(f"{path}: truncated at byte {pos} ({err})") from None
        pos += struct.calcsize(fmt)
        return values[0]

    def take_string() -> str:
        nonlocal pos
        n = take("H")
        text = data[pos:pos + n - 1].decode("utf-8")
        pos += n
        return text

    version = take("I")
    if version != 6:
        raise CT2FormatError(f"{path}: CTranslate2 binary version {version}; this reader knows version 6 "
                             "(re-convert the model with ctranslate2>=3)")
    spec_name, revision = take_string(), take("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = take_string()
        shape = [take("I") for _ in range(take("B"))]
        dtype_id, n_bytes = take("B"), take("I")
        raw = data[pos:pos + n_bytes]
        if len(raw) != n_bytes:
            raise CT2FormatError(f"{path}: variable {name!r} is truncated")
        pos += n_bytes
        if dtype_id not in _CT2_DTYPES:
            raise CT2FormatError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        if _CT2_DTYPES[dtype_id] == "bfloat16":  # numpy has no bfloat16: put the 16 bits on top of a float32
            array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, _CT2_DTYPES[dtype_id])
        variables[name] = array.reshape(shape)
    aliases = {}
    for _ in range(take("I")):
        alias = take_string()
        aliases[alias] = take_string()
    return spec_name, revision, variables, aliases


def _layer_count(variables: dict, prefix: str) -> int:
    indices = {int(m.group(1)) for name in variables if (m := re.match(rf"{prefix}/layer_(\d+)/", name))}
    if indices != set(range(len(indices))):
        raise CT2FormatError(f"{prefix} layers are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def ct2_to_hf_state_dict(variables: dict[str, np.ndarray], aliases: dict[str, str], file: str = "model.bin"):
    """Map WhisperSpec variables onto `WhisperForConditionalGeneration` parameter names (float32 tensors)."""
    import torch

    def get(name: str) -> torch.Tensor:
        name = aliases.get(name, name)
        if name not in variables:
            raise CT2FormatError(f"{file}: variable {name!r} is missing")
        array = variables[name]
        if array.dtype in (np.int8, np.int16, np.int32) and array.ndim > 0:
            raise CT2FormatError(f"{file}: variable {name!r} is quantized ({array.dtype}); convert the model "
                                 "with --quantization float16 or float32 to use it here")
        return torch.from_numpy(array.astype(np.float32))

    def split(name: str, parts: int) -> list[torch.Tensor]:
        return list(torch.chunk(get(name), parts, dim=0))

    sd: dict[str, torch.Tensor] = {}

    def linear(hf: str, ct2: str):
        sd[f"{hf}.weight"] = get(f"{ct2}/weight")
        sd[f"{hf}.bias"] = get(f"{ct2}/bias")

    def norm(hf: str, ct2: str):
        sd[f"{hf}.weight"] = get(f"{ct2}/gamma")
        sd[f"{hf}.bias"] = get(f"{ct2}/beta")

    def fused_qkv(hf: str, ct2: str):  # [3D, D] -> q, k, v; the k bias slot must be zero (k_proj has no bias)
        for proj, w in zip(("q_proj", "k_proj", "v_proj"), split(f"{ct2}/weight", 3)):
            sd[f"{hf}.{proj}.weight"] = w
        bq, bk, bv = split(f"{ct2}/bias", 3)
        if bk.abs().max() > 0:
            raise CT2FormatError(f"{file}: {ct2}/bias has a non-zero key part; Whisper's k_proj has no bias")
        sd[f"{hf}.q_proj.bias"], sd[f"{hf}.v_proj.bias"] = bq, bv

    def fused_kv(hf: str, ct2: str):  # [2D, D] -> k, v (cross-attention)
        wk, wv = split(f"{ct2}/weight", 2)
        bk, bv = split(f"{ct2}/bias", 2)
        if bk.abs().max() > 0:
            raise CT2FormatError(f"{file}: {ct2}/bias has a non-zero key part; Whisper's k_proj has no bias")
        sd[f"{hf}.k_proj.weight"], sd[f"{hf}.v_proj.weight"], sd[f"{hf}.v_proj.bias"] = wk, wv, bv

    for i in range(_layer_count(variables, "encoder")):
        hf, ct2 = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        fused_qkv(f"{hf}.self_attn", f"{ct2}/self_attention/linear_0")
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
    for i in range(_layer_count(variables, "decoder")):
        hf, ct2 = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        fused_qkv(f"{hf}.self_attn", f"{ct2}/self_attention/linear_0")
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
        fused_kv(f"{hf}.encoder_attn", f"{ct2}/attention/linear_1")
        linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")
        norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    sd["model.encoder.embed_positions.weight"] = get("encoder/position_encodings/encodings")
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    sd["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = get("decoder/position_encodings/encodings")
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    # proj_out is tied to embed_tokens in transformers' Whisper; CT2 stores it as an alias of the embeddings.
    if "decoder/projection/weight" in variables and not np.array_equal(
            variables["decoder/projection/weight"], variables["decoder/embeddings/weight"]):
        raise CT2FormatError(f"{file}: decoder/projection/weight differs from the embeddings (untied output layer)")
    if "decoder/projection/bias" in variables and np.abs(variables["decoder/projection/bias"]).max() > 0:
        raise CT2FormatError(f"{file}: decoder/projection/bias is non-zero; Whisper's proj_out has no bias")
    return sd


def _scalar(variables: dict, name: str, file: str) -> int:
    if name not in variables:
        raise CT2FormatError(f"{file}: variable {name!r} is missing")
    return int(variables[name])


def _build_config(variables: dict, tokens: dict[str, int], file: str):
    """WhisperConfig from the tensor shapes, CT2 scalars and the tokenizer's special-token ids."""
    from transformers import WhisperConfig

    for flag, want in (("decoder/pre_norm", 1), ("decoder/scale_embeddings", 0), ("decoder/activation", _GELU)):
        if flag in variables and _scalar(variables, flag, file) != want:
            raise CT2FormatError(f"{file}: {flag} = {_scalar(variables, flag, file)}, Whisper has {want}")

    def shape(name: str) -> tuple:
        if name not in variables:
            raise CT2FormatError(f"{file}: variable {name!r} is missing")
        return variables[name].shape

    d_model, n_mels, _ = shape("encoder/conv1/weight")
    vocab_size = shape("decoder/embeddings/weight")[0]
    eot, sot = tokens["<|endoftext|>"], tokens["<|startoftranscript|>"]
    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=_layer_count(variables, "encoder"),
        decoder_layers=_layer_count(variables, "decoder"),
        encoder_attention_heads=_scalar(variables, "encoder/num_heads", file),
        decoder_attention_heads=_scalar(variables, "decoder/num_heads", file),
        encoder_ffn_dim=shape("encoder/layer_0/ffn/linear_0/weight")[0],
        decoder_ffn_dim=shape("decoder/layer_0/ffn/linear_0/weight")[0],
        max_source_positions=shape("encoder/position_encodings/encodings")[0],
        max_target_positions=shape("decoder/position_encodings/encodings")[0],
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        # as openai/whisper-*.en: bos = decoder start = <|startoftranscript|>, eos = pad = <|endoftext|>
        bos_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        architectures=["WhisperForConditionalGeneration"],
    )


def _build_generation_config(config, ct2_config: dict, tokens: dict[str, int]):
    """Generation settings as openai/whisper-* ship them: start from <|startoftranscript|>, no timestamps
    (transformers appends `no_timestamps_token_id` to the prompt when return_timestamps is False, which is what
    the deprecated `forced_decoder_ids=[[1, <|notimestamps|>]]` of the English-only checkpoints did), and the
    suppress lists from the CT2 config (CT2's converter copies them from the transformers generation config)."""
    from transformers import GenerationConfig

    eot, sot, nots = tokens["<|endoftext|>"], tokens["<|startoftranscript|>"], tokens["<|notimestamps|>"]
    is_multilingual = config.vocab_size >= 51865  # English-only Whisper vocabularies have 51864 entries
    gen = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=config.max_target_positions,
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or [220, eot]),
    )
    # Whisper-specific fields (read by WhisperGenerationMixin through getattr).
    gen.is_multilingual = is_multilingual
    gen.no_timestamps_token_id = nots
    gen.prev_sot_token_id = tokens.get("<|startofprev|>")
    gen.return_timestamps = False
    gen.max_initial_timestamp_index = 50
    if ct2_config.get("alignment_heads"):
        gen.alignment_heads = [list(h) for h in ct2_config["alignment_heads"]]
    if is_multilingual:
        specials = {"<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
                    "<|notimestamps|>", "<|endoftext|>", "<|startoftranscript|>"}
        gen.lang_to_id = {t: i for t, i in tokens.items()
                          if t.startswith("<|") and t not in specials and sot < i < tokens["<|translate|>"]}
        gen.task_to_id = {"translate": tokens["<|translate|>"], "transcribe": tokens["<|transcribe|>"]}
    return gen


def _ct2_vocabulary(ct2_dir: Path) -> tuple[list[str], Path | None]:
    """The CT2 vocabulary (one token per id): vocabulary.json (a JSON list, CT2 >= 3.x) or vocabulary.txt."""
    if (ct2_dir / "vocabulary.json").is_file():
        path = ct2_dir / "vocabulary.json"
        return list(json.loads(path.read_text(encoding="utf-8"))), path
    if (ct2_dir / "vocabulary.txt").is_file():
        path = ct2_dir / "vocabulary.txt"
        return path.read_text(encoding="utf-8").split("\n"), path
    return [], None


def _build_processor(ct2_dir: Path, n_mels: int, vocab_size: int):
    """WhisperProcessor from the shipped tokenizer.json (+ timestamp tokens from vocabulary.txt, as added tokens
    like the openai checkpoints have) and a default WhisperFeatureExtractor with the model's mel count."""
    from transformers import AddedToken, WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    tok_file = ct2_dir / "tokenizer.json"
    eot = "<|endoftext|>"
    # English-only Whisper: bos = eos = unk = pad = <|endoftext|>; the prefix <|startoftranscript|><|notimestamps|>
    # comes from the tokenizer's own prefix tokens (language=None, task=None).
    tokenizer = WhisperTokenizer(tokenizer_file=str(tok_file), model_max_length=1024,
                                 bos_token=eot, eos_token=eot, unk_token=eot, pad_token=eot)
    names, vocab_file = _ct2_vocabulary(ct2_dir)
    if names and len(tokenizer) < vocab_size:
        names = names[:vocab_size]
        extra = names[len(tokenizer):]
        if extra and all(re.fullmatch(r"<\|\d+\.\d\d\|>", t) for t in extra):
            tokenizer.add_tokens([AddedToken(t, lstrip=False, rstrip=False, normalized=False) for t in extra])
            if tokenizer.convert_tokens_to_ids(extra[-1]) != len(names) - 1:
                raise CT2FormatError(f"{vocab_file}: timestamp tokens do not line up with the tokenizer ids")
    return WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=n_mels), tokenizer=tokenizer)


def convert_ct2_whisper(ct2_dir: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Convert a CTranslate2 Whisper folder into a transformers folder that loads with
    `WhisperForConditionalGeneration.from_pretrained(out_dir)` and `WhisperProcessor.from_pretrained(out_dir)`.

    Weights are saved as float32 safetensors (CT2 float16 -> float32 is exact; CPU inference runs in float32).
    Written atomically. Returns the output folder.
    """
    import torch
    from transformers import WhisperForConditionalGeneration

    ct2_dir = Path(ct2_dir).expanduser()
    model_bin = ct2_dir / "model.bin"
    if not model_bin.is_file():
        raise CT2FormatError(f"{model_bin}: missing (expected a CTranslate2 model folder)")
    spec_name, _, variables, aliases = read_ct2_model_bin(model_bin)
    if spec_name != "WhisperSpec":
        raise CT2FormatError(f"{model_bin}: spec {spec_name!r} is not a Whisper model (WhisperSpec)")
    ct2_config = json.loads((ct2_dir / "config.json").read_text()) if (ct2_dir / "config.json").is_file() else {}
    tok_json = json.loads((ct2_dir / "tokenizer.json").read_text(encoding="utf-8")) \
        if (ct2_dir / "tokenizer.json").is_file() else {}
    tokens = {t["content"]: t["id"] for t in tok_json.get("added_tokens", [])}
    for needed in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"):
        if needed not in tokens:
            raise CT2FormatError(f"{ct2_dir / 'tokenizer.json'}: special token {needed} is missing")

    config = _build_config(variables, tokens, str(model_bin))
    state_dict = ct2_to_hf_state_dict(variables, aliases, str(model_bin))
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing = set(model.state_dict()) - set(state_dict) - {"proj_out.weight"}
    unexpected = set(state_dict) - set(model.state_dict())
    if missing or unexpected:
        raise CT2FormatError(f"{model_bin}: mapping mismatch; missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}")
    model.load_state_dict(state_dict, strict=False, assign=True)
    model.tie_weights()
    model.generation_config = _build_generation_config(config, ct2_config, tokens)
    model.eval()
    processor = _build_processor(ct2_dir, config.num_mel_bins, config.vocab_size)

    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return Path(out_dir).expanduser().resolve()
