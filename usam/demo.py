"""`usam demo`: train a real U-SAM offline on a CPU and show what it learned.

Steps: synthetic corpus -> Whisper feature cache -> alignment (the connector learns by CTC to spell each answer in
the LLM's input embeddings, the LLM frozen and never run) -> stage 2 (LLM LoRA and the connector, every task) ->
evaluation on the test splits (every task) -> plots -> one answer each about a speech, a sound and a music clip.
The recipe is a fixed amount of work (corpus hours, steps of each stage in its training YAML), so another machine
does the same work, only faster or slower; `--minutes` caps the wall time by cutting steps. Its figures reproduce
on the same machine, not across CPU instruction sets (fp32 sums in another order), and move with the seed:
`--seeds N` runs it N times and reports each figure's mean and range.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from usam.config import apply_override
from usam.tasks import CLS_MODES
from usam.training.config import REPO_ROOT

logger = logging.getLogger("usam.demo")
DEMO_MODEL = REPO_ROOT / "configs/model/demo.yaml"
SYNTH_CONFIG = REPO_ROOT / "configs/synth/demo.yaml"
# Fresh in-domain classification clips (about 10 per sound class and instrument) on which the ranked labels' biases
# are fitted after training (usam/evaluation/calibration.py); their corpus seed is the config's plus the run's
CALIBRATION_SYNTH_CONFIG = REPO_ROOT / "configs/synth/demo_calibration.yaml"
# (run folder, training YAML): each stage starts from the previous one's weights. The alignment stage takes the
# place of a stage 1 through the frozen LLM: its steps cost a tenth as much (docs/demo.md)
STAGES = (("align", "demo_align.yaml"), ("stage2", "demo_stage2.yaml"))
QUICK_STEPS = {"align": 6, "stage2": 10}
# The parts of the run the ETA cannot time beforehand, measured on a 2-core AMD EPYC with AVX-512 (Zen 4,
# 2026-12-06) whose timed stage-2 step without reading practice took REFERENCE_STEP_S: after training, the label
# calibration, the evaluation (950 test items), the spelling figures, the answers and (when asked) Whisper's
# reference; during it, each validation (a few generated answers per task). Fixed seconds overestimated a faster
# CPU (23 min printed for a run of 14.7 on a 2-core AVX-512 Xeon), so plan_steps scales them by this machine's
# timed stage-2 step over the reference's: the same model's arithmetic on the same cores.
REFERENCE_STEP_S = 3.55
REFERENCE_AFTER_TRAINING_S = {"label_calibration": 121.0, "evaluation": 420.0, "whisper_reference": 80.0,
                              "spelling": 30.0, "answers": 9.0}
REFERENCE_VALIDATION_S = 25.0


# Encoders without offline weights that the demo warms up itself (usam/warmup: fresh synthetic audio, cached in
# OUT/warmup/<encoder>) when the model enables them without a name_or_path; `--encoders` enables them
WARMUP_CONFIGS = {"beats": REPO_ROOT / "configs/warmup/demo_beats.yaml",
                  "mert": REPO_ROOT / "configs/warmup/demo_mert.yaml"}
ENCODERS = ("whisper", "beats", "mert")
QUICK_WARMUP_STEPS = 4


def stage_config(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "configs/train" / dict(STAGES)[name]).read_text())


# The demo decodes transcripts and class labels jointly with the CTC head at this weight (docs/demo.md: seed 0's
# unseen-voices WER 65.2 -> 58.2 against a spelling at 56.7, sound events on held-out timbres 77.5 -> 87.5%); with
# --llm-alone the LLM alone is scored beside it on the unseen-voices and real-speech splits (asr_llm_wer)
DEMO_CTC_WEIGHT = 0.5
DEMO_CTC_TASKS = ("asr", "cls")
# ... and answers classification by ranking the label set (model.score_answers): on held-out sound timbres, seeds
# 0-2, 79.5 / 72.5 / 70.5% generated and mapped -> 84.5 / 82.8 / 80.5% ranked at weight 0.5 (docs/demo.md)
DEMO_CLS_MODE = "rank"
# The ranked labels' CTC weight, chosen on 407 fresh in-domain validation clips (not a test split) as the best mean
# accuracy of seeds 0-2 (scripts/pick_rank_weight.py; 0.8 tied 0.9 and 1, the smaller kept): held-out timbres
# 84.5 / 82.8 / 80.5% at 0.5 -> 85.2 / 83.2 / 85.0% (docs/demo.md)
DEMO_CLS_CTC_WEIGHT = 0.8


@dataclass
class DemoPlan:
    out: Path
    quick: bool
    hours: float | None = None  # corpus size; None: the demo corpus config's
    minutes: float | None = None  # wall-time cap; None: the recipe's full work whatever it takes
    seed: int = 0
    seeds: int = 1  # runs with seeds seed, seed+1, ... (> 1: each in out/seed<k>, then their mean and range)
    jobs: int | None = None
    eval_limit: int | None = None
    eval_points: int = 2  # validations per stage (the last one falls on the stage's final step)
    model_yaml: Path = DEMO_MODEL
    steps: dict = field(default_factory=dict)  # optimiser steps per stage (from the training YAMLs)
    # per stage, dotted training-config keys set over its YAML ({"stage2": {"data.reading.per_batch": 8}}), and
    # "model" for the model sections of every stage ({"model": {"audio_tokens.mode": "hybrid"}}): ablations
    settings: dict = field(default_factory=dict)
    # joint CTC / LLM decoding of the tasks whose answers spell the audio (usam/joint_decoding.py); 0: the LLM alone
    ctc_weight: float = DEMO_CTC_WEIGHT
    ctc_tasks: tuple = DEMO_CTC_TASKS
    cls_mode: str = DEMO_CLS_MODE  # "rank": the best label of the set; "generate": a generated answer, mapped
    cls_ctc_weight: float = DEMO_CLS_CTC_WEIGHT  # the CTC weight of ranked labels
    # ranked labels: per-label biases fitted on fresh in-domain clips after training (calibrate_labels)
    label_calibration: bool = True
    # with joint decoding: also score the LLM alone (ctc_weight 0) on the unseen-voices and real splits (asr_llm_wer)
    llm_alone: bool = False
    # Whisper tiny.en's own decoder on the unseen-voices and real splits (whisper_reference_wer): a reference for the
    # voices, not a figure of the model, which its 30 s windows make cost about 80 s
    whisper_reference: bool = False
    # the encoders the model runs (None: those its YAML enables); the others are switched off
    encoders: tuple | None = None
    timings: dict = field(default_factory=dict)

    @classmethod
    def make(cls, out, quick, minutes=None, hours=None, seed=0, jobs=None, model_yaml=None,
             eval_points=2, steps=None, seeds=1, settings=None, ctc_weight=None, cls_mode=None,
             cls_ctc_weight=None, label_calibration=True, llm_alone=False,
             whisper_reference=False, encoders=None) -> "DemoPlan":
        """steps: ["stage=N", ...] overriding the recipe's (or --quick's) steps of those stages. cls_ctc_weight None:
        DEMO_CLS_CTC_WEIGHT, or 0 when ctc_weight is 0 (the LLM alone throughout)."""
        ctc_weight = DEMO_CTC_WEIGHT if ctc_weight is None else ctc_weight
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"demo ctc_weight must be in [0, 1], got {ctc_weight}")
        if cls_ctc_weight is None:
            cls_ctc_weight = DEMO_CLS_CTC_WEIGHT if ctc_weight > 0 else 0.0
        if not 0.0 <= cls_ctc_weight <= 1.0:
            raise ValueError(f"demo cls_ctc_weight must be in [0, 1], got {cls_ctc_weight}")
        cls_mode = DEMO_CLS_MODE if cls_mode is None else cls_mode
        if cls_mode not in CLS_MODES:
            raise ValueError(f"demo cls_mode must be {' or '.join(CLS_MODES)}, got {cls_mode!r}")
        if eval_points < 1:
            raise ValueError(f"demo eval_points must be >= 1, got {eval_points}")
        if minutes is not None and minutes <= 0:
            raise ValueError(f"demo minutes must be > 0, got {minutes}")
        if seeds < 1:
            raise ValueError(f"demo seeds must be >= 1 (the number of runs, each with its own seed), got {seeds}")
        if encoders is not None:
            unknown = [e for e in encoders if e not in ENCODERS]
            if unknown or not encoders:
                raise ValueError(f"demo encoders must be some of {', '.join(ENCODERS)}, got {list(encoders)}")
            encoders = tuple(e for e in ENCODERS if e in encoders)
        recipe = dict(QUICK_STEPS) if quick else {name: int(stage_config(name)["schedule"]["max_steps"])
                                                  for name, _ in STAGES}
        steps = {**recipe, **parse_steps(steps or [])}
        return cls(Path(out), quick=quick, hours=hours or (0.03 if quick else None), minutes=minutes, seed=seed,
                   seeds=seeds, jobs=jobs, eval_limit=4 if quick else None, model_yaml=Path(model_yaml or DEMO_MODEL),
                   eval_points=eval_points, steps=steps, settings=parse_settings(settings or []),
                   ctc_weight=ctc_weight, cls_mode=cls_mode, cls_ctc_weight=cls_ctc_weight,
                   label_calibration=label_calibration, llm_alone=llm_alone, whisper_reference=whisper_reference,
                   encoders=encoders)


def parse_settings(items: list[str]) -> dict[str, dict]:
    """["stage2:data.reading.per_batch=8", "model:audio_tokens.mode=hybrid"] -> {"stage2": {...}, "model": {...}};
    values are read as YAML."""
    scopes = [name for name, _ in STAGES] + ["model"]
    out: dict[str, dict] = {}
    for item in items:
        scope, _, rest = item.partition(":")
        key, eq, value = rest.partition("=")
        if scope not in scopes or not key or not eq:
            raise ValueError(f"demo set: {item!r} must be SCOPE:KEY=VALUE with SCOPE one of {', '.join(scopes)}")
        out.setdefault(scope, {})[key] = yaml.safe_load(value)
    return out


def parse_steps(items: list[str]) -> dict[str, int]:
    """["align=2000", "stage2=450"] -> {"align": 2000, "stage2": 450}, with the reason when an item is wrong."""
    stages = [name for name, _ in STAGES]
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in stages:
            raise ValueError(f"demo steps: {item!r} names no stage; stages: {', '.join(stages)}")
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"demo steps: {item!r} needs a whole number of steps >= 1 after '='")
        out[name] = int(value)
    return out


class Stopwatch:
    def __init__(self, plan: DemoPlan):
        self.plan, self.start = plan, time.time()

    def lap(self, name: str, since: float) -> None:
        self.plan.timings[name] = round(time.time() - since, 1)
        logger.info("demo: %s took %.1f s", name, self.plan.timings[name])

    def elapsed_s(self) -> float:
        return time.time() - self.start


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def make_corpus(plan: DemoPlan) -> Path:
    from usam.synth.config import load_config
    from usam.synth.corpus import generate_corpus

    cfg = load_config(SYNTH_CONFIG)
    if plan.quick:  # plumbing only: a few clips of the extra test splits
        cfg["speech"]["test_general_sentences"] = min(cfg["speech"].get("test_general_sentences", 0), 6)
        cfg["music"]["test_timbre_clips"] = min(cfg["music"].get("test_timbre_clips", 0), 3)
        cfg["sound"]["test_timbre_sounds"] = min(cfg["sound"].get("test_timbre_sounds", 0), 3)
    data = plan.out / "data"
    meta = generate_corpus(data, cfg, hours=plan.hours or cfg["hours"], seed=plan.seed, jobs=plan.jobs)
    _say(f"corpus: {data} ({'reused' if meta.get('reused') else 'generated'})")
    add_real_speech(data)
    return data


def add_real_speech(data: Path) -> Path | None:
    """data/test_real.jsonl: PocketSphinx's recordings of human speech, where scripts/setup.sh fetched them
    (usam/prepare/pocketsphinx_test.py); None, with a note, where they are absent."""
    import tempfile

    from usam.prepare import prepare_dataset
    from usam.prepare.pocketsphinx_test import NAME, default_dir

    target = data / EVAL_SPLITS["real"]
    if target.exists():
        return target
    root = default_dir()
    if not (root / "test/data").is_dir():
        _say(f"no real speech recordings in {root}: the test_real split is left out (scripts/setup.sh fetches "
             "them; or run: python -c 'from usam.prepare.pocketsphinx_test import fetch; fetch()')")
        return None
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        prepare_dataset(NAME, root, tmp)
        (Path(tmp) / NAME / "test.jsonl").replace(target)  # absolute audio paths (into the cache folder)
    return target


def model_sections(plan: DemoPlan) -> dict:
    """The demo model's config sections, with --encoders and --set model:... applied."""
    sections = yaml.safe_load(plan.model_yaml.read_text())
    for name in plan.encoders or ():
        sections.setdefault(name, {})["enabled"] = True
    for name in set(ENCODERS) - set(plan.encoders or ENCODERS):
        sections.setdefault(name, {})["enabled"] = False
    for dotted, value in plan.settings.get("model", {}).items():
        apply_override(sections, dotted, value)
    return sections


