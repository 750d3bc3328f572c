"""The training config: one YAML file, `key=value` overrides from the command line, saved resolved with the run.

    model: configs/model/tiny.yaml      # a model YAML, or the model sections inline (whisper:, llm:, ...)
    init_from: null                     # a saved model folder whose trained weights start this run (stage 2)
    stage: 1                            # 1: LLM frozen; 2: + the LLM's LoRA (model.set_stage)
    output_dir: runs/stage1_tiny
    data:
      train: [{manifest: data/train.jsonl, weight: 1.0}]   # per-dataset mixing weights (usam.data.mix_entries)
      task_weights: {asr: 1.0, aac: 2.0}                    # per-task weights, multiplied into the above
      valid: [data/valid.jsonl]
    optim: {lr: 5.0e-5, weight_decay: 1.0e-6}
    schedule: {epochs: 1, warmup_ratio: 0.13, grad_accum: 2}
    deepspeed: configs/deepspeed/zero2.json
    autocast: null                      # "bf16": forward under torch.autocast (CPU runs; GPU: DeepSpeed bf16)

Every section is a dataclass, so a misspelt key fails with the list of known keys. After loading, the model
section is always inline (a path is read), so the saved `train_config.yaml` rebuilds the run by itself.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from usam.config import dataclass_from_dict

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DataSource:
    manifest: str
    weight: float = 1.0
    format: str = "auto"
    task: str | None = None  # fixed task of a manifest without a task field


@dataclass
class ReadingSettings:
    """Reading practice from text alone (usam/reading.py): every training micro-batch gains `per_batch` ASR samples
    whose audio tokens are simulated CTC posteriors of a sentence (no audio, no encoder), for models whose LLM
    reads posterior-weighted audio tokens (model audio_tokens.mode posterior or hybrid)."""
    per_batch: int = 0  # 0: off
    # tokens deleted, substituted and repeated, a third each. `error_rate_end` (when set) moves the rate linearly
    # to that value over the run: a curriculum from clean to noisy text, or the reverse
    error_rate: float = 0.15
    error_rate_end: float | None = None
    smoothing: float = 0.1  # posterior mass off the token's own row, over top_k - 1 random rows
    top_k: int = 4
    # "everyday": the training split of the synthetic corpus's everyday-English pool (usam/synth/text.py; the
    # valid and test sentences and the generalisation split's are never drawn); else a text file, a sentence a line
    sentences: str = "everyday"


@dataclass
class DataSettings:
    train: list[DataSource] = field(default_factory=list)
    task_weights: dict[str, float] = field(default_factory=dict)  # missing tasks: 1.0
    valid: list[str] = field(default_factory=list)
    bucketing: bool = True           # DurationBucketSampler (True) or FixedSizeBatchSampler (False)
    max_audio_seconds: float = 120.0  # bucket cap: padded audio seconds per micro-batch
    max_samples: int | None = 16     # cap on samples per bucketed micro-batch
    # cap on a bucketed micro-batch's padded LLM tokens (samples x longest estimated sequence); null: none. Items
    # are then sorted by their token estimate (USAMProcessor.estimate_lengths), so micro-batches hold about the
    # same tokens whatever the tasks' answer lengths, and ranks stop waiting for the largest
    max_tokens: int | None = None
    # Bucketing sorts by duration within chunks of this many shuffled clips (None: the whole epoch, which makes
    # most micro-batches single-task when tasks differ in clip length; scripts/sampler_mix.py measures both)
    sort_chunk: int | None = None
    batch_size: int = 8              # micro-batch size of the fixed sampler
    max_seconds: float | None = 30.0  # longer clips are skipped (reason too_long)
    num_workers: int = 0
    cache_dir: str | None = None     # encoder feature cache (usam cache); None: encoders run live
    max_valid_samples: int | None = 256
    valid_batch_size: int = 8
    reading: ReadingSettings = field(default_factory=ReadingSettings)


@dataclass
class OptimSettings:
    lr: float = 5.0e-5
    weight_decay: float = 1.0e-6
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1.0e-8
    # None or true: torch's AdamW (fused kernel on CUDA; no op build, unlike DeepSpeed's FusedAdam, a JIT build
    # that needs nvcc and ninja); ZeRO-Offload of the optimiser always uses DeepSpeed's CPU Adam. false: FusedAdam
    torch_adam: bool | None = None


@dataclass
class ScheduleSettings:
    epochs: int = 1
    max_steps: int | None = None   # optimiser steps; None: `epochs` full passes
    warmup_ratio: float = 0.13
    grad_accum: int = 1
    grad_clip: float = 1.0         # 0 or null: no clipping
    # The LM loss's mean: "step" over every answer token of the optimiser step (all micro-batches and ranks), so
    # each token weighs the same whatever batch it lands in; "micro_batch": a mean per micro-batch, then averaged
    token_mean: str = "step"

    def __post_init__(self):
        if self.token_mean not in ("step", "micro_batch"):
            raise ValueError(f"train config: field 'schedule.token_mean': {self.token_mean!r} is not one of step, "
                             "micro_batch")


@dataclass
class LoggingSettings:
    log_every: int = 10
    eval_every: int = 500          # 0: only at the end
    save_every: int = 500          # 0: only at the end
    keep_last: int = 2
    num_generate: int = 4          # validation samples generated and logged
    # per task, this many validation samples are generated and scored with the task's metric at every
    # validation (valid/<task>/<score>, e.g. valid/asr/wer): a quality curve, not only a loss curve. 0: off
    score_per_task: int = 0
    max_new_tokens: int = 48
    tensorboard: bool = True
    progress: bool = True
    log_keys: bool = False         # debugging/tests: the sample keys of each step, per rank, in metrics.jsonl


@dataclass
class TrainConfig:
    model: dict = field(default_factory=dict)
    # dotted keys set inside the model sections ({"loss.lambda_ce": 0.0}): one model YAML serves several
    # stages that differ in a few settings (already folded into `model` once loaded)
    model_overrides: dict = field(default_factory=dict)
    init_from: str | None = None
    stage: int = 1
    output_dir: str = "runs/default"
    seed: int = 0
    deepspeed: str = "configs/deepspeed/zero2.json"
    deepspeed_overrides: dict = field(default_factory=dict)  # dotted keys set in the DeepSpeed JSON
    # ZeRO-3 and the frozen weights (the pretrained LLM and encoders): "whole" gathers each once and keeps it on
    # every rank (no gathers per micro-batch: forward, recompute and backward would each fetch them again);
    # "partitioned" keeps them sharded like the trained weights, for a model whose frozen part does not fit on one
    # GPU (70B class)
    zero3_frozen: str = "whole"
    # "bf16": forward passes under torch.autocast with fp32 master weights. Meant for CPU runs (1.5x faster per
    # step on this AVX512-BF16 machine; /tmp figures in the demo notes); on GPU use DeepSpeed's bf16 section.
    autocast: str | None = None
    # Keep DeepSpeed's bf16 engine on without CUDA (bf16 weights, fp32 master copies on the CPU accelerator).
    # Off: CPU runs train in fp32. The CPU test tier turns it on to run the GPU recipes' precision path.
    bf16_on_cpu: bool = False
    data: DataSettings = field(default_factory=DataSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    def __post_init__(self):
        if self.autocast not in (None, "bf16", "fp16"):
            raise ValueError(f"train config: field 'autocast': {self.autocast!r} is not one of null, bf16, fp16")
        if self.zero3_frozen not in ("whole", "partitioned"):
            raise ValueError(f"train config: field 'zero3_frozen': {self.zero3_frozen!r} is not one of whole, "
                             "partitioned")
        if self.data.max_tokens is not None and self.data.max_tokens < 1:
            raise ValueError(f"train config: field 'data.max_tokens': must be >= 1 or null, got {self.data.max_tokens}")
        if self.data.sort_chunk is not None and self.data.sort_chunk < 1:
            raise ValueError(f"train config: field 'data.sort_chunk': must be >= 1 or null, got {self.data.sort_chunk}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config atomically (it rebuilds this run with `--config path`)."""
        from usam.training.checkpoint import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))

    def model_config(self):
        from usam.config import USAMConfig

        return USAMConfig(**self.model)


