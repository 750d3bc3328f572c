"""Batched generation for evaluation: left-padded prompts, deterministic decoding, routing weights per sample.

`BatchGenerator(model, processor, settings)(audios, instructions, max_new_tokens)` -> `GenerationResult`.
The expert usage comes from the forward pass of the prompt inside `model.generate` (the projector runs
once per batch, on the prompt): a forward hook on `model.projector` keeps its routing weights
`(C, N, E)` and the token mask `(C, N)`, so no second forward pass is needed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from usam.tasks import CLS_MODES


@dataclass
class GenerationSettings:
    do_sample: bool = False           # greedy by default (deterministic benchmark numbers)
    num_beams: int = 1
    repetition_penalty: float = 1.0
    max_audio_seconds: float = 240.0  # cap on the padded audio seconds of a batch (len(batch) * longest clip)
    max_batch_size: int | None = 32   # cap on the samples of a batch
    max_new_tokens: int | None = None  # overrides every task's registry value when set
    # joint CTC / LLM decoding (usam/joint_decoding.py) of the samples of ctc_tasks: 0 is the LLM alone
    ctc_weight: float = 0.0
    ctc_candidates: int = 16          # the LLM's best next tokens rescored per step
    ctc_tasks: tuple = ("asr",)
    # with ctc_weight: keep the better of each decoded answer and its audio tokens' greedy CTC spelling under the
    # same joint score (USAMModel.generate's ctc_rescore)
    ctc_rescore: bool = True
    # cls: "generate" writes an answer that is then mapped onto the label set; "rank" scores every label of the
    # set as the answer (model.score_answers, joint with the CTC head when cls is one of ctc_tasks) and takes the
    # best, so every answer is a label
    cls_mode: str = "generate"
    # the CTC weight of ranked labels (cls_mode "rank", cls among ctc_tasks); None: ctc_weight. Ranking scores
    # whole answers of a closed set, so its best weight need not be the transcripts' (choose it on validation
    # clips: scripts/rank_weights.py, scripts/pick_rank_weight.py)
    cls_ctc_weight: float | None = None
    # ranked labels: {label: bias} added to each label's score before the best is taken, fitted on validation clips
    # at the ranking weight (usam/evaluation/calibration.py, `usam calibrate`); a label not in it gets 0
    label_bias: dict | None = None

    def __post_init__(self):
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if not self.max_audio_seconds > 0:
            raise ValueError(f"max_audio_seconds must be > 0, got {self.max_audio_seconds}")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")
        if self.cls_ctc_weight is not None and not 0.0 <= self.cls_ctc_weight <= 1.0:
            raise ValueError(f"cls_ctc_weight must be in [0, 1] or None, got {self.cls_ctc_weight}")
        if self.ctc_candidates < 1:
            raise ValueError(f"ctc_candidates must be >= 1, got {self.ctc_candidates}")
        if self.cls_mode not in CLS_MODES:
            raise ValueError(f"cls_mode must be one of {', '.join(CLS_MODES)}, got {self.cls_mode!r}")
        self.ctc_tasks = tuple(self.ctc_tasks)

    def ranks(self, task: str) -> bool:
        """Whether this task's items are answered by ranking a label set rather than by generation."""
        return task == "cls" and self.cls_mode == "rank"

    def rank_ctc_weight(self, task: str) -> float:
        if task not in self.ctc_tasks:
            return 0.0
        return self.ctc_weight if self.cls_ctc_weight is None else self.cls_ctc_weight

    def generate_kwargs(self) -> dict:
        kwargs = {"do_sample": self.do_sample, "num_beams": self.num_beams}
        if self.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs

    def joint_kwargs(self, tasks: list[str] | None, n_samples: int) -> dict:
        """model.generate's joint-decoding arguments for a batch of these tasks (None: every sample)."""
        if self.ctc_weight == 0:
            return {}
        chosen = [True] * n_samples if tasks is None else [t in self.ctc_tasks for t in tasks]
        if not any(chosen):
            return {}
        return {"ctc_weight": self.ctc_weight, "ctc_candidates": self.ctc_candidates,
                "ctc_samples": torch.tensor(chosen), "ctc_rescore": self.ctc_rescore}

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["ctc_tasks"] = list(self.ctc_tasks)
        return out