def warm_up_encoders(plan: DemoPlan) -> dict[str, str]:
    """Warm up every enabled encoder the model has no weights for (WARMUP_CONFIGS) into plan.out/warmup/<name>,
    reusing a finished one, and point the model at it -> {encoder: path}."""
    from usam.warmup.run import run_warmup

    sections = model_sections(plan)
    paths = {}
    for name, config in WARMUP_CONFIGS.items():
        section = sections.get(name) or {}
        if not section.get("enabled", True) or section.get("name_or_path"):
            continue
        overrides = {"steps": QUICK_WARMUP_STEPS, "eval_every": QUICK_WARMUP_STEPS} if plan.quick else {}
        path, curve, reused = run_warmup(config, plan.out / "warmup" / name, overrides)
        last = curve[-1]
        figures = ", ".join(f"{k} {v:.0f}%" for k, v in last.items()
                            if k.split("/")[-1] in ("class_accuracy", "instrument_accuracy", "tempo_accuracy"))
        took = "reused" if reused else f"{last['minutes']:.1f} min"
        _say(f"{name} warm-up: {path} ({took}; {figures})")
        paths[name] = str(path)
        plan.settings.setdefault("model", {})[f"{name}.name_or_path"] = str(path)
    return paths


class _DemoModel:
    """The demo model, built once on first use (for the feature cache and the step timing), then released."""

    def __init__(self, plan: DemoPlan):
        self.plan, self._model = plan, None

    def get(self):
        if self._model is None:
            import torch

            from usam.config import USAMConfig
            from usam.modeling import USAMModel

            torch.manual_seed(self.plan.seed)
            self._model = USAMModel(USAMConfig(**model_sections(self.plan)))
        return self._model

    def release(self) -> None:
        self._model = None