def _build(cls, value: Any, where: str):
    """Dataclass from a mapping, recursing into dataclass fields; `data.train` is a list of DataSource."""
    hooks = {"train": lambda v, w: [_source(s, f"{w}[{i}]") for i, s in enumerate(v or [])]}  # DataSettings.train
    try:
        return dataclass_from_dict(cls, value, f"train config: {where}", hooks)
    except TypeError as err:
        raise ValueError(str(err)) from err


def _source(value, where: str) -> DataSource:
    if isinstance(value, str):
        return DataSource(manifest=value)
    return dataclass_from_dict(DataSource, value, where)


def find_file(path: str | Path, base: Path | None = None) -> Path:
    """A path as given (relative to the working folder), else relative to `base`, else to the repository."""
    p = Path(path).expanduser()
    for candidate in (p, (base / p) if base else None, REPO_ROOT / p):
        if candidate is not None and candidate.exists():
            return candidate
    raise FileNotFoundError(f"{path}: not found (looked in the working folder"
                            f"{', ' + str(base) if base else ''} and {REPO_ROOT})")


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """['schedule.max_steps=10', 'optim.lr=1e-4'] -> {dotted key: YAML-parsed value}."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value (e.g. optim.lr=1e-4)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: value is not valid YAML: {err}") from None
        if isinstance(value, str) and _looks_like_float(value):
            value = float(value)  # YAML 1.1 reads 1e-4 as a string
        out[key.strip()] = value
    return out


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _fix_floats(node):
    """YAML 1.1 (PyYAML) reads `5e-5` (no dot) as a string: turn such strings into floats."""
    if isinstance(node, dict):
        return {k: _fix_floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_floats(v) for v in node]
    if isinstance(node, str) and _looks_like_float(node) and any(c in node.lower() for c in "e."):
        return float(node)
    return node


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    node = data
    keys = dotted.split(".")
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            if key in node and node[key] is not None:
                raise ValueError(f"override {dotted!r}: {key!r} is not a section")
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def _model_sections(value, base: Path) -> dict:
    """The model section as a mapping of model sections (a path to a model YAML or usam.yaml folder is read)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        path = find_file(value, base)
        if path.is_dir():
            path = path / "usam.yaml"
        data = yaml.safe_load(path.read_text()) or {}
        return data.get("model", data)
    raise ValueError("train config 'model': give a model YAML path or the model sections inline")