@dataclass
class GenerationResult:
    texts: list[str]                 # decoded, special tokens skipped
    new_tokens: list[int]            # tokens generated per sample, up to and including the end-of-turn token
    finished: list[bool]             # False: the sample stopped at max_new_tokens without an end token
    expert_sums: np.ndarray | None   # (B, E) routing weights summed over the sample's valid audio tokens
    audio_tokens: list[int]          # valid audio tokens per sample


def end_token_ids(tokenizer) -> set[int]:
    """The ids that end an answer: EOS and ChatML's <|im_end|> (the ones USAMModel.generate stops at)."""
    ids = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if im_end not in (None, tokenizer.unk_token_id):
        ids.add(im_end)
    return {i for i in ids if i is not None}


class BatchGenerator:
    def __init__(self, model, processor, settings: GenerationSettings | None = None):
        self.model = model
        self.processor = processor
        self.settings = settings or GenerationSettings()
        self.end_ids = end_token_ids(processor.tokenizer)
        self._captured: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._answers: dict[tuple, list[list[int]]] = {}
        self._hook = model.projector.register_forward_hook(self._capture)

    def _capture(self, module, args, output) -> None:
        mask = args[1]  # (C, N) valid audio tokens
        self._captured.append((output.weights.detach().float(), mask.detach()))

    def close(self) -> None:
        self._hook.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @torch.no_grad()
    def __call__(self, audios: list[np.ndarray], instructions: list[str], max_new_tokens: int,
                 tasks: list[str] | None = None) -> GenerationResult:
        """tasks: each sample's task, which picks the samples of joint CTC decoding (settings.ctc_tasks); None with
        ctc_weight > 0: every sample."""
        batch = self.processor(audios=audios, instructions=instructions)  # left padded, generation prompt
        batch = batch.to(self.model.device)
        self._captured.clear()
        joint = self.settings.joint_kwargs(tasks, len(audios))
        ids = self.model.generate(**batch, max_new_tokens=max_new_tokens, **self.settings.generate_kwargs(), **joint)
        texts = self.processor.batch_decode(ids)
        new_tokens, finished = [], []
        for row in ids.tolist():
            end = next((i for i, t in enumerate(row) if t in self.end_ids), None)
            finished.append(end is not None)
            new_tokens.append(len(row) if end is None else end + 1)
        expert_sums, audio_tokens = self._routing(batch, len(audios))
        return GenerationResult(texts, new_tokens, finished, expert_sums, audio_tokens)

    @torch.no_grad()
    def rank(self, audios: list[np.ndarray], instructions: list[str], labels: list[str], task: str = "cls"
             ) -> GenerationResult:
        """Answer each sample with the best of a closed label set (model.score_answers, joint with the CTC head at
        settings.rank_ctc_weight(task)); each label is scored as the answer the model was trained to write."""
        if not labels:
            raise ValueError("rank needs a non-empty label set")
        answers = self._answer_ids(labels)
        batch = self.processor(audios=audios, instructions=instructions).to(self.model.device)
        self._captured.clear()
        scores = self.model.score_answers(**batch, answers=answers, ctc_weight=self.settings.rank_ctc_weight(task))
        if self.settings.label_bias:
            bias = self.settings.label_bias
            scores = scores + torch.tensor([float(bias.get(label, 0.0)) for label in labels], device=scores.device)
        best = scores.argmax(-1).tolist()
        expert_sums, audio_tokens = self._routing(batch, len(audios))
        return GenerationResult([labels[k] for k in best], [len(answers[k]) for k in best], [True] * len(audios),
                                expert_sums, audio_tokens)

    def _answer_ids(self, labels: list[str]) -> list[list[int]]:
        cached = self._answers.get(tuple(labels))
        if cached is None:
            cached = self._answers[tuple(labels)] = [self.processor.answer_token_ids(label) for label in labels]
        return cached

    def _routing(self, batch, n_samples: int):
        if not self._captured:
            return None, [0] * n_samples
        weights, mask = self._captured[0]  # the prompt's pass: (C, N, E), (C, N)
        owner = batch.get("audio_sample_index")
        owner = torch.arange(weights.shape[0]) if owner is None else owner.cpu()
        sums = torch.zeros(n_samples, weights.shape[-1])
        counts = torch.zeros(n_samples, dtype=torch.long)
        masked = (weights * mask[..., None]).sum(1).cpu()  # (C, E); weights are already 0 on invalid tokens
        sums.index_add_(0, owner, masked)
        counts.index_add_(0, owner, mask.sum(1).cpu().long())
        return sums.numpy(), counts.tolist()
