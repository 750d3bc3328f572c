"""The training recipe: model + DeepSpeed engine + data + loop, for both stages.

Every run goes through `deepspeed.initialize`, a plain CPU process included (world size 1), so there is one
code path. Per optimiser step: `grad_accum` micro-batches per rank; DeepSpeed averages gradients over ranks
and scales each micro-batch loss by 1/grad_accum, so N ranks x grad_accum a equals 1 rank x grad_accum N*a
with the same micro-batches. Logged losses are the mean over micro-batches and ranks.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
import random
import shutil
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from usam.training import distributed as dist_utils
from usam.training.checkpoint import (MODEL_DIR, ResumeError, atomic_write_text, load_checkpoint,
                                      read_trainer_state, resolve_resume, restore_rng, save_checkpoint,
                                      save_only_trainable)
from usam.training.config import TrainConfig, load_deepspeed_config
from usam.training.data import stand_in_batch
from usam.training.logging import ExpertUsage, RunLogger, peak_memory_mb, progress_bar

logger = logging.getLogger("usam.training")
FINAL_DIR = "final"
CONFIG_NAME = "train_config.yaml"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def llm_load_device(cfg: TrainConfig, zero_stage: int, cuda: bool, local_rank: int):
    """Where a training process loads the LLM's weights: its own GPU when it has one and every rank keeps the LLM
    whole (ZeRO-2, or ZeRO-3 with zero3_frozen "whole"), so no rank holds a host copy; else the CPU (None), as
    ZeRO-3 with partitioned frozen weights is for LLMs that do not fit on one GPU."""
    if not cuda or (zero_stage == 3 and cfg.zero3_frozen == "partitioned"):
        return None
    return torch.device("cuda", local_rank)


def build_model(cfg: TrainConfig, llm_device=None):
    """The model of the config; stage 2 (`init_from`) loads stage 1's trained weights. A randomly initialised
    LLM (tiny configs) is taken from init_from's saved `llm/` folder, so both stages share the same base.
    `llm_device`: see `llm_load_device`."""
    from usam.modeling import LLM_DIR, USAMModel

    mcfg = cfg.model_config()
    if cfg.init_from:
        src = Path(cfg.init_from)
        if not (src / "usam_weights.safetensors").exists():
            raise FileNotFoundError(f"init_from {src}: not a saved U-SAM model folder (no usam_weights.safetensors)")
        if mcfg.llm.name_or_path is None and (src / LLM_DIR).is_dir():
            mcfg.llm.name_or_path, mcfg.llm.architecture = str(src / LLM_DIR), None
            if mcfg.llm.tokenizer in (None, "byte"):
                mcfg.llm.tokenizer = str(src / LLM_DIR)
    model = USAMModel(mcfg, llm_device=llm_device)
    if cfg.init_from:
        loaded = model.load_trained_weights(cfg.init_from)
        logger.info("loaded %d trained tensors from %s", len(loaded), cfg.init_from)
    model.set_stage(cfg.stage)
    return model


def load_model_weights(model, folder: Path) -> None:
    """A saved model folder's trained weights into `model` (before DeepSpeed wraps it): the connector and the
    other usam_weights, and the LLM's LoRA adapter when there is one (peft's own loader)."""
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    from usam.modeling import ADAPTER_DIR

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: missing (a checkpoint written before checkpoints held their model "
                                "cannot restart from its weights; resume it on its own number of ranks)")
    model.load_trained_weights(folder)
    adapter = folder / ADAPTER_DIR / "adapter_model.safetensors"
    if isinstance(model.llm, PeftModel) and adapter.exists():
        result = set_peft_model_state_dict(model.llm, load_file(str(adapter)))
        if getattr(result, "unexpected_keys", None):
            raise KeyError(f"{adapter}: adapter weights this model does not have: {result.unexpected_keys[:5]}")


def total_steps(cfg: TrainConfig, data) -> int:
    if cfg.schedule.max_steps:
        return int(cfg.schedule.max_steps)
    micro = sum(data.batches_per_epoch(e) for e in range(cfg.schedule.epochs))
    steps = micro // cfg.schedule.grad_accum
    if steps < 1:
        raise ValueError(f"{micro} micro-batches per rank give no full optimiser step with grad_accum "
                         f"{cfg.schedule.grad_accum}")
    return steps


# tasks whose answer should repeat what the audio tokens spell (a transcript, a label): copy fidelity is logged
COPY_TASKS = ("asr", "cls")


def build_reading(cfg: TrainConfig, tokenizer):
    """usam.reading.ReadingPractice for data.reading, or None when it is off."""
    settings = cfg.data.reading
    if settings.per_batch <= 0:
        return None
    from usam.reading import ReadingPractice

    if settings.sentences == "everyday":
        from usam.synth import text
        from usam.synth.config import load_config
        from usam.training.config import REPO_ROOT

        # a pool sentence's split depends on the sentence alone (text.split_of): with the corpus's own fractions,
        # reading practice never draws a valid or test sentence
        splits = load_config(REPO_ROOT / "configs/synth/default.yaml")["splits"]
        sentences = text.split_pool(text.everyday_pool(), splits)["train"]
    else:
        path = Path(settings.sentences)
        if not path.is_file():
            raise FileNotFoundError(f"data.reading.sentences: {path} is not a file (one sentence a line)")
        sentences = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return ReadingPractice(tokenizer, sentences, settings.error_rate, settings.smoothing, settings.top_k, cfg.seed)


def build_engine(model, cfg: TrainConfig, steps: int, world: int, ds_config: dict | None = None):
    """`ds_config`: the filled DeepSpeed config when the caller has read it already (load_deepspeed_config)."""
    import deepspeed
    from transformers import get_cosine_schedule_with_warmup

    if ds_config is None:
        ds_config = load_deepspeed_config(cfg, world, torch.cuda.is_available())
    params = [p for _, p in model.trainable_parameters()]
    if not params:
        raise ValueError("the model has no trainable parameter for this stage")
    warmup = int(math.ceil(cfg.schedule.warmup_ratio * steps))
    if getattr(model, "sacl", None) is not None:
        # SACL runs its heads in a data-dependent order: under ZeRO-3 gather all its weights at its entry
        if ds_config.get("zero_optimization", {}).get("stage", 0) == 3:
            from deepspeed.utils import set_z3_leaf_modules

            set_z3_leaf_modules(model, [type(model.sacl)])
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=params, config=ds_config,
        lr_scheduler=lambda opt: get_cosine_schedule_with_warmup(opt, warmup, steps))
    if ds_config.get("zero_optimization", {}).get("stage", 0) == 3 and cfg.zero3_frozen == "whole":
        keep_frozen_whole(engine)
    return engine, optimizer, scheduler, ds_config


def keep_frozen_whole(engine) -> int:
    """ZeRO-3: gather every frozen weight once and keep it whole on each rank, as DeepSpeed keeps its own
    "persistent" small weights (ds_persist: never released after use; re-gathered after a checkpoint's
    partitioning). The frozen bases are read three times per micro-batch (forward, recompute, backward) and never
    change, so sharding them trades their memory for gathering them again every time. -> how many weights."""
    frozen = [p for p in engine.module.parameters() if hasattr(p, "ds_id") and not p.requires_grad
              and not p.ds_persist]
    if frozen:
        for param in frozen:
            param.ds_persist = True
        engine.optimizer.persistent_parameters.extend(frozen)  # the list DeepSpeed re-gathers after partitioning
        frozen[0].all_gather(frozen)
    logger.info("ZeRO-3: %d frozen weights (%.1f M parameters) kept whole on every rank", len(frozen),
                sum(p.ds_numel for p in frozen) / 1e6)
    return len(frozen)


def _to_device(batch: dict, device) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.to(device, non_blocking=True)  # pinned by the DataLoader on GPU: an async copy
        else:
            out[key] = value
    return out


def autocast_context(cfg: TrainConfig, device):
    """torch.autocast for `cfg.autocast` on this device, or a no-op."""
    import contextlib

    if not cfg.autocast:
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.autocast]
    if cfg.autocast == "bf16" and torch.device(device).type == "cpu":
        _warn_slow_cpu_bf16()
    return torch.autocast(torch.device(device).type, dtype=dtype)


@functools.lru_cache(maxsize=1)
def _warn_slow_cpu_bf16() -> None:
    """bf16 matrix products are fast only on CPUs with native bf16 (AVX512-BF16 or AMX); elsewhere torch emulates
    them (measured on a 2-core AVX2 AMD EPYC: 0.3 GFLOP/s against 75 in fp32)."""
    cpu = getattr(torch, "cpu", None)
    native = any(getattr(cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported",
                                                                 "_is_amx_tile_supported"))
    if not native:
        logger.warning("autocast: bf16 on a CPU without native bf16 (no AVX512-BF16 or AMX): matrix products run "
                       "emulated, about 100x slower than fp32; set autocast: null")


def model_inputs(model, batch: dict, device) -> dict:
    """Processor batch -> kwargs of model(...): tensors on the device; cached features combined with the live
    encoders into `encoder_outputs`."""
    from usam.training.cache import encoder_outputs_for

    cached = batch.get("cached_features")
    # (tasks go along: the CTC alignment loss picks its samples by task)
    inputs = _to_device({k: v for k, v in batch.items() if k != "cached_features"}, device)
    if cached:
        inputs["encoder_outputs"] = encoder_outputs_for(model, inputs, cached)
    return inputs


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: str | None = None, progress: bool | None = None,
                 stop_after: int | None = None, resume_weights: str | None = None):
        """resume: an exact resume (same number of ranks); resume_weights: a restart from a checkpoint's trained
        weights and step on any number of ranks, with a new optimiser state and the data order from the start of
        its epoch. stop_after: stop (as if killed) after this many optimiser steps of this process, without the
        final save (tests of resume)."""
        if resume is not None and resume_weights is not None:
            raise ResumeError("give --resume or --resume-weights, not both")
        self.cfg = cfg
        self.resume = resume
        self.resume_weights = resume_weights
        self.progress = cfg.logging.progress if progress is None else progress
        self.stop_after = stop_after

    # ---------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        from usam.processing import USAMProcessor
        from usam.training.cache import FeatureCacheReader
        from usam.training.collate import Collator
        from usam.training.data import TrainData

        cfg = self.cfg
        dist_utils.init_distributed()
        self.rank, self.world = dist_utils.rank(), dist_utils.world_size()
        self.main = self.rank == 0
        self.out = Path(cfg.output_dir)
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.config_text = _yaml(cfg.to_dict())
        seed_everything(cfg.seed)  # same seed on every rank: the randomly initialised parts must agree
        ds_config = load_deepspeed_config(cfg, self.world, torch.cuda.is_available())
        zero_stage = ds_config.get("zero_optimization", {}).get("stage", 0)
        self.model = build_model(cfg, llm_load_device(cfg, zero_stage, torch.cuda.is_available(),
                                                      dist_utils.local_rank()))
        restart = resolve_resume(self.resume_weights, self.out) if self.resume_weights is not None else None
        if restart is not None:
            load_model_weights(self.model, restart / MODEL_DIR)
        self.processor = USAMProcessor.from_model(self.model)
        self.cache = FeatureCacheReader(cfg.data.cache_dir, self.model) if cfg.data.cache_dir else None
        self.collator = Collator(self.processor, self.cache)
        self.reading = build_reading(cfg, self.processor.tokenizer)
        self.data = TrainData(cfg, self.collator, self.rank, self.world, processor=self.processor)
        self.steps = total_steps(cfg, self.data)
        self.engine, self.optimizer, self.scheduler, self.ds_config = build_engine(self.model, cfg, self.steps,
                                                                                   self.world, ds_config)
        save_only_trainable(self.engine, self.model)
        self.zero_stage = self.ds_config.get("zero_optimization", {}).get("stage", 0)
        if self.zero_stage == 3 and self.world > 1:  # each rank must call the LLM as often as the others
            self.model.set_llm_row_groups(False)
        self.device = self.engine.device
        self.logger = RunLogger(self.out, self.main, cfg.logging.tensorboard)
        self.valid = self._valid_entries()
        # state
        self.step = 0
        self.micro = 0
        self.epoch = 0
        self.sampler_state = None
        self.skip_counts: Counter = Counter()
        self.skip_examples: list[str] = []  # the first few skipped samples of this process, with file and reason
        self.seen = 0
        self.resumed_from = resolve_resume(self.resume, self.out)
        if self.resumed_from is not None:
            state = load_checkpoint(self.engine, self.resumed_from, self.rank, self.world)
            self.step, self.micro, self.epoch = state["step"], state["micro"], state["epoch"]
            self.sampler_state = state["sampler"][self.rank]
            self.skip_counts = Counter(state["skip_counts"][self.rank])
            self.seen = state["seen"][self.rank]
            self.logger.truncate_after(self.step)
            logger.info("resumed from %s at step %d", self.resumed_from, self.step)
        else:
            if restart is not None:
                state = read_trainer_state(restart)
                self.step, self.epoch = state["step"], state["epoch"]
                self.micro = self.step * cfg.schedule.grad_accum
                with warnings.catch_warnings():  # (torch warns of a scheduler step before any optimiser step)
                    warnings.simplefilter("ignore")
                    for _ in range(self.step):  # the schedule goes on from the checkpoint's step
                        self.scheduler.step()
                self.logger.truncate_after(self.step)
                logger.info("restarted from the weights of %s at step %d (new optimiser state, epoch %d from its "
                            "start)", restart, self.step, self.epoch)
            # per-rank stream for dropout etc. (the model weights above were drawn with the shared seed)
            torch.manual_seed(cfg.seed * 1009 + self.rank + 7919 * self.step)
        if self.main:
            cfg.save(self.out / CONFIG_NAME)
            self.model.config.to_yaml(self.out / "model.yaml")

    def _valid_entries(self):
        from usam.training.data import read_entries

        entries = []
        for path in self.cfg.data.valid:
            got, problems = read_entries(path, need_durations=False)
            entries.extend(got)
        limit = self.cfg.data.max_valid_samples
        if limit and len(entries) > limit:
            # a seeded sample across the whole file, so that every task is validated (manifests are often
            # grouped by task or domain), in file order
            keep = sorted(random.Random(self.cfg.seed).sample(range(len(entries)), limit))
            entries = [entries[i] for i in keep]
        return entries

    # ---------------------------------------------------------------------------------------------------
    def run(self) -> dict:
        self.setup()
        try:
            return self._loop()
        finally:
            self.logger.close()

    def _trainer_state(self, sampler) -> dict:
        return {"step": self.step, "micro": self.micro, "epoch": self.epoch, "total_steps": self.steps,
                "world_size": self.world,
                "sampler": dist_utils.all_gather_objects(sampler.state_dict()),
                "skip_counts": dist_utils.all_gather_objects(dict(self.skip_counts)),  # per rank
                "seen": dist_utils.all_gather_objects(self.seen)}

    def _save(self, sampler) -> None:
        state = self._trainer_state(sampler)
        save_checkpoint(self.engine, self.out, self.step, state, self.config_text, self.rank,
                        self.cfg.logging.keep_last, dist_utils.barrier, write_model=self._write_model)

    def _loop(self) -> dict:
        cfg, engine = self.cfg, self.engine
        ga = cfg.schedule.grad_accum
        log_cfg = cfg.logging
        if self.resumed_from is not None:
            restore_rng(self.resumed_from, self.rank)  # last: nothing after this may draw random numbers
        bar = progress_bar(self.steps, self.step, self.main and self.progress)
        usage = ExpertUsage()
        acc = self._new_acc()
        last_good = None
        stopped_early = False
        steps_this_process = 0
        t_log = time.perf_counter()
        start_step = self.step
        sampler = None
        micro_batches = self._micro_batches(self.epoch, self.sampler_state)
        done = self.step >= self.steps
        # once, not per micro-batch: the call walks every module (64 ms of a 0.4 s alignment step with SmolLM2 on
        # 2 CPU cores); USAMModel.train keeps frozen parts in eval mode, and validate() switches back itself
        engine.train()
        while not done:
            # one optimiser step's micro-batches, fetched first so that the LM loss can be a mean over the answer
            # tokens of the whole step (all micro-batches and ranks) rather than a mean of micro-batch means
            group = list(itertools.islice(micro_batches, ga - self.micro % ga))
            if not group:
                break
            prepared = []
            for collated, sampler in group:
                sampler.advance()
                self.seen += len(collated.samples) + len(collated.skipped)
                self.skip_counts.update(s.reason for s in collated.skipped)
                self.skip_examples += [str(s.error()) for s in collated.skipped][:5 - len(self.skip_examples)]
                weight = 1.0
                if collated.batch is None:  # every sample of this micro-batch was skipped
                    if last_good is None:  # this rank's first: a stand-in, as the other ranks run theirs
                        last_good = stand_in_batch(self.data.dataset(self.epoch), self.collator, "training")
                    collated, weight = last_good, 0.0  # a zero-weighted step keeps the ranks in lock-step
                else:
                    last_good = collated
                if self.reading is not None and weight:
                    extra = self._reading_samples(self.micro + len(prepared))
                    collated = self.collator.with_reading(collated, extra)
                prepared.append((collated, weight))
            ce_scales = self._ce_scales(prepared)
            for (collated, weight), ce_scale in zip(prepared, ce_scales):
                inputs = model_inputs(self.model, collated.batch, self.device)
                with autocast_context(cfg, self.device):
                    out = engine(**inputs)
                loss = out.loss
                if ce_scale is not None:
                    loss = loss + self.model.config.loss.lambda_ce * (ce_scale - 1.0) * out.ce_loss
                engine.backward(loss * weight)
                engine.step()
                self.micro += 1
                if weight:
                    usage.add(out.routing_weights, out.routing_sample_index, collated.tasks)
                    acc["n"] += 1
                    for key, value in (("loss", out.loss), ("ce", out.ce_loss), ("sacl", out.sacl_loss),
                                       ("balance", out.balance_loss), ("ctc", out.ctc_loss)):
                        acc[key] += float(value.detach())
                    for key in ("audio_norm_ratio", "audio_clip_cosine"):
                        value = getattr(out, key, None)
                        if value is not None and bool(torch.isfinite(value)):
                            acc[key] += float(value)
                            acc[key + "_n"] += 1
                    acc["audio_s"] += collated.audio_seconds
                    acc["tokens"] += collated.num_tokens
                    acc["keys"] += [x.key for x in collated.samples]
            if self.micro % ga:
                continue  # the data ended inside a step: the next fetch finds nothing
            self.step += 1
            steps_this_process += 1
            bar.update(1)
            if self.step % log_cfg.log_every == 0 or self.step == self.steps:
                t_log = self._log_train(acc, usage, t_log, bar)
                acc = self._new_acc()
                usage.reset()
            if log_cfg.eval_every and self.step % log_cfg.eval_every == 0 and self.step < self.steps:
                self.validate()
            if log_cfg.save_every and self.step % log_cfg.save_every == 0 and self.step < self.steps:
                self._save(sampler)
            if self.stop_after is not None and steps_this_process >= self.stop_after:
                stopped_early = True
            if self.step >= self.steps or stopped_early:
                done = True
        bar.close()
        if stopped_early:
            return {"step": self.step, "stopped_early": True}
        self.validate()
        if sampler is not None and self.step > start_step:  # (a resume of a finished run has nothing to save)
            self._save(sampler)
        final = self.save_final()
        skipped, seen, examples = Counter(), 0, []
        for counts, n, ex in dist_utils.all_gather_objects((dict(self.skip_counts), self.seen, self.skip_examples)):
            skipped.update(counts)
            seen += n
            examples += ex
        summary = {"step": self.step, "final": str(final), "skipped": dict(sorted(skipped.items())), "seen": seen,
                   "manifest_problems": dict(self.data.manifest_problems), "skip_examples": examples[:10]}
        self.logger.log("summary", self.step, summary)
        if skipped and self.main:
            logger.warning("skipped %d of %d samples: %s", sum(skipped.values()), seen, dict(skipped))
            for text in examples[:10]:
                logger.warning("  skipped %s", text)
        return summary

    def _reading_samples(self, micro: int) -> list:
        """Micro-batch `micro`'s reading practice (the same draw for the same micro-batch on a resumed run); the
        error rate moves from error_rate to error_rate_end over the run when the latter is set."""
        settings = self.cfg.data.reading
        rate = settings.error_rate
        if settings.error_rate_end is not None:
            rate += (settings.error_rate_end - rate) * min(self.step / max(self.steps, 1), 1.0)
        return self.reading.draw(settings.per_batch, step=micro * self.world + self.rank, error_rate=rate)

    def _micro_batches(self, epoch: int, sampler_state: dict | None):
        """(micro-batch, its epoch's sampler), epoch after epoch, until `schedule.epochs` (endless with max_steps).
        Lazy: an epoch's loader is made when its first micro-batch is fetched."""
        while sampler_state is not None or epoch < self.cfg.schedule.epochs or self.cfg.schedule.max_steps:
            loader, sampler = self.data.loader(epoch, sampler_state)
            sampler_state = None
            self.epoch = epoch
            for collated in loader:
                yield collated, sampler
            epoch += 1

    def _ce_scales(self, prepared: list) -> list[float | None]:
        """Per micro-batch of one optimiser step, the factor on its cross-entropy (a mean over its own answer
        tokens) that makes the step's gradient that of the mean over every answer token of the step, on every
        rank: n_j * grad_accum * ranks / N, as DeepSpeed divides by both. Without it a token of a micro-batch
        with few answer tokens (ASR) weighs several times one of a long-answer micro-batch (captions).
        None (no change) for schedule.token_mean micro_batch, or one micro-batch on one rank."""
        ga = self.cfg.schedule.grad_accum
        if self.cfg.schedule.token_mean != "step" or (ga == 1 and self.world == 1):
            return [None] * len(prepared)
        counts = [float((c.batch["labels"][:, 1:] != -100).sum()) * w for c, w in prepared]
        total = dist_utils.all_reduce_sum([sum(counts)])[0]
        if total <= 0:
            return [None] * len(prepared)
        return [n * ga * self.world / total for n in counts]

    @staticmethod
    def _new_acc() -> dict:
        return {"n": 0, "loss": 0.0, "ce": 0.0, "sacl": 0.0, "balance": 0.0, "ctc": 0.0, "audio_s": 0.0,
                "tokens": 0.0, "audio_norm_ratio": 0.0, "audio_norm_ratio_n": 0, "audio_clip_cosine": 0.0,
                "audio_clip_cosine_n": 0, "keys": []}

    def _log_train(self, acc, usage, t_last, bar) -> float:
        keys = ("n", "loss", "ce", "sacl", "balance", "ctc", "audio_s", "tokens", "audio_norm_ratio",
                "audio_norm_ratio_n", "audio_clip_cosine", "audio_clip_cosine_n")
        sums = dict(zip(keys, dist_utils.all_reduce_sum([acc[k] for k in keys])))
        gathered = dist_utils.all_gather_objects({"usage": usage.state(), "mem": peak_memory_mb(),
                                                  "skip": dict(self.skip_counts), "seen": self.seen,
                                                  "keys": acc["keys"] if self.cfg.logging.log_keys else None})
        now = time.perf_counter()
        elapsed = max(now - t_last, 1e-9)
        if self.main:
            n = max(sums["n"], 1)
            means, counts = ExpertUsage.merge([g["usage"] for g in gathered])
            skipped = Counter()
            for g in gathered:
                skipped.update(g["skip"])
            record = {
                "loss": sums["loss"] / n, "ce": sums["ce"] / n, "sacl": sums["sacl"] / n,
                "balance": sums["balance"] / n, "ctc": sums["ctc"] / n,
                "lr": float(self.scheduler.get_last_lr()[0]),
                "epoch": self.epoch, "audio_s_per_s": sums["audio_s"] / elapsed,
                "tokens_per_s": sums["tokens"] / elapsed, "audio_s": sums["audio_s"], "peak_mem_mb": max(g["mem"] for g in gathered),
                "seen": sum(g["seen"] for g in gathered), "skipped": dict(sorted(skipped.items())),
                "experts": means, "expert_tokens": counts,
            }
            # the audio tokens' scale against the text embeddings, and how alike different clips look to the LLM
            for key in ("audio_norm_ratio", "audio_clip_cosine"):
                if sums[key + "_n"]:
                    record[key] = sums[key] / sums[key + "_n"]
            if self.cfg.logging.log_keys:
                record["keys"] = [g["keys"] for g in gathered]
            comm = self._comm_mb_per_step()
            if comm:
                record["comm_mb_per_step"] = comm
            self.logger.log("train", self.step, record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
        return now

    def _comm_mb_per_step(self) -> dict | None:
        """With DeepSpeed's comms logger on (DeepSpeed config `comms_logger: {enabled: true, prof_all: true}`): the
        MB this rank moved per optimiser step since the last log, by collective (e.g. all_gather_into_tensor: the
        ZeRO-3 weight gathers). None when the logger is off."""
        from deepspeed.comm.comm import comms_logger

        if not comms_logger.enabled:
            return None
        totals = {name: sum(size * record[0] for size, record in sizes.items())
                  for name, sizes in comms_logger.comms_dict.items()}
        since, before = getattr(self, "_comm_seen", (0, {}))
        self._comm_seen = (self.step, totals)
        steps = max(self.step - since, 1)
        return {name: (total - before.get(name, 0)) / 2**20 / steps for name, total in sorted(totals.items())}

    # ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict | None:
        """Loss per task over the validation manifests (sharded over ranks) and a few generated samples."""
        from usam.data.dataset import AudioDataset
        from usam.training.collate import Collator, TrainItems
        from usam.training.data import valid_batches

        if not self.valid:
            return None
        engine = self.engine
        engine.eval()
        dataset = TrainItems(AudioDataset(self.valid, strict=False, target_sr=self.processor.sampling_rate),
                             seed=self.cfg.seed, epoch=0, train=False)
        batches = valid_batches(len(self.valid), self.cfg.data.valid_batch_size, self.world)
        collate = Collator(self.processor, self.cache)
        tasks = sorted({e.task for e in self.valid})
        sums = {t: [0.0, 0.0] for t in tasks}  # per task: summed token CE, answer tokens
        total = [0.0, 0.0]  # summed batch loss * weight, weight
        last_ok = None
        for indices, weight in batches[self.rank::self.world]:
            collated = collate([dataset[i] for i in indices])
            if collated.batch is None:  # every rank runs as many forwards (ZeRO-3 gathers inside each)
                if last_ok is None:
                    last_ok = stand_in_batch(dataset, collate, "validation")
                collated, weight = last_ok, 0.0
            last_ok = collated
            inputs = model_inputs(self.model, collated.batch, self.device)
            with autocast_context(self.cfg, self.device):
                out = engine(**inputs)
            total[0] += float(out.loss) * weight
            total[1] += weight
            if out.logits is None:  # an alignment stage (loss.lambda_ce 0) runs no LLM: no CE per task
                continue
            # cross-entropy per sample from the logits, so that batches may mix tasks
            labels = getattr(out, "logit_labels", None)  # logits only where a next token is labelled
            if labels is not None:
                scores = out.logits
            else:
                labels, scores = inputs["labels"][:, 1:], out.logits[:, :-1]
            ce = torch.nn.functional.cross_entropy(scores.float().transpose(1, 2), labels,
                                                   ignore_index=-100, reduction="none").sum(1)
            counts = (labels != -100).sum(1)
            for b, task in enumerate(collated.tasks):
                sums[task][0] += float(ce[b]) * weight
                sums[task][1] += float(counts[b]) * weight
        flat = dist_utils.all_reduce_sum([v for t in tasks for v in sums[t]] + total)
        record = {}
        for i, t in enumerate(tasks):
            ce_sum, n = flat[2 * i: 2 * i + 2]
            if n:
                record[f"ce/{t}"] = ce_sum / n
        if flat[-1]:
            record["loss"] = flat[-2] / flat[-1]
        samples = self._generate_samples(dataset)
        record.update(self._generation_scores(dataset))
        if self.main:
            self.logger.log("valid", self.step, record)
            if samples:
                self.logger.log("samples", self.step, {f"{i}_{s['key']}": f"[{s['task']}] ref: {s['reference']} "
                                                       f"| hyp: {s['hypothesis']}" for i, s in enumerate(samples)})
        engine.train()
        return record

    def _generation_scores(self, dataset) -> dict:
        """{"<task>/<score>": value}: the first `logging.score_per_task` valid samples of each task, generated
        greedily and scored with the task's metric (usam.metrics)."""
        from usam.metrics import PRIMARY_SCORE, compute_metrics, copy_fidelity, metric_name

        per_task = self.cfg.logging.score_per_task
        synced = self.zero_stage == 3 and self.world > 1
        if not per_task or not (self.main or synced):
            return {}
        chosen: dict[str, list[int]] = {}
        for i, entry in enumerate(self.valid):
            if len(chosen.setdefault(entry.task, [])) < per_task:
                chosen[entry.task].append(i)
        loss_cfg = self.model.config.loss
        spelled = set(loss_cfg.ctc_tasks) if getattr(self.model, "ctc", None) is not None else set()
        record = {}
        for task, indices in sorted(chosen.items()):
            items = [dataset[i] for i in indices]
            items = [it for it in items if hasattr(it, "audio")]  # unreadable samples are skipped
            if not items:
                continue
            refs = [it.target if task in ("asr", "cls") else it.references for it in items]
            primary = PRIMARY_SCORE[metric_name(task)]
            hyps = None
            if not self._aligning():
                size = self.cfg.data.valid_batch_size
                hyps = [t for start in range(0, len(items), size)
                        for t in self._generate_texts(items[start: start + size], synced)]
                value = compute_metrics(task, hyps, refs).get(primary)
                if isinstance(value, (int, float)):
                    record[f"{task}/{primary}"] = float(value)
            if task in spelled:
                # what the audio tokens spell by themselves (no LLM): the alignment's own curve, per task
                spelt = self._ctc_texts(items)
                value = compute_metrics(task, spelt, refs).get(primary)
                if isinstance(value, (int, float)):
                    record[f"{task}/ctc_{primary}"] = float(value)
                copied = copy_fidelity(task, hyps, spelt) if hyps is not None and task in COPY_TASKS else None
                if copied is not None:  # the answer against what its tokens spell: how much the LLM keeps
                    record[f"{task}/copy_{primary}"] = copied
        return record

    def _aligning(self) -> bool:
        """An alignment stage (loss.lambda_ce 0): the LLM never learns to read the audio tokens here, so generating
        through it costs the most of a validation and says nothing; the CTC transcripts are scored instead."""
        return self.model.config.loss.lambda_ce == 0 and getattr(self.model, "ctc", None) is not None

    def _ctc_texts(self, samples) -> list[str]:
        from usam.training.collate import Collator

        texts = []
        size = self.cfg.data.valid_batch_size
        for start in range(0, len(samples), size):
            collated = Collator(self.processor, self.cache, with_answers=False)(samples[start: start + size])
            inputs = model_inputs(self.model, collated.batch, self.device)
            with autocast_context(self.cfg, self.device):
                ids = self.model.ctc_transcribe(**inputs)
            texts += [self.processor.tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]
        return texts

    def _generate_samples(self, dataset) -> list[dict]:
        n = self.cfg.logging.num_generate
        if not n:
            return []
        synced = self.zero_stage == 3 and self.world > 1
        if not (self.main or synced):  # ZeRO-3 partitions the weights: every rank joins each forward
            return []
        samples = []
        for i in range(len(dataset)):
            item = dataset[i]
            if hasattr(item, "audio"):
                samples.append(item)
            if len(samples) >= n:
                break
        if not samples:
            return []
        texts = self._ctc_texts(samples) if self._aligning() else self._generate_texts(samples, synced)
        return [{"key": s.key, "task": s.task, "reference": s.target, "hypothesis": t} for s, t in zip(samples, texts)]

    def _generate_texts(self, samples, synced: bool) -> list[str]:
        """Greedy answers to `samples` (one batch). `synced`: every ZeRO-3 rank joins each forward."""
        from usam.training.collate import Collator

        collated = Collator(self.processor, self.cache, with_answers=False)(samples)
        inputs = model_inputs(self.model, collated.batch, self.device)
        kwargs = {"synced_gpus": True} if synced else {}
        with autocast_context(self.cfg, self.device):
            ids = self.model.generate(**inputs, max_new_tokens=self.cfg.logging.max_new_tokens, do_sample=False,
                                      **kwargs)
        return self.processor.batch_decode(ids)

    # ---------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _fp32_master_weights(self):
        """Under DeepSpeed's bf16/fp16 engine the module holds 16-bit copies; the optimiser keeps the fp32 masters.
        Inside this context the trained parameters hold their fp32 masters (restored after), so a saved model is
        what the optimiser trained, not its rounding: the next stage (init_from) rebuilds its masters from it.
        A collective under ZeRO-3 (every rank calls it, inside the gather of the saved parameters)."""
        if not (self.engine.bfloat16_enabled() or self.engine.fp16_enabled()):
            yield
            return
        from deepspeed.utils import safe_get_full_fp32_param

        swapped = []
        for param in self.model.saved_parameters():
            if not param.requires_grad:
                continue
            master = safe_get_full_fp32_param(param)
            if master is not None:
                swapped.append((param, param.data))
                param.data = master.detach().to(param.device).view(param.data.shape)
        try:
            yield
        finally:
            for param, data in swapped:
                param.data = data

    def _write_model(self, folder: Path) -> None:
        """model.save_pretrained(folder) on rank 0, with the training config, the weights as the optimiser holds
        them (fp32 masters). A collective under ZeRO-3: the weights it writes are gathered first; the frozen
        pretrained bases, which it only references, are not."""
        if self.zero_stage == 3:
            import deepspeed

            ctx = deepspeed.zero.GatheredParameters(self.model.saved_parameters(), modifier_rank=None)
        else:
            ctx = contextlib.nullcontext()
        with ctx, self._fp32_master_weights():
            if self.main:
                shutil.rmtree(folder, ignore_errors=True)
                self.model.save_pretrained(folder)
                atomic_write_text(folder / CONFIG_NAME, self.config_text)

    def save_final(self) -> Path:
        """model.save_pretrained into output_dir/final (rank 0, atomically: a temp folder then a rename).
        Under ZeRO-3 the weights it writes are gathered first (a collective on every rank); the frozen pretrained
        bases, which it only references, are not gathered for it."""
        final = self.out / FINAL_DIR
        tmp = self.out / f".{FINAL_DIR}.tmp"
        self._write_model(tmp)
        if self.main:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        dist_utils.barrier()
        return final


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def train(cfg: TrainConfig, resume: str | None = None, progress: bool | None = None,
          stop_after: int | None = None, resume_weights: str | None = None) -> dict:
    return Trainer(cfg, resume=resume, progress=progress, stop_after=stop_after,
                   resume_weights=resume_weights).run()