def load_train_config(path: str | Path | None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Read a training YAML, apply `key=value` overrides, validate. Overrides reach into the model too
    (`model.llm.gradient_checkpointing=true`)."""
    data: dict = {}
    base = None
    if path is not None:
        path = find_file(path)
        base = path.parent
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the top level must be a mapping")
    data = _fix_floats(data)
    ov = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    # the model path may itself be overridden; read it before applying model.* overrides
    if "model" in ov:
        data["model"] = ov.pop("model")
    if "model" not in data:
        raise ValueError(f"{path}: no 'model' section (a model YAML path or inline sections)")
    data["model"] = _fix_floats(_model_sections(data["model"], base or REPO_ROOT))
    for key, value in ov.items():
        _set_dotted(data, key, value)
    model_overrides = data.get("model_overrides") or {}
    if not isinstance(model_overrides, dict):
        raise ValueError(f"{path}: model_overrides must be a mapping of dotted keys (loss.lambda_ce: 0.0)")
    for key, value in _fix_floats(model_overrides).items():
        _set_dotted(data["model"], key, value)
    cfg = _build(TrainConfig, data, "config")
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    if cfg.stage not in (1, 2):
        raise ValueError(f"train config stage: must be 1 or 2, got {cfg.stage}")
    s = cfg.schedule
    if s.grad_accum < 1:
        raise ValueError("train config schedule.grad_accum must be >= 1")
    if not 0 <= s.warmup_ratio < 1:
        raise ValueError("train config schedule.warmup_ratio must be in [0, 1)")
    if s.max_steps is not None and s.max_steps < 1:
        raise ValueError("train config schedule.max_steps must be >= 1 or null")
    if cfg.optim.lr <= 0:
        raise ValueError("train config optim.lr must be > 0")
    for source in cfg.data.train:
        if source.weight < 0:
            raise ValueError(f"train config data.train: weight of {source.manifest} must be >= 0")
    for task, w in cfg.data.task_weights.items():
        from usam.tasks import check_task

        check_task(task)
        if w < 0:
            raise ValueError(f"train config data.task_weights.{task} must be >= 0")
    try:
        cfg.model_config()
    except (ValueError, TypeError) as err:
        raise ValueError(f"train config model: {err}") from err


def load_deepspeed_config(cfg: TrainConfig, world_size: int, cuda: bool) -> dict:
    """The DeepSpeed JSON with the values this trainer owns filled in (batch sizes, clipping, precision,
    optimiser). Values written "auto" in the JSON, or absent, are set from the training config."""
    ds = json.loads(find_file(cfg.deepspeed).read_text())
    for key, value in cfg.deepspeed_overrides.items():
        _set_dotted(ds, key, value)
    ga = cfg.schedule.grad_accum
    ds["gradient_accumulation_steps"] = ga
    # micro-batches are bucketed by audio seconds, so their size varies; DeepSpeed only uses these numbers
    # for bookkeeping (samples/s), and they must satisfy train_batch = micro * accumulation * world.
    ds["train_micro_batch_size_per_gpu"] = 1
    ds["train_batch_size"] = ga * world_size
    if ds.get("gradient_clipping", "auto") == "auto":
        ds["gradient_clipping"] = float(cfg.schedule.grad_clip or 0.0)
    bf16 = ds.setdefault("bf16", {})
    if bf16.get("enabled", "auto") == "auto":
        bf16["enabled"] = bool(cuda) or cfg.bf16_on_cpu
    if not cuda:
        bf16["enabled"] = bool(bf16["enabled"]) and cfg.bf16_on_cpu  # fp32 on CPU unless asked
        ds.pop("fp16", None)
    offload = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none") == "cpu"
    # torch_adam is incompatible with ZeRO-Offload, which needs DeepSpeed's CPU Adam (an op build)
    torch_adam = cfg.optim.torch_adam is not False and not offload
    params = {"lr": cfg.optim.lr, "betas": list(cfg.optim.betas), "eps": cfg.optim.eps,
              "weight_decay": cfg.optim.weight_decay, "torch_adam": torch_adam}
    if torch_adam and cuda:
        params["fused"] = True  # torch's fused AdamW kernel (DeepSpeed passes the other params to torch.optim.AdamW)
    ds["optimizer"] = {"type": "AdamW", "params": params}
    if offload and not cuda:
        ds["zero_optimization"]["offload_optimizer"]["pin_memory"] = False
    return ds
