"""A warm-up from its YAML (configs/warmup/*.yaml), cached: the output folder is reused when it holds a finished
warm-up of the same settings, and written atomically (trained into a temporary folder beside it, then renamed), so
a killed warm-up leaves no half-written encoder that a later run would take for a finished one."""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import yaml

from usam.warmup.music import MusicWarmupSettings, warm_up_music_encoder
from usam.warmup.sound import SoundWarmupSettings, warm_up_sound_encoder

KINDS = {"mert": (MusicWarmupSettings, warm_up_music_encoder), "beats": (SoundWarmupSettings, warm_up_sound_encoder)}
DONE_MARKER = ".usam_warmup_done.json"


def load_warmup_config(path: str | Path, overrides: dict | None = None):
    """-> (encoder kind, settings) from a YAML with `encoder: mert | beats` and the settings' fields."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a warm-up config is a mapping of settings, got {type(raw).__name__}")
    raw.update(overrides or {})
    kind = raw.pop("encoder", None)
    if kind not in KINDS:
        raise ValueError(f"{path}: encoder must be one of {', '.join(KINDS)}, got {kind!r}")
    settings_class = KINDS[kind][0]
    known = {f.name for f in dataclasses.fields(settings_class)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown} for a {kind} warm-up; known: {', '.join(sorted(known))}")
    if "architecture" not in raw:
        raise ValueError(f"{path}: missing field 'architecture' (the encoder's size)")
    return kind, settings_class(**raw)


def _fingerprint(kind: str, settings) -> dict:
    return json.loads(json.dumps({"encoder": kind, **dataclasses.asdict(settings)}))  # tuples -> lists, as saved


def finished(out: str | Path, kind: str, settings) -> bool:
    """Whether `out` holds a finished warm-up of exactly these settings."""
    marker = Path(out) / DONE_MARKER
    return marker.is_file() and json.loads(marker.read_text()) == _fingerprint(kind, settings)


def encoder_path(out: str | Path, kind: str) -> Path:
    """What the model YAML's `name_or_path` takes: the BEATs checkpoint file, or the MERT folder."""
    return Path(out) / "BEATs.pt" if kind == "beats" else Path(out)


def run_warmup(config: str | Path, out: str | Path, overrides: dict | None = None, force: bool = False,
               progress: bool = True) -> tuple[Path, list[dict], bool]:
    """Warm up the encoder `config` describes into `out` -> (encoder path, curve, reused). A finished warm-up of the
    same settings in `out` is reused unless `force`; any other content of `out` is replaced."""
    kind, settings = load_warmup_config(config, overrides)
    out = Path(out)
    if not force and finished(out, kind, settings):
        return encoder_path(out, kind), json.loads((out / "curve.json").read_text()), True
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _, curve = KINDS[kind][1](settings, staging, progress=progress)
        plot_curve(curve, staging / "curve.png", f"{kind} warm-up ({Path(config).name})")
        (staging / DONE_MARKER).write_text(json.dumps(_fingerprint(kind, settings), indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return encoder_path(out, kind), curve, False


def plot_curve(curve: list[dict], path: str | Path, title: str = "warm-up") -> Path:
    """One panel per figure (accuracy, F1 ...): its value on the in-domain and held-out clips against minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({k.split("/", 1)[1] for k in curve[-1] if "/" in k})
    streams = sorted({k.split("/", 1)[0] for k in curve[-1] if "/" in k}, key=lambda s: s != "seen")
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    minutes = [row["minutes"] for row in curve]
    for ax, name in zip(axes.flat, names):
        for stream in streams:
            ax.plot(minutes, [row.get(f"{stream}/{name}") for row in curve], marker="o", label=stream)
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("minutes")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
