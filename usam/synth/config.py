"""Corpus configuration: YAML loading (with `base:` inheritance), validation and clip counts."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import yaml

DOMAINS = ("speech", "sound", "music", "mix")
SPLITS = ("train", "valid", "test")
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synth" / "default.yaml"


class SynthConfigError(ValueError):
    """A bad corpus config; the message names the file and the field."""


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: str | Path | None = None) -> dict:
    """Read a corpus config; `base: other.yaml` (relative to the file) is loaded first and overridden."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise SynthConfigError(f"{path}: config file does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise SynthConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise SynthConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        data = _merge(load_config(path.parent / base), data)
    validate(data, path)
    return data


def _need(cfg: dict, dotted: str, source) -> object:
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SynthConfigError(f"{source}: field '{dotted}' is missing")
        node = node[part]
    return node


def _fractions(cfg: dict, field: str, names, source) -> None:
    table = _need(cfg, field, source)
    if not isinstance(table, dict) or set(table) - set(names):
        raise SynthConfigError(f"{source}: field '{field}' must map some of {list(names)} to fractions")
    for name, value in table.items():
        if not isinstance(value, (int, float)) or value < 0:
            raise SynthConfigError(f"{source}: field '{field}.{name}' must be a number >= 0, got {value!r}")
    if sum(table.values()) <= 0:
        raise SynthConfigError(f"{source}: field '{field}' sums to 0")


def validate(cfg: dict, source="config") -> None:
    _need(cfg, "seed", source)
    _fractions(cfg, "splits", SPLITS, source)
    _fractions(cfg, "domains", DOMAINS, source)
    for domain in DOMAINS:
        if cfg["domains"].get(domain, 0) > 0:
            value = _need(cfg, f"mean_seconds.{domain}", source)
            if not isinstance(value, (int, float)) or value <= 0:
                raise SynthConfigError(f"{source}: field 'mean_seconds.{domain}' must be > 0, got {value!r}")
    for field in ("speech.speed_range", "speech.pitch_semitones", "speech.voices", "speech.held_out_voices",
                  "music.seconds", "mix.snr_db"):
        _need(cfg, field, source)
    weights = cfg["speech"].get("engine_weights", {})
    if not isinstance(weights, dict) or set(weights) - {"espeak-ng", "flite", "festival"} or any(
            not isinstance(w, (int, float)) or w < 0 for w in weights.values()):
        raise SynthConfigError(f"{source}: field 'speech.engine_weights' must map espeak-ng/flite/festival "
                               f"to numbers >= 0, got {weights!r}")
    fraction = cfg["speech"].get("everyday_fraction", 0.0)
    if not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise SynthConfigError(f"{source}: field 'speech.everyday_fraction' must be a number in [0, 1], "
                               f"got {fraction!r}")
    for field, section, name in (("speech.test_general_sentences", "speech", "test_general_sentences"),
                                 ("music.test_timbre_clips", "music", "test_timbre_clips"),
                                 ("sound.test_timbre_sounds", "sound", "test_timbre_sounds")):
        n = (cfg.get(section) or {}).get(name, 0)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise SynthConfigError(f"{source}: field '{field}' must be an int >= 0, got {n!r}")
    held = cfg["music"].get("held_out_programs") or []
    if not isinstance(held, list) or not all(isinstance(p, int) for p in held):
        raise SynthConfigError(f"{source}: field 'music.held_out_programs' must be a list of GM program numbers")
    from usam.synth.music import check_held_out
    from usam.synth.sounds import SOUND_CLASSES, check_held_out_timbres

    sound = cfg.get("sound") or {}
    held_timbres = sound.get("held_out_timbres")
    try:
        check_held_out(held)
        check_held_out_timbres([] if held_timbres is None else held_timbres, sound.get("classes", SOUND_CLASSES))
    except ValueError as err:
        raise SynthConfigError(f"{source}: {err}") from err
    counts = cfg.get("counts")
    if counts is not None:
        for split, table in counts.items():
            if split not in SPLITS or not isinstance(table, dict) or set(table) - set(DOMAINS):
                raise SynthConfigError(f"{source}: field 'counts.{split}' must map domains {DOMAINS} to counts "
                                       f"for a split in {SPLITS}")
            for domain, n in table.items():
                if not isinstance(n, int) or n < 0:
                    raise SynthConfigError(f"{source}: field 'counts.{split}.{domain}' must be an int >= 0")


def clip_counts(cfg: dict, hours: float | None) -> dict[str, dict[str, int]]:
    """split -> domain -> number of clips: explicit `counts` when hours is None, else scaled to `hours`."""
    if hours is None and cfg.get("counts") is not None:
        return {s: {d: int(cfg["counts"].get(s, {}).get(d, 0)) for d in DOMAINS} for s in SPLITS}
    hours = float(cfg.get("hours", 1.0) if hours is None else hours)
    if hours <= 0:
        raise SynthConfigError(f"hours must be > 0, got {hours}")
    split_total = sum(cfg["splits"].values())
    domain_total = sum(cfg["domains"].values())
    out = {}
    for split in SPLITS:
        out[split] = {}
        for domain in DOMAINS:
            share = cfg["splits"].get(split, 0) / split_total * cfg["domains"].get(domain, 0) / domain_total
            seconds = hours * 3600.0 * share
            out[split][domain] = 0 if share == 0 else max(1, round(seconds / cfg["mean_seconds"][domain]))
    return out


def config_hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
