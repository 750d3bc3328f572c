"""Checkpoints: atomic, only the trainable weights, the last N kept, and an exact resume.

Layout of `output_dir/checkpoints/step_000120/`:
  <DeepSpeed files>          engine.save_checkpoint(..., exclude_frozen_parameters=True): trainable weights,
                             optimiser (ZeRO partitions per rank) and LR scheduler
  trainer_state.json         step, micro-batch count, sampler position (epoch, batches done), skip counts
  rng_rank<r>.pt             python / numpy / torch (/ cuda) RNG states of rank r, as plain tensors and lists
                             so that they load with torch.load(weights_only=True)
  train_config.yaml          the resolved training config
  model/                     the trained model (save_pretrained): a weights-only restart on another number of
                             ranks (--resume-weights) loads it, and `usam eval` can score it

Atomicity: everything is written into `step_000120.tmp/`, and rank 0 renames the folder to its final name
only after every rank has finished (a barrier). A killed save leaves a `.tmp` folder that resume ignores
and the next save removes. DeepSpeed's own loader calls torch.load(weights_only=False); we swap its
checkpoint engine's `load` for one with weights_only=True plus an allow-list of the few DeepSpeed types
its files hold (see `safe_load`).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
MODEL_DIR = "model"  # the trained model inside a checkpoint (save_pretrained)
_STEP = re.compile(r"^step_(\d+)$")


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path: str | Path) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- RNG states as weights_only-loadable objects ----------------------------------------------------------
def rng_state() -> dict:
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python_version": version, "python_mt": torch.tensor(mt, dtype=torch.int64), "python_gauss": gauss,
        "numpy_name": np_name, "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)), "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss), "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((state["python_version"], tuple(state["python_mt"].tolist()), state["python_gauss"]))
    np.random.set_state((state["numpy_name"], state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# -- DeepSpeed's checkpoint files through weights_only=True ---------------------------------------------
def _deepspeed_safe_globals() -> list:
    """Non-tensor types that DeepSpeed writes into its checkpoint files (found by loading them)."""
    out = []
    try:
        from deepspeed.runtime.fp16.loss_scaler import LossScaler, DynamicLossScaler
        out += [LossScaler, DynamicLossScaler]
    except ImportError:
        pass
    try:
        from deepspeed.runtime.zero.config import ZeroStageEnum
        out.append(ZeroStageEnum)
    except ImportError:
        pass
    try:
        from deepspeed.utils.tensor_fragment import fragment_address
        out.append(fragment_address)
    except ImportError:
        pass
    import argparse
    import collections
    out += [argparse.Namespace, collections.OrderedDict, set, frozenset]
    # Python 3.11.0-3.11.3 pickle members of mixed-in enums (ZeroStageEnum is an int Enum) as getattr(cls, name).
    # Allowed only inside this scoped load: the unpickler still calls nothing but the callables listed here.
    out.append(getattr)
    return out


def safe_load(path, map_location=None):
    """torch.load with weights_only=True, allowing the few DeepSpeed types listed above."""
    with torch.serialization.safe_globals(_deepspeed_safe_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


def make_engine_loads_safe(engine) -> None:
    """Route the DeepSpeed engine's checkpoint reads through `safe_load` (never weights_only=False)."""
    ce = engine.checkpoint_engine
    ce.load = lambda path, map_location=None: safe_load(path, map_location)
    # ZeRO optimisers keep their own reference to the checkpoint engine in some versions
    opt = getattr(engine, "optimizer", None)
    if opt is not None and getattr(opt, "checkpoint_engine", None) is not None and opt.checkpoint_engine is not ce:
        opt.checkpoint_engine.load = ce.load


def save_only_trainable(engine, model) -> None:
    """Make DeepSpeed's checkpoints hold only trainable parameters. Its exclude_frozen_parameters drops frozen
    names from `named_parameters()`, which lists a tied weight once: the alias (e.g. a tied `lm_head.weight`
    of a frozen LLM) would still be written. Keep exactly the trainable names, aliases included."""
    original = engine.module_state_dict
    trainable = {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}

    def module_state_dict(*args, **kwargs):
        state = original(*args, **kwargs)
        if state is None:
            return state
        for key in [k for k in state if k not in trainable]:
            del state[key]
        return state

    engine.module_state_dict = module_state_dict


