"""Build the whole corpus: plan the clips, render them across processes, write manifests and metadata.

Layout of the output folder:
  audio/<split>/<domain>/<clip>.wav   16 kHz mono 16-bit PCM
  <split>.jsonl                       every line of the split (all tasks)
  <split>.<task>.jsonl                the same lines, one file per task
  test_general.jsonl (+ .asr.jsonl)   the hand-written everyday sentences (usam/synth/data/everyday_sentences.txt)
                                      spoken only by held-out voices: ASR generalisation beyond the generator
  test_timbre.jsonl (+ per task)      music clips (mc, cls, qa) played by the held-out General MIDI programs
                                      (`music.held_out_programs`) and sound clips (aac, cls, qa count) made
                                      with their class's held-out synthesis setting (`sound.held_out_timbres`,
                                      sounds.HELD_OUT_TIMBRES): unseen timbres of seen labels, timbre_seen false
  metadata.json                       label sets, voices per split, sizes, seed, config, version
  .usam_synth_done.json               written last; a re-run with the same config hash reuses the folder
Each clip has its own seed (derived from the corpus seed, split, domain and index), so the output does not
depend on the number of processes.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from usam.synth import music, sounds, speech, text
from usam.synth.clips import EXTRA_MAKERS, MAKERS, SPOKEN_DOMAINS, Context
from usam.synth.config import DOMAINS, SPLITS, SynthConfigError, clip_counts, config_hash
from usam.synth.questions import QTYPES
from usam.synth.tools import FESTIVAL_VOICES, check_tools
from usam.tasks import TASKS

GENERATOR_VERSION = "1.2"  # part of the reuse hash: bump when the same config makes other files (1.2: sound timbres)
EXTRA_SPLITS = tuple(EXTRA_MAKERS)  # test_general, test_timbre
DONE_MARKER = ".usam_synth_done.json"
SAMPLE_RATE = 16000


def clip_seed(seed: int, split: str, domain: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{split}:{domain}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _voices(cfg: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    pool = speech.voice_pool(cfg["speech"])
    held = tuple(cfg["speech"].get("held_out_voices") or ())
    unknown = [v for v in held if v not in pool]
    if unknown:
        raise SynthConfigError(f"field 'speech.held_out_voices': {unknown} are not in the voice pool "
                               f"built from 'speech.voices'")
    seen = tuple(v for v in pool if v not in held)
    if not seen:
        raise SynthConfigError("field 'speech.held_out_voices': every voice is held out; train has none")
    return seen, held


def extra_counts(cfg: dict, counts: dict) -> dict[str, dict[str, int]]:
    """Clips of the generalisation splits, fixed by the config (not scaled by hours): test_general (speech,
    when the corpus has spoken clips) and test_timbre (music and sound, each when the corpus has clips of
    that domain, so it never scores a domain train lacks)."""
    out = {split: {d: 0 for d in DOMAINS} for split in EXTRA_SPLITS}
    spoken = any(counts[s].get("speech", 0) or counts[s].get("mix", 0) for s in SPLITS)
    has_music = any(counts[s].get("music", 0) for s in SPLITS)
    has_sound = any(counts[s].get("sound", 0) for s in SPLITS)
    if cfg["speech"].get("held_out_voices") and spoken:
        n = int(cfg["speech"].get("test_general_sentences", 0))
        out["test_general"]["speech"] = min(n, len(text.everyday_test_sentences())) if n > 0 else 0
    if cfg["music"].get("held_out_programs") and has_music:
        out["test_timbre"]["music"] = int(cfg["music"].get("test_timbre_clips", 0))
    if sounds.held_out_classes(cfg.get("sound") or {}) and has_sound:
        out["test_timbre"]["sound"] = int(cfg["sound"].get("test_timbre_sounds", 0))
    return out


def _needs_pool(cfg: dict, counts: dict) -> bool:
    if float(cfg["speech"].get("everyday_fraction", 0.0)) <= 0:
        return False
    return any(counts[s].get("speech", 0) or counts[s].get("mix", 0) for s in SPLITS)


def required_tools(cfg: dict, counts: dict) -> dict:
    """Which programs, festival voices and soundfont this config and these counts need."""
    total = Counter()
    for table in counts.values():
        total.update(table)
    programs, festival_voices, soundfont = [], [], False
    if total["speech"] or total["mix"]:
        pool = speech.voice_pool(cfg["speech"])
        engines = {speech.engine_of(v) for v in pool}
        programs += [p for e, p in (("espeak-ng", "espeak-ng"), ("flite", "flite"), ("festival", "text2wave"))
                     if e in engines]
        programs.append("sox")
        festival_voices = [v.split(":", 1)[1] for v in pool if v.startswith("festival:")]
        unknown = [v for v in festival_voices if v not in FESTIVAL_VOICES]
        if unknown:
            raise SynthConfigError(f"field 'speech.voices.festival': unknown voices {unknown}; "
                                   f"known: {', '.join(FESTIVAL_VOICES)}")
    if total["music"] or (total["mix"] and float(cfg["mix"].get("music_probability", 0.5)) > 0):
        programs.append("fluidsynth")
        soundfont = cfg["music"].get("soundfont")
    return {"programs": programs, "festival_voices": festival_voices, "soundfont": soundfont}


# ---- worker side -------------------------------------------------------------------------------------
_CTX: Context | None = None
_OUT: Path | None = None


def _init_worker(ctx: Context, out_dir: str) -> None:
    global _CTX, _OUT
    _CTX, _OUT = ctx, Path(out_dir)


def _render_clip(job: tuple[str, str, int, int]) -> list[dict]:
    """Render one clip into audio/<split>/<domain>/ and return its manifest lines."""
    split, domain, index, seed = job
    clip_id = f"{split}-{domain}-{index:06d}"
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="usam-synth-") as tmp:
        try:
            if split in EXTRA_MAKERS:
                audio, lines, info = EXTRA_MAKERS[split][domain](split, rng, nrng, _CTX, Path(tmp), index)
            else:
                extra = {"index": index} if domain in SPOKEN_DOMAINS else {}
                audio, lines, info = MAKERS[domain](split, rng, nrng, _CTX, Path(tmp), **extra)
        except Exception as err:
            raise RuntimeError(f"clip {clip_id}: {type(err).__name__}: {err}") from err
    from usam.synth.audio import write_wav

    rel = f"audio/{split}/{domain}/{clip_id}.wav"
    samples = write_wav(_OUT / rel, audio)
    duration = round(samples / SAMPLE_RATE, 4)
    out = []
    for line in lines:
        suffix = line.pop("suffix")
        out.append({"key": f"{clip_id}-{suffix}", "audio": rel, **line, "duration": duration, "domain": domain,
                    "split": split, "clip": clip_id, **info})
    return out


# ---- orchestration -----------------------------------------------------------------------------------
def _write_jsonl(path: Path, lines: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _clear_previous(out: Path) -> None:
    """Remove what an earlier (different or unfinished) run of this generator left; nothing else."""
    (out / DONE_MARKER).unlink(missing_ok=True)
    shutil.rmtree(out / "audio", ignore_errors=True)
    for split in SPLITS + EXTRA_SPLITS:
        for path in [out / f"{split}.jsonl", *(out / f"{split}.{t}.jsonl" for t in TASKS)]:
            path.unlink(missing_ok=True)
    (out / "metadata.json").unlink(missing_ok=True)


def _complete(out: Path, splits=SPLITS) -> bool:
    """Every split manifest is there and every audio file it names exists."""
    for split in splits:
        manifest = out / f"{split}.jsonl"
        if not manifest.is_file():
            return False
        with open(manifest, encoding="utf-8") as f:
            for line in f:
                if not (out / json.loads(line)["audio"]).is_file():
                    return False
    return True


def _metadata(cfg, seed, hours, counts, all_counts, manifests, ctx, tools, pool_info) -> dict:
    sizes = {}
    voices = {}
    for split, lines in manifests.items():
        clips = {}
        for line in lines:
            clips[line["clip"]] = (line["domain"], line["duration"])
        per_domain = {d: {"clips": 0, "hours": 0.0} for d in DOMAINS}
        for domain, duration in clips.values():
            per_domain[domain]["clips"] += 1
            per_domain[domain]["hours"] += duration / 3600.0
        for d in per_domain.values():
            d["hours"] = round(d["hours"], 4)
        sizes[split] = {"clips": len(clips), "lines": len(lines),
                        "hours": round(sum(d["hours"] for d in per_domain.values()), 4),
                        "domains": per_domain, "tasks": dict(sorted(Counter(l["task"] for l in lines).items()))}
        voices[split] = sorted({l["voice"] for l in lines if "voice" in l})
    return {
        "generator": "usam synth", "generator_version": GENERATOR_VERSION, "seed": seed,
        "requested_hours": hours, "sample_rate": SAMPLE_RATE,
        "hours": round(sum(s["hours"] for name, s in sizes.items() if name in SPLITS), 4),  # extra splits apart
        "labels": {"sound_classes": list(sounds.SOUND_CLASSES), "instruments": list(music.INSTRUMENTS),
                   "instrument_programs": {k: list(v) for k, v in music.PROGRAMS.items()},
                   "held_out_programs": sorted(cfg["music"].get("held_out_programs") or ()),
                   "held_out_sound_timbres": {c: sounds.HELD_OUT_TIMBRES[c]
                                              for c in sounds.held_out_classes(cfg.get("sound") or {})},
                   "tempo_classes": list(music.TEMPO_CLASSES),
                   "tempo_bpm": {k: list(v) for k, v in music.TEMPO_CLASSES.items()}, "modes": list(music.MODES),
                   "keys": list(music.KEYS), "qa_types": list(QTYPES),
                   "cls": sorted(set(sounds.SOUND_CLASSES) | set(music.INSTRUMENTS))},
        "voices": {"per_split": voices, "seen_pool": list(ctx.seen_voices),
                   "held_out": list(ctx.held_out_voices)},
        "counts": counts, "extra_counts": {s: c for s, c in all_counts.items() if s not in SPLITS},
        "sizes": sizes, "config": cfg, "tools": tools, "text_pool": pool_info,
        "manifests": {s: f"{s}.jsonl" for s in manifests},
    }


def generate_corpus(out_dir: str | Path, cfg: dict, *, hours: float | None = None, seed: int | None = None,
                    jobs: int | None = None, progress: bool = True) -> dict:
    """Generate (or reuse) the corpus in `out_dir`; returns its metadata (with 'reused': bool)."""
    out = Path(out_dir)
    seed = int(cfg["seed"] if seed is None else seed)
    counts = clip_counts(cfg, hours)
    extra = {s: t for s, t in extra_counts(cfg, counts).items() if any(t.values())}
    needs = required_tools(cfg, {**counts, **extra})
    tools = check_tools(needs["programs"], needs["festival_voices"], needs["soundfont"])
    seen, held = _voices(cfg)
    everyday, pool_info = None, None
    if _needs_pool(cfg, counts):
        pool = text.everyday_pool()
        everyday = text.split_pool(pool, cfg["splits"])
        pool_info = {**text.pool_stats(pool), "per_split": {s: len(v) for s, v in everyday.items()},
                     "sha256": hashlib.sha256("\n".join(pool).encode()).hexdigest()}
    general = tuple(text.everyday_test_sentences()) if "test_general" in extra else ()
    digest = config_hash({"version": GENERATOR_VERSION, "config": cfg, "counts": counts, "seed": seed,
                          "extra": extra, "text_pool": pool_info and pool_info["sha256"],
                          "general": hashlib.sha256("\n".join(general).encode()).hexdigest()})
    marker = out / DONE_MARKER
    if marker.is_file() and (out / "metadata.json").is_file():
        try:
            done = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            done = {}
        if done.get("config_hash") == digest and _complete(out, SPLITS + tuple(extra)):
            meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
            meta["reused"] = True
            return meta
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)

    ctx = Context(cfg=cfg, soundfont=tools.get("soundfont"), seen_voices=seen, held_out_voices=held,
                  everyday=everyday, general=general)
    all_counts = {**counts, **extra}
    plan = [(split, domain, i, clip_seed(seed, split, domain, i))
            for split in all_counts for domain in DOMAINS for i in range(all_counts[split][domain])]
    jobs = max(1, int(jobs or os.cpu_count() or 1))
    from tqdm import tqdm

    bar = tqdm(total=len(plan), desc="usam synth", unit="clip", disable=not progress)
    results: list[list[dict]] = []
    if jobs == 1 or len(plan) <= 1:
        _init_worker(ctx, str(out))
        for job in plan:
            results.append(_render_clip(job))
            bar.update()
    else:
        # fork keeps start-up cheap (the parent has already imported numpy); results come back in plan order.
        mp = multiprocessing.get_context("fork")
        with mp.Pool(jobs, initializer=_init_worker, initargs=(ctx, str(out))) as pool:
            for lines in pool.imap(_render_clip, plan, chunksize=1):
                results.append(lines)
                bar.update()
    bar.close()

    manifests = {split: [] for split in all_counts}
    for lines in results:
        for line in lines:
            manifests[line["split"]].append(line)
    for split, lines in manifests.items():
        _write_jsonl(out / f"{split}.jsonl", lines)
        for task in TASKS:
            task_lines = [l for l in lines if l["task"] == task]
            if task_lines:
                _write_jsonl(out / f"{split}.{task}.jsonl", task_lines)
    meta = _metadata(cfg, seed, hours, counts, all_counts, manifests, ctx, tools, pool_info)
    _write_json(out / "metadata.json", meta)
    _write_json(marker, {"config_hash": digest, "generator_version": GENERATOR_VERSION})
    meta["reused"] = False
    return meta