def build_cache(plan: DemoPlan, data: Path, model, name: str = "cache") -> Path:
    """Frozen-encoder features of `model` for every split, computed once (train, valid and test share one
    cache): plan.out/<name>."""
    from usam.data import read_manifest
    from usam.training.cache import build_cache as run_cache
    from usam.training.cache import stale_encoders

    cache = plan.out / name
    if (cache / "meta.json").exists():
        stale = stale_encoders(cache, model)
        if not stale:
            _say(f"feature cache: {cache} (reused)")
            return cache
        # e.g. stage 1 was retrained: its BEATs and MERT no longer match the stage-2 cache
        _say(f"feature cache: {cache} has stale {', '.join(stale)} features (other weights); rebuilding it")
    entries = []
    seen = set()
    for split in ("train", "valid", "test"):
        for entry in read_manifest(data / f"{split}.jsonl", strict=True):
            if entry.key not in seen:
                seen.add(entry.key)
                entries.append(entry)
    run_cache(model, entries, cache)
    _say(f"feature cache: {cache} ({len(entries)} samples)")
    return cache


def time_steps(plan: DemoPlan, data: Path, demo_model: _DemoModel) -> dict[str, float]:
    """Seconds per optimiser step of each stage on a typical batch of its size (forward + backward + update, the
    faster of two): {"align": no LLM; "stage2": LoRA, with its reading practice; "stage2_without_reading"}, the
    frozen encoders' features
    from the cache as in training. Used for the ETA and the --minutes cap only: the work is fixed."""
    import torch

    from usam.data import AudioDataset, read_manifest
    from usam.processing import USAMProcessor
    from usam.tasks import instruction_for

    model = demo_model.get()  # (its weights change here; training builds its own model)
    processor = USAMProcessor.from_model(model)
    # clips of about the median duration, side by side: training batches hold clips of similar durations (the
    # sampler buckets them), and the corpus's first clips, of mixed lengths, padded a step to 6.8 s where training
    # took 5.3 (2-core EPYC, 2026-12-06)
    entries = sorted(read_manifest(data / "train.jsonl", strict=True), key=lambda e: e.duration or 0.0)
    entries = entries[max(len(entries) // 2 - 8, 0):]
    from usam.training.cache import cacheable_encoders
    from usam.training.collate import Collator
    from usam.training.config import load_train_config
    from usam.training.trainer import build_reading

    cached_names = set(cacheable_encoders(model))
    own_loss = model.config.loss
    timings = {}
    for name, yaml_name in STAGES:
        # the stage's own settings (its model_overrides and --set applied as training applies them)
        stage_cfg = load_train_config(REPO_ROOT / "configs/train" / yaml_name,
                                      {"model": model_sections(plan), **plan.settings.get(name, {})})
        size = stage_cfg.data.max_samples or 8
        dataset = AudioDataset(entries[:size], strict=True, target_sr=model.config.input_sample_rate)
        samples = [dataset[i] for i in range(len(dataset))]
        for x in samples:
            x.instruction = x.instruction or instruction_for(x.task, train=False, lang=x.lang)
        reading = build_reading(stage_cfg, processor.tokenizer)  # reading practice joins every step's batch
        extra = reading.draw(stage_cfg.data.reading.per_batch, step=0) if reading is not None else []
        batches = {name: Collator(processor, None)([*samples, *extra]).batch}
        if extra:  # the step without it measures the machine against the reference's (machine_scale)
            batches[f"{name}_without_reading"] = Collator(processor, None)(samples).batch
        model.config.loss = stage_cfg.model_config().loss
        if model.config.loss.lambda_ctc > 0 and getattr(model, "ctc", None) is None:
            from usam.ctc import CTCAlignment

            model.ctc = CTCAlignment(model.llm.get_input_embeddings().embedding_dim,
                                     vocab_rows=model.config.loss.ctc_vocab_rows)
        model.set_stage(stage_cfg.stage)
        model.train()
        live = [n for n in model.encoders if n not in cached_names]
        opt = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=1e-5)
        for key, batch in batches.items():
            with torch.no_grad():
                cached = model.encode_audio(batch["audio"], batch["audio_lengths"])
            times = []
            for _ in range(2):  # the faster of two: the first of a shape may pay for warm-up
                start = time.time()
                opt.zero_grad()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=stage_cfg.autocast == "bf16"):
                    outputs = dict(cached)
                    for n in live:
                        outputs[n] = model.encoders[n](batch["audio"], batch["audio_lengths"])
                    loss = model(**batch, encoder_outputs=outputs).loss
                loss.backward()
                opt.step()
                times.append(time.time() - start)
            timings[key] = min(times)
    model.config.loss = own_loss
    return timings


