"""Label calibration of ranked classification: one additive bias per label, fitted on labelled validation clips.

Ranking a closed label set (`GenerationSettings.cls_mode = "rank"`) takes the label with the best score
(1 - w) * log p_LLM + w * log p_CTC. A small model's scores carry a prior of their own: one seed's model favours
"chirp" over "beep" on every clip, another the reverse, though the audio separates the two. Adding a per-label
bias b_k fitted on in-domain validation clips removes that prior. This is the intercept-only form of vector
scaling (multinomial logistic regression with the scores as fixed logits), so it changes which label wins but
not the model:

    b = argmin_b  mean_i CE(scores_i + b, y_i) + l2 * |b|^2

The small l2 pins the free common shift (at the optimum sum_k b_k = 0, since the CE's gradient sums to zero over
labels) and keeps a label with few validation clips near 0. A label absent from the calibration gets 0.

`fit_label_bias(scores, targets)` fits; `LabelCalibration` is the fitted result, saved as `label_calibration.json`
in the model folder (`usam calibrate`), where `usam eval --label-calibration auto` finds it; `label_scores`
scores a manifest's classification clips against a label set.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

CALIBRATION_FILE = "label_calibration.json"
DEFAULT_L2 = 1e-3
CALIBRATION_CHOICES = ("auto", "none")  # or a path


@dataclass
class LabelCalibration:
    labels: list[str]
    bias: list[float]           # one per label, added to its ranking score
    ctc_weight: float           # the ranking weight the bias was fitted at (another weight needs another fit)
    items: int = 0              # calibration clips
    accuracy: float | None = None             # % on the calibration clips, before ...
    calibrated_accuracy: float | None = None  # ... and after the bias (an in-sample figure)
    l2: float = DEFAULT_L2
    manifest: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.labels) != len(self.bias):
            raise ValueError(f"label calibration: {len(self.labels)} labels but {len(self.bias)} biases")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("label calibration: repeated labels")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"label calibration: ctc_weight must be in [0, 1], got {self.ctc_weight}")

    def as_bias(self) -> dict[str, float]:
        """{label: bias}, what GenerationSettings.label_bias takes."""
        return dict(zip(self.labels, self.bias))

    def save(self, path: str | Path) -> Path:
        from usam.training.checkpoint import atomic_write_text

        path = Path(path)
        atomic_write_text(path, json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LabelCalibration":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no label calibration file (usam calibrate writes one)") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a label calibration (bad JSON: {err})") from None
        missing = [k for k in ("labels", "bias", "ctc_weight") if not isinstance(data, dict) or k not in data]
        if missing:
            raise ValueError(f"{path}: not a label calibration (missing {', '.join(missing) or 'everything'})")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def fit_label_bias(scores: torch.Tensor, targets: torch.Tensor, l2: float = DEFAULT_L2) -> torch.Tensor:
    """scores (N, K) ranking scores, targets (N,) label indices -> bias (K,) minimising the mean cross-entropy of
    scores + bias plus l2 * |bias|^2 (convex; L-BFGS, in float64)."""
    if scores.ndim != 2 or targets.shape != scores.shape[:1] or scores.shape[0] == 0:
        raise ValueError(f"fit_label_bias needs scores (N, K) and targets (N,), N > 0; got {tuple(scores.shape)} "
                         f"and {tuple(targets.shape)}")
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0 (it pins the biases' free common shift), got {l2}")
    scores, targets = scores.detach().double(), targets.long()
    winnable = scores.gather(1, targets[:, None])[:, 0].isfinite()
    if not winnable.any():
        raise ValueError("fit_label_bias: every clip's own label scores -inf")
    scores, targets = scores[winnable], targets[winnable]
    bias = torch.zeros(scores.shape[1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([bias], max_iter=500, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(scores + bias, targets) + l2 * bias.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return bias.detach().float()


def label_scores(model, processor, entries, labels: list[str], ctc_weight: float, batch_size: int = 8,
                 progress: bool = True) -> torch.Tensor:
    """(N, K) ranking scores of each classification entry's clip against `labels` at `ctc_weight`, with the fixed
    evaluation prompt (what `usam eval --cls-mode rank` ranks)."""
    from tqdm.auto import tqdm

    from usam.data import AudioDataset
    from usam.tasks import EVAL_INSTRUCTIONS

    answers = [processor.answer_token_ids(label) for label in labels]
    dataset = AudioDataset(entries, strict=True, target_sr=processor.sampling_rate)
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, len(entries), batch_size), desc="scoring labels", unit="batch",
                          disable=not progress):
            clips = [dataset[i].audio for i in range(start, min(start + batch_size, len(entries)))]
            batch = processor(clips, [EVAL_INSTRUCTIONS["cls"]] * len(clips)).to(model.device)
            out.append(model.score_answers(**batch, answers=answers, ctc_weight=ctc_weight).float().cpu())
    return torch.cat(out)


def calibrate(model_dir: str | Path, manifest: str | Path, ctc_weight: float, labels: list[str] | None = None,
              l2: float = DEFAULT_L2, batch_size: int = 8, progress: bool = True) -> LabelCalibration:
    """Fit the label biases of the model in `model_dir` on the cls items of `manifest` (labelled, in-domain, not
    the test set). labels None: the items' distinct references."""
    from usam import USAMModel, USAMProcessor
    from usam.data import read_manifest
    from usam.errors import DataError

    entries = [e for e in read_manifest(manifest, strict=True) if e.task == "cls"]
    if not entries:
        raise DataError("missing_field", "no cls items to calibrate on", file=str(manifest))
    labels = sorted({e.text[0] for e in entries}) if labels is None else list(labels)
    unknown = sorted({e.text[0] for e in entries} - set(labels))
    if unknown:
        raise ValueError(f"{manifest}: references outside the label set: {', '.join(unknown)}")
    model = USAMModel.from_pretrained(model_dir).eval()
    processor = USAMProcessor.from_pretrained(model_dir)
    scores = label_scores(model, processor, entries, labels, ctc_weight, batch_size, progress)
    targets = torch.tensor([labels.index(e.text[0]) for e in entries])
    bias = fit_label_bias(scores, targets, l2)

    def accuracy(s):
        return round(100.0 * float((s.argmax(-1) == targets).float().mean()), 2)

    return LabelCalibration(labels=labels, bias=[round(float(b), 6) for b in bias], ctc_weight=ctc_weight,
                            items=len(entries), accuracy=accuracy(scores), calibrated_accuracy=accuracy(scores + bias),
                            l2=l2, manifest=str(manifest))


