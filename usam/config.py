"""USAMConfig: one config with a typed sub-config per component.

Each section is a dataclass, so a YAML typo fails loudly (`unknown field ...`) instead of being ignored.
The whole config round-trips through `config.json` (transformers' `save_pretrained`) and through YAML.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import AutoConfig, PretrainedConfig

from usam import SAMPLE_RATE  # noqa: E402,F401  (re-exported: encoders import it from here)
TRAIN_MODES = ("frozen", "full", "lora")
from usam.tasks import TASKS  # noqa: E402


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class WhisperSettings:
    enabled: bool = True
    name_or_path: str | None = None  # hub id or folder of a Whisper checkpoint (only the encoder is loaded)
    architecture: dict | None = None  # WhisperConfig fields for a randomly initialised encoder (tests)
    train: str = "frozen"  # frozen | full | lora
    lora: LoraSettings = field(default_factory=LoraSettings)
    # False: pad every chunk to 30 s, as the weights were trained. True: run on the true length (faster on short
    # clips, features move a little; see scripts/bench_encoders.py).
    true_length: bool = False


@dataclass
class BEATsSettings:
    enabled: bool = True
    name_or_path: str | None = None  # path to the official BEATs .pt ({"cfg": ..., "model": ...})
    architecture: dict | None = None  # BEATs cfg fields for a randomly initialised encoder
    train: str = "frozen"
    lora: LoraSettings = field(default_factory=LoraSettings)


@dataclass
class MERTSettings:
    enabled: bool = True
    name_or_path: str | None = None  # hub id or folder of a MERT-v1 checkpoint
    architecture: dict | None = None  # HubertConfig fields for a randomly initialised encoder
    train: str = "frozen"
    lora: LoraSettings = field(default_factory=LoraSettings)
    sample_rate: int = 24000
    layer_mix: bool = True  # learned softmax over hidden states; False uses the last state


@dataclass
class AlignSettings:
    rate_hz: float = 50.0  # common frame rate (Whisper's)
    # The rate clips are decoded at and handed to the model (samples/s). None: the highest native rate of the
    # enabled encoders (24000 with MERT-v1, else 16000), so MERT hears full-band music; each encoder whose
    # native rate is lower resamples its input itself.
    input_sample_rate: int | None = None


@dataclass
class QFormerSettings:
    window_s: float = 1 / 3
    stride_s: float | None = None  # None: equal to the window
    num_queries: int = 1
    num_layers: int = 2
    hidden_size: int = 768
    num_heads: int = 8
    ffn_size: int = 3072
    dropout: float = 0.1
    # "learned": the queries start as learned vectors only (SALMONN). "window_mean": each window's queries also
    # start from the mean of its projected frames and the layers' residual branches start at zero, so the
    # untrained Q-Former is window mean pooling and learns attention from there (with learned queries alone,
    # tiny.en's tokens of one clip start at cosine 0.97 to each other, and a short run never leaves that)
    query_init: str = "learned"
    # "qformer": the window-level Q-Former above (docs/architecture.md, step 4). "frame_stack": no learned layer,
    # each window's frames concatenated in order and layer-normalised (SLAM-LLM's frame stacking), so the
    # projector's experts are the only learned stage between the encoders and the LLM; num_layers, hidden_size,
    # num_heads, ffn_size, dropout and query_init are then unused. For CPU budgets: in a 160-step probe (ASR,
    # tiny.en features, docs/demo.md) every variant with a learned stage in front of the experts learned slower.
    # Give it a router z-loss (loss.lambda_z 1e-3): the router reads the whole stack (2 x 3,840 inputs on the demo),
    # and without one it sent every token to one expert by step 30 of the demo's stage 1 (balance loss 2.99 of 3);
    # with it, 1.62 at step 40 and usage differing by task.
    kind: str = "qformer"
    # frame_stack only: normalise each encoder's stack apart (one LayerNorm per encoder) instead of the joint stack,
    # so the encoders' features reach the projector at one scale whatever their own; no effect with one encoder
    stream_norm: bool = False
    # with stream_norm: the starting scale of the LayerNorm of every encoder's stack after the first (a learned
    # per-channel gain). 0: the model starts as if the first encoder (Whisper) were alone and learns how much of the
    # others to read; at 1 their untrained share of every token slowed the demo's CTC alignment (docs/demo.md)
    added_stream_scale: float = 1.0
    # frame_stack only: every token also carries the local tempogram of the frames (usam/rhythm.py: the
    # autocorrelation of their onset flux) at beat periods up to this many seconds; 0: none. A 0.1-s token holds no
    # beat, and a linear probe reads tempo from the frames' periodicity, not from their content (docs/demo.md)
    rhythm_s: float = 0.0

    def __post_init__(self):
        if self.query_init not in ("learned", "window_mean"):
            raise ValueError(f"qformer.query_init must be 'learned' or 'window_mean', got {self.query_init!r}")
        if self.kind not in ("qformer", "frame_stack"):
            raise ValueError(f"qformer.kind must be 'qformer' or 'frame_stack', got {self.kind!r}")
        if self.rhythm_s < 0 or (self.rhythm_s > 0 and self.kind != "frame_stack"):
            raise ValueError(f"qformer.rhythm_s must be 0 (none) or, with kind 'frame_stack', the longest beat "
                             f"period in seconds; got {self.rhythm_s} with kind {self.kind!r}")
        if self.kind == "frame_stack" and self.num_queries != 1:
            raise ValueError(f"qformer.num_queries must be 1 with kind 'frame_stack' (one stacked token per window), "
                             f"got {self.num_queries}")


@dataclass
class ProjectorSettings:
    num_experts: int = 3
    top_k: int | None = None  # None: dense mixture
    expert_hidden_size: int | None = None  # None: the LLM width
    use_instruction: bool = True  # the router sees the pooled instruction embedding
    # True: an RMSNorm on the mixed output whose gain starts at the RMS of the LLM's input embeddings, so audio
    # tokens reach the LLM at the scale of its text tokens (unnormalised, the demo's tokens grew to ~35x the
    # text embeddings' norm during training, and every clip looked alike to the LLM)
    output_norm: bool = False
    # Where the balance loss counts expert use: "ranks" over the micro-batches of all data-parallel ranks at once
    # (global-batch balancing), so that single-task micro-batches (duration buckets) are not each pushed to even
    # use, which would work against task-aware routing; "micro_batch": each micro-batch alone. Training only; the
    # same with one rank.
    balance_scope: str = "ranks"

    def __post_init__(self):
        if self.balance_scope not in ("ranks", "micro_batch"):
            raise ValueError(f"projector.balance_scope must be ranks or micro_batch, got {self.balance_scope!r}")


@dataclass
class LLMSettings:
    name_or_path: str | None = None  # hub id or folder of any causal LM
    gguf_file: str | None = None
    architecture: dict | None = None  # AutoConfig fields (with model_type) for a random LLM (tests)
    tokenizer: str | None = None  # folder/id; None: same as name_or_path; "byte": built-in byte tokenizer
    train: str = "lora"  # frozen | lora | full
    lora: LoraSettings = field(default_factory=LoraSettings)
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    gradient_checkpointing: bool = False
    # transformers' attention kernel: auto (flash_attention_2 on CUDA when flash-attn is installed, else sdpa) |
    # sdpa | flash_attention_2 | eager
    attn_implementation: str = "auto"
    trust_remote_code: bool = False
    # A system message for every chat; None keeps the chat template's own default (some templates add a long one).
    system_prompt: str | None = None
    # A Jinja chat template that replaces the tokenizer's: a file (e.g. configs/chat_templates/llama3_no_date.jinja,
    # Llama 3.1's turns without the date header it adds to every chat) or the template text. A saved model keeps
    # the text, so its folder does not depend on the file.
    chat_template: str | None = None


@dataclass
class SACLSettings:
    beta: float = 0.5
    rho: float = 0.5
    kappa: float = 0.5
    margin: float = 0.2
    hardest_negative: bool = False
    score_hidden: int = 256
    calib_hidden: int = 256
    max_slots: int = 64  # cap on K (the calibrator emits one logit per token per slot)


@dataclass
class LossSettings:
    lambda_sac: float = 0.5
    lambda_bal: float = 0.01
    lambda_z: float = 0.0
    # the LM's cross-entropy. 0: the LLM is not run at all (an alignment stage on the connector alone, e.g.
    # with lambda_ctc), so a step costs the encoders and the projector only
    lambda_ce: float = 1.0
    # CTC alignment of the audio tokens onto the LLM's input embeddings (usam/ctc.py), on the samples whose
    # task is in ctc_tasks (their answers spoken or described in order: transcripts, captions, labels)
    lambda_ctc: float = 0.0
    ctc_tasks: list[str] = field(default_factory=lambda: ["asr"])
    # rows of the CTC softmax: the batch's answer tokens plus random other vocabulary rows, this many in all
    # (a sampled softmax); null: the whole vocabulary (on 2 CPU cores 49k rows cost ~9 s a step, 4,096 ~0.5 s)
    ctc_vocab_rows: int | None = 4096
    sacl: SACLSettings = field(default_factory=SACLSettings)


@dataclass
class AudioTokenSettings:
    """What the LLM reads for each clip (docs/architecture.md, "Audio tokens the LLM reads").

    continuous: the projector's output, as trained (the default).
    posterior: each audio token's CTC posterior over the LLM's vocabulary (usam/ctc.py) times the LLM's own input
    embeddings (LegoSLM, arXiv 2505.11352), so the token lies where text embeddings lie: frames whose best row
    is the blank, or whose blank probability is at least `blank_threshold`, are dropped (masked out of attention;
    with 1.0 the kept frames are the greedy CTC path's), runs of frames with the same
    best token are merged into one, and the posterior is renormalised over the `top_k` best non-blank rows at
    `temperature` (top_k 1: the best token's embedding row).
    hybrid: the continuous tokens followed by the posterior tokens of the same clip, so that what words cannot
    say (loudness, timbre, tempo) still reaches the LLM; twice the placeholders per clip.
    Needs the CTC head (built whenever mode is not continuous; trained by loss.lambda_ctc).
    hide_continuous (hybrid, training only): the share of clips of the tasks `hide_continuous_tasks` whose
    continuous half is hidden from the LLM (masked out of attention) for that step, so that the LLM learns to
    read their spelled half rather than lean on the continuous one; inference always shows both halves."""
    mode: str = "continuous"
    blank_threshold: float = 0.9
    merge_runs: bool = True
    top_k: int | None = 8  # None: the whole vocabulary
    temperature: float = 1.0
    hide_continuous: float = 0.0
    hide_continuous_tasks: list = field(default_factory=lambda: ["asr"])

    def __post_init__(self):
        if self.mode not in ("continuous", "posterior", "hybrid"):
            raise ValueError(f"audio_tokens.mode must be continuous, posterior or hybrid, got {self.mode!r}")
        if not 0.0 < self.blank_threshold <= 1.0:
            raise ValueError(f"audio_tokens.blank_threshold must be in (0, 1], got {self.blank_threshold}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"audio_tokens.top_k must be >= 1 or null, got {self.top_k}")
        if self.temperature <= 0:
            raise ValueError(f"audio_tokens.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.hide_continuous <= 1.0:
            raise ValueError(f"audio_tokens.hide_continuous must be in [0, 1], got {self.hide_continuous}")
        if self.hide_continuous > 0 and self.mode != "hybrid":
            raise ValueError("audio_tokens.hide_continuous needs mode hybrid (only a hybrid clip has a continuous "
                             f"half to hide), got mode {self.mode!r}")

    @property
    def slots_per_window(self) -> int:
        return 2 if self.mode == "hybrid" else 1


SECTIONS: dict[str, type] = {
    "whisper": WhisperSettings,
    "beats": BEATsSettings,
    "mert": MERTSettings,
    "align": AlignSettings,
    "qformer": QFormerSettings,
    "projector": ProjectorSettings,
    "llm": LLMSettings,
    "loss": LossSettings,
    "audio_tokens": AudioTokenSettings,
}
ENCODERS = ("whisper", "beats", "mert")


@dataclass
class AudioLayout:
    """How many `<|audio|>` tokens a clip becomes: all a processor needs to know of the model's config (saved in its
    processor_config.json, so that the processor loads without the model)."""

    input_sample_rate: int  # samples/s of the audio the model reads
    rate_hz: float  # frames/s of the common time axis
    stride_frames: int  # a Q-Former window starts every stride
    tokens_per_window: int  # queries x slots (2 with hybrid tokens: the continuous one and its spelling)

    def num_frames(self, num_samples: int) -> int:
        """Frames on the common time axis for a clip of `num_samples` at the input rate: ceil(seconds * rate)."""
        # integer arithmetic first, so that whole-second multiples do not round up through float error
        return max(1, math.ceil(num_samples * self.rate_hz / self.input_sample_rate - 1e-9))

    def num_windows(self, num_samples: int) -> int:
        """Windows start every stride while the start is a valid frame; the tail window is kept."""
        return math.ceil(self.num_frames(num_samples) / self.stride_frames)

    def num_audio_tokens(self, num_samples: int) -> int:
        """Audio tokens of one clip (hybrid audio tokens: the continuous ones, then as many posterior slots)."""
        return self.num_windows(num_samples) * self.tokens_per_window


def dataclass_from_dict(cls: type, value: Any, where: str, hooks: dict | None = None):
    """A dataclass from a mapping, recursing into nested dataclass fields; an unknown key is an error that names
    `where` (e.g. "config section 'qformer'"). `hooks` maps a field name to its own converter(value, where)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise TypeError(f"{where}: expected a mapping, got {type(value).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, v in value.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if hooks and name in hooks:
            kwargs[name] = hooks[name](v, f"{where}.{name}")
        elif dataclasses.is_dataclass(default):
            kwargs[name] = dataclass_from_dict(type(default), v, f"{where}.{name}", hooks)
        else:
            kwargs[name] = v
    return cls(**kwargs)


class USAMConfig(PretrainedConfig):
    """The sections above, plus what a built model adds: `text_config` (the LLM's own config, as transformers'
    multimodal models carry it; the LLM itself is built from the `llm` section) and `audio_token_id`."""

    model_type = "usam"
    sub_configs = {"text_config": AutoConfig}

    def __init__(self, whisper=None, beats=None, mert=None, align=None, qformer=None, projector=None, llm=None,
                 loss=None, audio_tokens=None, audio_token_id: int | None = None, text_config=None, **kwargs):
        given = dict(whisper=whisper, beats=beats, mert=mert, align=align, qformer=qformer, projector=projector,
                     llm=llm, loss=loss, audio_tokens=audio_tokens)
        for name, cls in SECTIONS.items():
            setattr(self, name, dataclass_from_dict(cls, given[name], f"config section {name!r}"))
        # the tokenizer's `<|audio|>` id, set when the model is built (None in a config not yet built)
        self.audio_token_id = audio_token_id
        if isinstance(text_config, dict):
            text_config = AutoConfig.for_model(**text_config)
        self.text_config = text_config
        super().__init__(**kwargs)
        self.validate()

    def validate(self) -> None:
        if not self.enabled_encoders:
            raise ValueError("config: at least one encoder (whisper, beats, mert) must be enabled")
        for name in ENCODERS:
            section = getattr(self, name)
            if section.enabled and section.train not in TRAIN_MODES:
                raise ValueError(f"config {name}.train: {section.train!r} is not one of {TRAIN_MODES}")
            if section.enabled and section.name_or_path is None and section.architecture is None:
                raise ValueError(f"config {name}: give name_or_path (pretrained) or architecture (random init)")
        if self.llm.train not in ("frozen", "lora", "full"):
            raise ValueError(f"config llm.train: {self.llm.train!r} is not one of frozen, lora, full")
        if self.llm.name_or_path is None and self.llm.architecture is None:
            raise ValueError("config llm: give name_or_path (pretrained) or architecture (random init)")
        if self.llm.attn_implementation not in ("auto", "sdpa", "flash_attention_2", "eager"):
            raise ValueError(f"config llm.attn_implementation: {self.llm.attn_implementation!r} is not one of auto, "
                             "sdpa, flash_attention_2, eager")
        if self.align.input_sample_rate is not None and self.align.input_sample_rate < 8000:
            raise ValueError(f"config align.input_sample_rate: {self.align.input_sample_rate} Hz is below 8000 (or "
                             "null: the enabled encoders' highest native rate)")
        if self.projector.num_experts < 1:
            raise ValueError("config projector.num_experts must be >= 1")
        if self.projector.top_k is not None and not 1 <= self.projector.top_k <= self.projector.num_experts:
            raise ValueError("config projector.top_k must be in [1, num_experts] or null")
        if self.qformer.kind == "qformer" and self.qformer.hidden_size % self.qformer.num_heads:
            raise ValueError("config qformer.hidden_size must be divisible by qformer.num_heads")
        for name in ("lambda_ce", "lambda_ctc", "lambda_sac", "lambda_bal", "lambda_z"):
            if getattr(self.loss, name) < 0:
                raise ValueError(f"config loss.{name} must be >= 0, got {getattr(self.loss, name)}")
        unknown = sorted(set(self.loss.ctc_tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"config loss.ctc_tasks: unknown task(s) {unknown}; known: {list(TASKS)}")

    @property
    def enabled_encoders(self) -> list[str]:
        return [name for name in ENCODERS if getattr(self, name).enabled]

    def native_sample_rate(self, name: str) -> int:
        """The rate encoder `name`'s weights were trained at."""
        return self.mert.sample_rate if name == "mert" else SAMPLE_RATE

    @property
    def input_sample_rate(self) -> int:
        """The rate of the audio the model reads (align.input_sample_rate, else the enabled encoders' highest)."""
        if self.align.input_sample_rate is not None:
            return self.align.input_sample_rate
        return max(self.native_sample_rate(name) for name in self.enabled_encoders)

    def without_weights(self) -> "USAMConfig":
        """A copy that builds every component from its `architecture` (random or meta-device weights)."""
        import copy

        config = copy.deepcopy(self)
        for name in (*ENCODERS, "llm"):
            section = getattr(config, name)
            if section.architecture is None:
                raise ValueError(f"config {name}: no architecture values to build it without weights")
            section.name_or_path = None
        config.llm.gguf_file = None
        config.llm.tokenizer = "byte"
        return config

    # -- audio token arithmetic, shared by the model and the processor ------------------------------
    @property
    def audio_layout(self) -> "AudioLayout":
        return AudioLayout(input_sample_rate=self.input_sample_rate, rate_hz=self.align.rate_hz,
                           stride_frames=self.stride_frames,
                           tokens_per_window=self.qformer.num_queries * self.audio_tokens.slots_per_window)

    @property
    def window_frames(self) -> int:
        return max(1, round(self.qformer.window_s * self.align.rate_hz))

    @property
    def rhythm_lags(self) -> int:
        return round(self.qformer.rhythm_s * self.align.rate_hz)

    @property
    def stride_frames(self) -> int:
        stride_s = self.qformer.stride_s if self.qformer.stride_s is not None else self.qformer.window_s
        return max(1, round(stride_s * self.align.rate_hz))

    def num_frames(self, num_samples: int) -> int:
        return self.audio_layout.num_frames(num_samples)

    def num_windows(self, num_samples: int) -> int:
        return self.audio_layout.num_windows(num_samples)

    def num_audio_tokens(self, num_samples: int) -> int:
        return self.audio_layout.num_audio_tokens(num_samples)

    # -- serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for name in SECTIONS:
            out[name] = dataclasses.asdict(getattr(self, name))
        return out

    def sections_dict(self) -> dict[str, Any]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.sections_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> "USAMConfig":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the top level must be a mapping of sections")
        # A model YAML may sit inside a training YAML under `model:`
        data = data.get("model", data)
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ValueError(f"{path}: unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
        for dotted, value in (overrides or {}).items():
            apply_override(data, dotted, value)
        try:
            return cls(**data)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: {err}") from err


def apply_override(data: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c = value` inside nested dicts (command-line `key=value` overrides)."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value