def machine_scale(step_s: dict[str, float]) -> float:
    """How much slower than the reference machine this one is (< 1: faster), from its timed stage-2 step (without
    reading practice, which the reference step did not have)."""
    return step_s.get("stage2_without_reading", step_s["stage2"]) / REFERENCE_STEP_S


def eval_reserve_s(step_s: dict[str, float], plan: DemoPlan | None = None) -> float:
    """Seconds the label calibration (when the plan ranks and calibrates labels; None: it does), the evaluation,
    Whisper's reference and the answers should take here after training."""
    parts = dict(REFERENCE_AFTER_TRAINING_S)
    if plan is not None and not (plan.cls_mode == "rank" and plan.label_calibration):
        parts.pop("label_calibration")
    if plan is not None and not plan.whisper_reference:
        parts.pop("whisper_reference")
    return sum(parts.values()) * machine_scale(step_s)


def training_s(plan: DemoPlan, steps: dict[str, int], step_s: dict[str, float]) -> float:
    """Seconds the stages' steps and validations should take here."""
    validation_s = REFERENCE_VALIDATION_S * machine_scale(step_s)
    return sum(steps[n] * step_s[n] + plan.eval_points * validation_s for n in steps)


def plan_steps(plan: DemoPlan, step_s: dict[str, float], elapsed_s: float) -> dict[str, int]:
    """The recipe's steps, cut in proportion when --minutes would be exceeded (the figures then differ from the
    recipe's); prints the ETA either way."""
    reserve_s = eval_reserve_s(step_s, plan)
    train_s = training_s(plan, plan.steps, step_s)
    steps = dict(plan.steps)
    if plan.minutes is not None:
        room = plan.minutes * 60 - elapsed_s - reserve_s
        if train_s > room:
            factor = max(room, 60.0) / train_s
            steps = {n: max(int(v * factor), 10) for n, v in steps.items()}
            _say(f"--minutes {plan.minutes:g} leaves {max(room, 0) / 60:.1f} min for training, the recipe needs "
                 f"{train_s / 60:.1f}: steps cut to {steps} (the README's figures are for the full recipe)")
            train_s = training_s(plan, steps, step_s)
    parts = ", ".join(f"{n} {steps[n]} x {step_s[n]:.2f} s" for n in steps)
    _say(f"timing: {parts} -> training ETA {train_s / 60:.1f} min, then about {reserve_s / 60:.0f} min of "
         f"evaluation (finish in about {(elapsed_s + train_s + reserve_s) / 60:.0f} min from the start). An "
         f"estimate from this machine's timed steps: validations and evaluation scaled from a reference machine's "
         f"by the stage-2 step without reading practice "
         f"({machine_scale(step_s) * REFERENCE_STEP_S:.2f} s here, {REFERENCE_STEP_S:.2f} s there)")
    return steps