# -- folders -----------------------------------------------------------------------------------------------
def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (no .tmp), oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP.match(p.name))
             and (p / "trainer_state.json").exists()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """`--resume` with no value (or 'latest'): the newest checkpoint in output_dir; else a checkpoint folder."""
    if resume is None:
        return None
    if resume in ("", "latest", "auto"):
        found = latest_checkpoint(output_dir)
        if found is None and resume != "auto":
            raise FileNotFoundError(f"--resume: no checkpoint in {checkpoint_root(output_dir)}")
        return found
    path = Path(resume)
    if (path / CHECKPOINT_DIR).is_dir():  # a run folder
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"--resume {resume}: no complete checkpoint in {path / CHECKPOINT_DIR}")
        return found
    if not (path / "trainer_state.json").exists():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no trainer_state.json)")
    return path


def save_checkpoint(engine, output_dir: str | Path, step: int, trainer_state: dict, config_text: str,
                    rank: int, keep_last: int, barrier, write_model=None) -> Path:
    """Collective: every rank calls it. Returns the final folder. write_model(folder), called on every rank
    (a collective under ZeRO-3), writes the trained model into folder/MODEL_DIR: what a weights-only restart
    (`--resume-weights`) loads on any number of ranks, and a model `usam eval` can score."""
    root = checkpoint_root(output_dir)
    name = f"step_{step:06d}"
    tmp = root / f"{name}.tmp"
    final = root / name
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    engine.save_checkpoint(str(root), tag=tmp.name, save_latest=False, exclude_frozen_parameters=True)
    atomic_torch_save(rng_state(), tmp / f"rng_rank{rank}.pt")
    if write_model is not None:
        write_model(tmp / MODEL_DIR)
    if rank == 0:
        atomic_write_text(tmp / "trainer_state.json", json.dumps(trainer_state, indent=1))
        atomic_write_text(tmp / "train_config.yaml", config_text)
    barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob("*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    return final


class ResumeError(RuntimeError):
    """A resume request that cannot be carried out as asked (the message says what to do instead)."""


def read_trainer_state(path: Path) -> dict:
    return json.loads((path / "trainer_state.json").read_text())


def checkpoint_world_size(state: dict) -> int:
    """The number of ranks that wrote a checkpoint (one sampler state each)."""
    return int(state.get("world_size", len(state["sampler"])))


def check_same_world_size(path: Path, state: dict, world: int) -> None:
    written = checkpoint_world_size(state)
    if written != world:
        raise ResumeError(
            f"{path}: written by {written} ranks, and this run has {world}. An exact resume needs the same number "
            f"(the optimiser state and the data order are split per rank). To go on with {world}, restart from its "
            f"weights: --resume-weights {path} (the trained weights and the step count, so the learning-rate "
            "schedule continues; a new optimiser state, and the data order from the start of its epoch)")


def load_checkpoint(engine, path: Path, rank: int, world: int | None = None) -> dict:
    """Collective. Restores weights, optimiser and scheduler through DeepSpeed; returns trainer_state.
    The RNG state is restored separately (`restore_rng`), as the very last thing before training goes on.
    world: this run's number of ranks, checked against the checkpoint's first (a clear error, not DeepSpeed's)."""
    if world is not None:
        check_same_world_size(path, read_trainer_state(path), world)
    make_engine_loads_safe(engine)
    loaded, _ = engine.load_checkpoint(str(path.parent), tag=path.name, load_module_strict=False,
                                       load_optimizer_states=True, load_lr_scheduler_states=True)
    if loaded is None:
        raise RuntimeError(f"{path}: DeepSpeed could not load this checkpoint")
    return read_trainer_state(path)


def restore_rng(path: Path, rank: int) -> None:
    file = path / f"rng_rank{rank}.pt"
    if not file.exists():
        raise FileNotFoundError(f"{file}: missing (the checkpoint was written by a run with fewer ranks)")
    set_rng_state(torch.load(file, weights_only=True))
