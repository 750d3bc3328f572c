"""Process-group set-up and rank helpers; the DeepSpeed engine is built in `usam.training.engine`.

Every run goes through DeepSpeed, a plain single CPU process included (world size 1): one code path for
`python train/train.py`, `deepspeed train/train.py` and `torchrun train/train.py`. When the launcher left
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT unset (plain `python`), they get single-process
defaults here, so nothing has to be exported by hand. The backend is NCCL on GPU and gloo on CPU.

We call torch.distributed / deepspeed.init_distributed directly rather than accelerate or the HF Trainer:
they miscount ranks in CPU-only multi-process runs.
"""
from __future__ import annotations

import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_default_env() -> None:
    """Single-process defaults for the variables torch.distributed reads (only those that are absent)."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"] if os.environ["WORLD_SIZE"] == "1" else "0")
    os.environ.setdefault("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        # a free port for a lone process; several processes must agree, so the launcher sets it for them
        os.environ["MASTER_PORT"] = str(_free_port()) if os.environ["WORLD_SIZE"] == "1" else "29500"


def init_distributed(timeout_s: float = 1800) -> None:
    """Initialise the default process group once (gloo on CPU, nccl on GPU) through DeepSpeed."""
    if dist.is_available() and dist.is_initialized():
        return
    set_default_env()
    import deepspeed

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not torch.cuda.is_available() and os.environ.get("USAM_DS_SHM", "0") != "1":
        # DeepSpeed builds a shared-memory all-reduce op for CPU at start-up (a C++ compile of ~50 s on first
        # use, cached in TORCH_EXTENSIONS_DIR). Training never uses it (only DeepSpeed's inference all-reduce
        # does), so it is switched off; USAM_DS_SHM=1 keeps it.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, timeout=timedelta(seconds=timeout_s),
                               rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def device() -> torch.device:
    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few floats over ranks (float64 on CPU: gloo reduces CPU tensors)."""
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl":
            t = t.to(device())
        dist.all_reduce(t)
    return t.cpu().tolist()


def all_gather_objects(obj) -> list:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def broadcast_object(obj, src: int = 0):
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        # every rank reaches the end before any tears the group down: rank 0 hosts the rendezvous store when
        # launched with env:// variables, and leaving while another rank still talks to it can abort at exit
        dist.barrier()
        try:  # DeepSpeed's own teardown also drops the groups it cached (a later run in this process needs that)
            import deepspeed.comm as ds_comm

            if ds_comm.is_initialized():
                ds_comm.destroy_process_group()
                return
        except ImportError:
            pass
        dist.destroy_process_group()