def train_stage(plan: DemoPlan, data: Path, cache: Path | None, name: str, steps: int,
                init_from: Path | None) -> Path:
    from usam.training.config import load_train_config
    from usam.training.trainer import train

    out = plan.out / name
    final = out / "final"
    if (final / "usam_weights.safetensors").exists():
        _say(f"{name}: {final} (reused)")
        return final
    recipe = stage_config(name)
    overrides = {
        "model": model_sections(plan),
        "output_dir": str(out),
        "seed": plan.seed,
        "data.train": [{"manifest": str(data / "train.jsonl"), "weight": 1.0}],
        "data.valid": [str(data / "valid.jsonl")],
        "data.cache_dir": str(cache) if cache else None,
        "schedule.max_steps": steps,
        # evenly spaced, the last on the final step (the trainer validates after its last step; ceil avoids a
        # second validation next to it)
        "logging.eval_every": max(-(-steps // plan.eval_points), 1),
        "logging.save_every": max(-(-steps // 2), 1),
    }
    overrides.update(plan.settings.get(name, {}))
    if init_from is not None:
        overrides["init_from"] = str(init_from)
    cfg = load_train_config(REPO_ROOT / "configs/train" / dict(STAGES)[name], overrides)
    _say(f"{name}: {steps} optimiser steps -> {final}")
    summary = train(cfg)
    return Path(summary.get("final", final))


# Test splits the demo evaluates, when the corpus has them: the in-domain test split, everyday sentences spoken
# by held-out voices (test_general), music played by held-out soundfont programs (test_timbre), and real human
# speech (test_real, PocketSphinx's recordings: add_real_speech).
EVAL_SPLITS = {"test": "test.jsonl", "general": "test_general.jsonl", "timbre": "test_timbre.jsonl",
               "real": "test_real.jsonl"}
# Whisper tiny.en's own decoder runs on these (on "test" where neither exists)
REFERENCE_SPLITS = ("general", "real")


def eval_dir(plan: DemoPlan, split: str) -> Path:
    return plan.out / ("eval" if split == "test" else f"eval_{split}")


def calibrate_labels(plan: DemoPlan, model_dir: Path) -> dict | None:
    """With ranked classification: fit the per-label biases on fresh in-domain clips of every sound class and
    instrument (CALIBRATION_SYNTH_CONFIG, never trained or tested on) at the evaluation's ranking weight, into
    model_dir/label_calibration.json, which evaluate_test applies. A seed's model favours one of two similar
    classes on every clip (beep against chirp), another seed's the other; the biases remove that prior
    (docs/demo.md, label calibration). Returns its summary; None when the demo does not rank or calibrate."""
    from usam.evaluation.calibration import CALIBRATION_FILE, LabelCalibration, calibrate
    from usam.synth.config import load_config
    from usam.synth.corpus import generate_corpus

    if plan.cls_mode != "rank" or not plan.label_calibration:
        return None
    weight = evaluation_settings(plan).rank_ctc_weight("cls")  # the weight evaluate_test ranks at
    target = model_dir / CALIBRATION_FILE
    if target.is_file():  # a finished run's own (a retrained stage rewrites its whole folder)
        done = LabelCalibration.load(target)
        if abs(done.ctc_weight - weight) < 1e-9:
            _say(f"label calibration: {target} (reused)")
            return _calibration_summary(done)
    cfg = load_config(CALIBRATION_SYNTH_CONFIG)
    if plan.quick:
        cfg["counts"] = {"valid": {"sound": 4, "music": 2}}
    data = plan.out / "calibration"
    generate_corpus(data, cfg, hours=None, seed=int(cfg["seed"]) + plan.seed, jobs=plan.jobs)
    _say(f"label calibration: fitting the ranked labels' biases on {data / 'valid.cls.jsonl'} at weight "
         f"{weight:g}")
    result = calibrate(model_dir, data / "valid.cls.jsonl", weight)
    result.save(target)
    return _calibration_summary(result)


def _calibration_summary(result) -> dict:
    return {"clips": result.items, "ctc_weight": result.ctc_weight, "accuracy": result.accuracy,
            "calibrated_accuracy": result.calibrated_accuracy, "bias": result.as_bias()}


def evaluation_settings(plan: DemoPlan):
    """The generation settings of the test splits' evaluation (before any label calibration)."""
    from usam.evaluation.generation import GenerationSettings

    return GenerationSettings(max_new_tokens=24 if plan.quick else None, ctc_weight=plan.ctc_weight,
                              ctc_tasks=plan.ctc_tasks, cls_mode=plan.cls_mode, cls_ctc_weight=plan.cls_ctc_weight)


def evaluate_test(plan: DemoPlan, model_dir: Path, data: Path) -> dict[str, dict]:
    """metrics.json content per split present in the corpus (see EVAL_SPLITS)."""
    from usam.evaluation.calibration import apply_label_calibration
    from usam.evaluation.registry import load_registry
    from usam.evaluation.runner import evaluate

    benchmark = load_registry()["synthetic-test"]
    settings = evaluation_settings(plan)
    apply_label_calibration(settings, model_dir, "auto" if plan.label_calibration else "none")
    results = {}
    for split, name in EVAL_SPLITS.items():
        manifest = data / name
        if not manifest.exists():
            continue
        if plan.eval_limit:  # --quick: a few items of every task, not the first lines of the file
            manifest = _per_task_subset(manifest, plan.eval_limit)
        _say(f"evaluating on {manifest.name}" + (f" (joint CTC decoding of {', '.join(plan.ctc_tasks)} at weight "
                                                  f"{plan.ctc_weight})" if plan.ctc_weight else ""))
        results[split] = evaluate(model_dir, benchmark, eval_dir(plan, split), manifest=manifest, settings=settings,
                                  model_name="usam-demo")
    return results


def evaluate_llm_alone(plan: DemoPlan, model_dir: Path, data: Path) -> dict[str, float]:
    """With joint decoding on: the transcripts of the LLM alone (ctc_weight 0) on the unseen-voices and real-speech
    splits, {split: WER}, so the figure of what the LLM itself keeps stays in view."""
    from usam.evaluation.generation import GenerationSettings
    from usam.evaluation.registry import load_registry
    from usam.evaluation.runner import evaluate

    if not plan.llm_alone or not plan.ctc_weight or "asr" not in plan.ctc_tasks:
        return {}
    benchmark = load_registry()["synthetic-test"]
    settings = GenerationSettings(max_new_tokens=24 if plan.quick else None)
    out = {}
    for split in ("general", "real"):
        manifest = data / EVAL_SPLITS[split]
        if not manifest.exists():
            continue
        manifest = _task_subset(manifest, "asr", plan.eval_limit)
        if manifest is None:
            continue
        _say(f"evaluating the LLM alone (no joint CTC decoding) on {manifest.name}")
        result = evaluate(model_dir, benchmark, plan.out / f"eval_{split}_llm_alone", manifest=manifest,
                          settings=settings, model_name="usam-demo (LLM alone)")
        out[split] = result["metrics"]["asr"]["wer"]
    return out


def whisper_reference(plan: DemoPlan, data: Path) -> dict[str, dict]:
    """Whisper tiny.en's own decoder on the generalisation and real-speech splits (else the test split's ASR
    lines): {split: result}."""
    from usam.evaluation.whisper_reference import whisper_reference as run_reference

    if not plan.whisper_reference:
        return {}
    splits = [s for s in REFERENCE_SPLITS if (data / EVAL_SPLITS[s]).exists()] or ["test"]
    whisper_id = model_sections(plan)["whisper"]["name_or_path"]
    results = {}
    for split in splits:
        manifest = data / EVAL_SPLITS[split]
        if plan.eval_limit:
            manifest = _per_task_subset(manifest, plan.eval_limit)
        _say(f"reference: {whisper_id}'s own decoder on {manifest.name}")
        out = plan.out / ("whisper_reference" if split == "general" else f"whisper_reference_{split}")
        results[split] = run_reference(whisper_id, manifest, out)
    return results


def headline(plan: DemoPlan, results: dict[str, dict], data: Path, references: dict[str, dict]) -> dict:
    """The demo's target figures per split: ASR WER, sound-event and instrument accuracy (cls by domain),
    tempo and instrument question accuracy (qa by question type), captioning CIDEr-D, QA exact match."""
    from usam.data import read_manifest
    from usam.metrics import compute_metrics
    from usam.evaluation.runner import load_predictions

    figures: dict[str, dict] = {}
    for split, result in results.items():
        if not result:
            continue
        metrics, row = result.get("metrics") or {}, {}
        if "asr" in metrics:
            row["asr_wer"] = metrics["asr"]["wer"]
        for task in ("aac", "mc"):
            if isinstance((metrics.get(task) or {}).get("cider_d"), float):
                row[f"{task}_cider_d"] = metrics[task]["cider_d"]
        if "qa" in metrics:
            row["qa_exact_match"] = metrics["qa"]["exact_match"]
            for qtype in ("tempo", "instrument"):
                if f"exact_match[{qtype}]" in metrics["qa"]:
                    row[f"qa_{qtype}"] = metrics["qa"][f"exact_match[{qtype}]"]
        domains = {e.key: e.extra.get("domain") for e in read_manifest(data / EVAL_SPLITS[split], strict=True)}
        rows = [r for r in load_predictions(eval_dir(plan, split) / "predictions.jsonl") if r["task"] == "cls"]
        for domain, name in (("sound", "sound_accuracy"), ("music", "instrument_accuracy")):
            picked = [r for r in rows if domains.get(r["key"]) == domain]
            if picked:
                row[name] = compute_metrics("cls", [r["prediction"] for r in picked],
                                            [r["references"][0] for r in picked])["accuracy"]
        figures[split] = row
    for split, reference in references.items():
        figures.setdefault(split, {})["whisper_reference_wer"] = reference["asr"]["wer"]
    return figures


def spelling_figures(plan: DemoPlan, model_dir: Path, data: Path) -> dict[str, dict]:
    """Per split with ASR items: what the audio tokens spell by greedy CTC, with no LLM (`asr_ctc_wer` against the
    reference), how much of it the generated transcript keeps (`asr_copy_wer`: the evaluation's predictions
    against the spelling, over the clips whose tokens spell something), and the share of transcripts that are the
    spelling word for word (`asr_spelled_share`, %). Costs a projector pass per clip."""
    from usam.data import AudioDataset, read_manifest
    from usam.evaluation.runner import load_predictions
    from usam.metrics import compute_metrics, copy_fidelity
    from usam.metrics.asr import text_normalizer
    from usam.modeling import USAMModel
    from usam.probes.copy import spell
    from usam.processing import USAMProcessor

    model = USAMModel.from_pretrained(model_dir).eval()
    if model.ctc is None:
        return {}
    processor = USAMProcessor.from_model(model)
    out = {}
    for split in EVAL_SPLITS:
        predictions = eval_dir(plan, split) / "predictions.jsonl"
        if not predictions.exists():
            continue
        said = {r["key"]: r["prediction"] for r in load_predictions(predictions) if r["task"] == "asr"}
        entries = [e for e in read_manifest(data / EVAL_SPLITS[split], strict=True) if e.key in said]
        if not entries:
            continue
        dataset = AudioDataset(entries, strict=True, target_sr=model.config.input_sample_rate)
        spelt = spell(model, processor, [dataset[i].audio for i in range(len(entries))])
        refs = [e.text[0] for e in entries]
        row = {"asr_ctc_wer": compute_metrics("asr", spelt, refs)["wer"]}
        copied = copy_fidelity("asr", [said[e.key] for e in entries], spelt)
        if copied is not None:
            row["asr_copy_wer"] = copied
        # the transcripts that are the spelling word for word (normalised): with joint decoding's rescoring, the
        # clips where the spelling outscored the search's own answer, or the search found it
        norm = text_normalizer()
        same = sum(norm(said[e.key]) == norm(s) for e, s in zip(entries, spelt))
        row["asr_spelled_share"] = 100.0 * same / len(spelt)
        out[split] = row
    return out


def _task_subset(manifest: Path, task: str, limit: int | None = None) -> Path | None:
    """The lines of one task (the first `limit`), written next to the manifest; None when it has none."""
    lines = [line for line in manifest.read_text().splitlines() if line.strip() and json.loads(line)["task"] == task]
    if not lines:
        return None
    subset = manifest.with_name(f"{manifest.stem}.only_{task}{'' if limit is None else limit}.jsonl")
    subset.write_text("\n".join(lines[:limit]) + "\n")
    return subset


def _per_task_subset(manifest: Path, per_task: int) -> Path:
    """The first `per_task` lines of each task, written next to the manifest (its audio paths are relative)."""
    counts: dict[str, int] = {}
    lines = []
    for line in manifest.read_text().splitlines():
        task = json.loads(line)["task"]
        if counts.get(task, 0) < per_task:
            counts[task] = counts.get(task, 0) + 1
            lines.append(line)
    subset = manifest.with_name(f"{manifest.stem}.subset{per_task}.jsonl")
    subset.write_text("\n".join(lines) + "\n")
    return subset


def answer_examples(model_dir: Path, data: Path) -> list[dict]:
    """One answer each about a speech, a sound and a music clip of the test split."""
    from usam.chat import USAMChat
    from usam.data import read_manifest
    from usam.modeling import USAMModel

    chat = USAMChat(USAMModel.from_pretrained(model_dir), max_new_tokens=48)
    wanted = {"speech": "asr", "sound": "aac", "music": "mc"}
    answers = []
    for entry in read_manifest(data / "test.jsonl", strict=True):
        domain = entry.extra.get("domain")
        if wanted.get(domain) == entry.task:
            from usam.tasks import instruction_for

            question = entry.instruction or instruction_for(entry.task, train=False)
            chat.reset()
            answer = chat.ask(entry.audio, question)
            answers.append({"domain": domain, "audio": str(entry.audio), "question": question, "answer": answer,
                            "reference": entry.text[0]})
            del wanted[domain]
        if not wanted:
            break
    return answers


def run(plan: DemoPlan) -> dict:
    from usam.training.plots import score_curve

    plan.out.mkdir(parents=True, exist_ok=True)
    clock = Stopwatch(plan)
    t = time.time()
    data = make_corpus(plan)
    clock.lap("corpus", t)
    t = time.time()
    warm_up_encoders(plan)
    clock.lap("warmup", t)
    t = time.time()
    demo_model = _DemoModel(plan)
    cache = build_cache(plan, data, demo_model.get())
    clock.lap("cache", t)
    t = time.time()
    step_s = {name: None for name, _ in STAGES}
    steps = dict(plan.steps)
    if not plan.quick:
        step_s = time_steps(plan, data, demo_model)
        steps = plan_steps(plan, step_s, clock.elapsed_s())
    demo_model.release()
    clock.lap("timing", t)
    previous = None
    for name, _ in STAGES:
        t = time.time()
        previous = train_stage(plan, data, cache, name, steps[name], previous)
        clock.lap(name, t)
    final = previous
    t = time.time()
    calibration = calibrate_labels(plan, final)
    clock.lap("label_calibration", t)
    t = time.time()
    results = evaluate_test(plan, final, data)
    llm_alone = evaluate_llm_alone(plan, final, data)
    clock.lap("evaluation", t)
    t = time.time()
    references = whisper_reference(plan, data)
    clock.lap("whisper_reference", t)
    t = time.time()
    spelling = spelling_figures(plan, final, data)
    clock.lap("spelling", t)
    t = time.time()
    curve = score_curve([plan.out / name for name, _ in STAGES])
    plots = make_plots(plan, final, curve)
    answers = answer_examples(final, data)
    clock.lap("answers", t)
    main = results.get("test") or {}
    figures = headline(plan, results, data, references)
    for split, row in spelling.items():
        figures.setdefault(split, {}).update(row)
    for split, wer in llm_alone.items():
        figures.setdefault(split, {})["asr_llm_wer"] = wer
    summary = {"model": str(final), "figures": figures,
               "metrics": {split: r.get("metrics") for split, r in results.items() if r},
               "expert_usage": main.get("expert_usage"), "plots": plots, "answers": answers,
               "label_calibration": calibration,
               "steps": steps, "step_s": step_s, "curve": curve, "timings_s": plan.timings,
               "wall_s": round(time.time() - clock.start, 1), "peak_rss_mb": peak_rss_mb()}
    (plan.out / "demo_summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print_summary(plan, summary)
    return summary


def run_seeds(plan: DemoPlan) -> dict:
    """The recipe once per seed (plan.seed, plan.seed + 1, ...), each a whole run in plan.out/seed<k> that reuses
    its own finished work; then the headline figures' mean and range over the seeds, in
    plan.out/seeds_summary.json. On one machine a seed moves the figures by up to ~15 points (docs/demo.md), so
    one run's figures say little alone."""
    import dataclasses

    summaries = {}
    for seed in range(plan.seed, plan.seed + plan.seeds):
        out = plan.out / f"seed{seed}"
        finished = out / "demo_summary.json"
        if finished.exists():
            # a seed whose run finished (a killed --seeds run, or seeds run as separate processes to share the
            # cores) is read, not evaluated again: its summary is what run() returned
            _say(f"seed {seed} ({seed - plan.seed + 1} of {plan.seeds}): {finished} (reused)")
            summaries[seed] = json.loads(finished.read_text())
            continue
        _say(f"seed {seed} ({seed - plan.seed + 1} of {plan.seeds}): {out}")
        one = dataclasses.replace(plan, out=out, seed=seed, seeds=1, timings={})
        summaries[seed] = run(one)
    result = {**aggregate_seeds(summaries), "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "runs": {str(seed): {"out": str(plan.out / f"seed{seed}"), "steps": s.get("steps"),
                                   "wall_s": s.get("wall_s")} for seed, s in summaries.items()}}
    plan.out.mkdir(parents=True, exist_ok=True)
    (plan.out / "seeds_summary.json").write_text(json.dumps(result, indent=2))
    _say(f"target figures over seeds {', '.join(map(str, result['seeds']))}, mean [min, max] (WER, accuracy and "
         f"exact match in %; CIDEr-D on its 0-10 scale): {plan.out / 'seeds_summary.json'}")
    print("\n".join(seeds_table(result)))
    return result


def aggregate_seeds(summaries: dict[int, dict]) -> dict:
    """{seed: demo_summary} -> {"seeds": [...], "figures": {split: {figure: {mean, min, max, range, n, seeds,
    values}}}}. A figure missing from some seeds' summaries (e.g. the real-speech split where its recordings were
    absent) is aggregated over the seeds that have it, and n says how many."""
    seeds = sorted(summaries)
    values: dict[str, dict[str, dict[int, float]]] = {}
    for seed in seeds:
        for split, row in (summaries[seed].get("figures") or {}).items():
            for name, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    values.setdefault(split, {}).setdefault(name, {})[seed] = float(value)
    figures = {}
    for split, row in values.items():
        figures[split] = {}
        for name, by_seed in sorted(row.items()):
            xs = list(by_seed.values())
            figures[split][name] = {"mean": sum(xs) / len(xs), "min": min(xs), "max": max(xs),
                                    "range": max(xs) - min(xs), "n": len(xs), "seeds": list(by_seed), "values": xs}
    return {"seeds": seeds, "figures": figures}


def seeds_table(aggregate: dict) -> list[str]:
    """Lines "figure / split: mean [min, max]", with how many seeds had a figure when not all did."""
    lines = []
    total = len(aggregate["seeds"])
    for split, row in aggregate["figures"].items():
        for name, f in row.items():
            some = f" ({f['n']} of {total} seeds)" if f["n"] < total else ""
            lines.append(f"  {name + ' / ' + split:<36} {f['mean']:8.2f} [{f['min']:.2f}, {f['max']:.2f}]{some}")
    return lines


def machine() -> dict:
    """What the figures were measured on: they differ across CPU instruction sets (docs/demo.md)."""
    import os
    import platform

    cpu = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    return {"cpu_model": cpu or platform.processor() or None, "architecture": platform.machine(),
            "cpu_count": os.cpu_count()}


def peak_rss_mb() -> float:
    """Peak resident memory of this process and of its finished children (corpus tools), in MB."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)  # Linux reports KiB


def make_plots(plan: DemoPlan, model_dir: Path, curve: list[dict]) -> list[str]:
    from usam.evaluation.report import write_report
    from usam.training.plots import plot_run, plot_score_curve

    paths = []
    for name, _ in STAGES:
        paths += [str(p) for p in plot_run(plan.out / name)]
    write_report([plan.out / "eval"], plan.out / "report")
    paths += [str(p) for p in (plan.out / "report").glob("*.png")]
    # quality against minutes over both stages (--eval-points sets the resolution)
    curve_png = plot_score_curve(curve, plan.out / "report" / "quality_curve.png", [name for name, _ in STAGES])
    return paths + ([str(curve_png)] if curve_png and str(curve_png) not in paths else [])


def print_summary(plan: DemoPlan, summary: dict) -> None:
    for split in EVAL_SPLITS:
        table = eval_dir(plan, split) / "metrics.md"
        if table.exists():
            _say(f"results on {EVAL_SPLITS[split]}")
            print(table.read_text())
    figures = summary.get("figures") or {}
    if figures:
        _say("target figures per split (WER, accuracy and exact match in %; CIDEr-D on its 0-10 scale)")
        names = sorted({k for row in figures.values() for k in row})
        splits = list(figures)
        print("  " + f"{'figure':<26}" + "".join(f"{s:>12}" for s in splits))
        for name in names:
            cells = [figures[s].get(name) for s in splits]
            print("  " + f"{name:<26}" + "".join(f"{c:>12.2f}" if isinstance(c, float) else f"{'-':>12}" for c in cells))
    curve = summary.get("curve") or []
    if curve:
        _say("validation during training (what the audio tokens spell by CTC, and in stage 2 a few generated "
             "answers per task; --eval-points sets how often)")
        keys = [k for k in ("asr/wer", "asr/ctc_wer", "asr/copy_wer", "cls/accuracy", "cls/ctc_accuracy",
                            "qa/exact_match",
                            "aac/cider_d", "mc/cider_d", "s2tt/bleu")
                if any(k in r for r in curve)]
        width = max(len(k) for k in keys) + 2
        print("  " + f"{'stage':>5} {'step':>6} {'minutes':>8}" + "".join(f"{k:>{width}}" for k in keys))
        for r in curve:
            print("  " + f"{r['run'] + 1:>5} {r['step']:>6} {r['minutes']:>8.1f}"
                  + "".join(f"{r[k]:>{width}.2f}" if k in r else f"{'-':>{width}}" for k in keys))
    calibration = summary.get("label_calibration")
    if calibration:
        _say(f"ranked labels calibrated on {calibration['clips']} fresh in-domain clips at weight "
             f"{calibration['ctc_weight']:g}: their accuracy {calibration['accuracy']:.1f}% -> "
             f"{calibration['calibrated_accuracy']:.1f}% with the per-label biases")
    if summary.get("expert_usage"):
        _say("expert usage per task (mean routing weight per expert)")
        for task, weights in summary["expert_usage"].items():
            print(f"  {task:>6}: " + "  ".join(f"{w:.3f}" for w in weights))
    _say("answers")
    for a in summary["answers"]:
        print(f"  [{a['domain']}] {a['question']}\n    model: {a['answer']}\n    reference: {a['reference']}")
    _say(f"plots: {', '.join(summary['plots'])}")
    _say(f"done in {summary['wall_s'] / 60:.1f} min (peak memory {summary['peak_rss_mb']:.0f} MB). "
         "Talk to the model:")
    print(f"  usam chat {summary['model']} --audio {summary['answers'][0]['audio'] if summary['answers'] else 'CLIP.wav'}")
    print(f"  usam serve {summary['model']} --host 127.0.0.1 --port 8000")
    print(f"  usam web {summary['model']}")
