"""The language model: any `AutoModelForCausalLM`, by hub id or folder, optionally with LoRA (peft).

A randomly initialised LLM (tests) is built from `architecture` and paired with a tiny byte-level
tokenizer that carries a ChatML chat template.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from usam.config import LLMSettings
from usam.loading import resolve_path

AUDIO_TOKEN = "<|audio|>"  # one per audio token in input_ids; its positions take the audio embeddings

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """256 byte tokens plus ChatML specials (vocabulary 259): enough for tests, needs no files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def add_audio_token(tokenizer) -> int:
    """The id of `<|audio|>` in `tokenizer`, added as a special token when the tokenizer lacks it (appended after
    the text vocabulary: the LLM never embeds it, since its positions take audio embeddings, and never writes
    it, since no output row scores it). A real token, so that prompts decode and serving engines can count it."""
    from transformers import AddedToken

    if AUDIO_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(AUDIO_TOKEN, special=True, normalized=False)], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)


def text_vocab_size(tokenizer) -> int:
    """The tokenizer's size without an appended `<|audio|>` token: the ids the LLM's embeddings cover."""
    audio = tokenizer.get_vocab().get(AUDIO_TOKEN)
    return len(tokenizer) - 1 if audio == len(tokenizer) - 1 else len(tokenizer)


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"config llm.dtype: {name!r} is not one of auto, float32, bfloat16, float16") from None


def resolve_attn_implementation(name: str) -> str:
    """`llm.attn_implementation` -> the name transformers takes; "auto" prefers FlashAttention-2 where it runs."""
    if name != "auto":
        return name
    import importlib.util

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def chat_template_text(value: str) -> str:
    """`llm.chat_template` -> the template: the text itself, or the contents of the file it names."""
    if "{{" in value or "{%" in value:
        return value
    path = Path(value)
    if not path.is_file() and not path.is_absolute():  # a repository path (configs/...) from any directory
        path = Path(__file__).resolve().parents[1] / value
    if not path.is_file():
        raise FileNotFoundError(f"config llm.chat_template: {value!r} is neither a Jinja template nor a file")
    return path.read_text()


def load_tokenizer(settings: LLMSettings):
    source = settings.tokenizer or settings.name_or_path
    if source == "byte" or source is None:
        tokenizer = byte_tokenizer()
    else:
        folder = resolve_path(source, kind="llm")
        kwargs = {"gguf_file": settings.gguf_file} if settings.gguf_file and source == settings.name_or_path else {}
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=settings.trust_remote_code, **kwargs)
    if settings.chat_template:
        tokenizer.chat_template = chat_template_text(settings.chat_template)
    if tokenizer.chat_template is None:
        raise ValueError(f"tokenizer of {source}: it has no chat template; use an instruct/chat model or set one")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    add_audio_token(tokenizer)
    return tokenizer


def load_llm(settings: LLMSettings, device=None):
    """(model, pretrained: bool). Random init when no name_or_path is given. `device`: load the weights straight
    onto it (transformers' device_map streams each checkpoint shard there from its memory map), so a training
    process on a GPU never holds a private host copy of the LLM: the node's page cache is the one copy its ranks
    share, where eight ranks loading to host memory first would each hold all of it (16 GB each at 8B bf16)."""
    dtype = resolve_dtype(settings.dtype)
    attn = resolve_attn_implementation(settings.attn_implementation)
    if settings.name_or_path:
        folder = resolve_path(settings.name_or_path, kind="llm")
        kwargs = {"gguf_file": settings.gguf_file} if settings.gguf_file else {}
        if device is not None:
            kwargs["device_map"] = {"": str(device)}
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=settings.trust_remote_code,
                                                     attn_implementation=attn, **kwargs)
        return model, True
    arch = dict(settings.architecture)
    model_type = arch.pop("model_type")
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **arch), attn_implementation=attn)
    return model.to(device=device, dtype=dtype), False