def resolve_label_calibration(model_dir: str | Path, choice: str | None, ctc_weight: float
                              ) -> LabelCalibration | None:
    """choice "none" (or None): no calibration; "auto": the model folder's label_calibration.json when there is
    one; else a path. A calibration fitted at another ranking weight is refused, naming both weights."""
    if choice in (None, "none"):
        return None
    path = Path(model_dir, CALIBRATION_FILE) if choice == "auto" else Path(choice)
    if choice == "auto" and not path.is_file():
        return None
    calibration = LabelCalibration.load(path)
    if abs(calibration.ctc_weight - ctc_weight) > 1e-9:
        raise ValueError(f"{path}: the label biases were fitted at ranking CTC weight {calibration.ctc_weight:g}, "
                         f"but this run ranks at {ctc_weight:g}; refit them (usam calibrate --ctc-weight "
                         f"{ctc_weight:g}) or pass --label-calibration none")
    return calibration


def apply_label_calibration(settings, model_dir: str | Path, choice: str | None) -> LabelCalibration | None:
    """Set settings.label_bias (a GenerationSettings) from the calibration `choice` resolves for the model in
    model_dir at the settings' own ranking weight; nothing when the settings do not rank labels. Returns it."""
    if settings.cls_mode != "rank":
        return None
    calibration = resolve_label_calibration(model_dir, choice, settings.rank_ctc_weight("cls"))
    settings.label_bias = calibration.as_bias() if calibration is not None else None
    return calibration


__all__ = ["CALIBRATION_FILE", "CALIBRATION_CHOICES", "DEFAULT_L2", "LabelCalibration", "fit_label_bias",
           "label_scores", "calibrate", "resolve_label_calibration", "apply_label_calibration"]
