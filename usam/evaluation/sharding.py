"""Sharding an evaluation over ranks: `torchrun --nproc-per-node R ...` (or RANK/WORLD_SIZE/MASTER_ADDR/
MASTER_PORT set by hand). Each rank generates for its own batches and writes its shard file; after a
barrier, rank 0 reads every shard and merges them.

The process group is always gloo: the ranks only exchange a barrier and a few small Python objects (the
error status of each rank), never tensors, so gloo serves CPU and GPU runs alike. Shard files assume that
all ranks see the same output folder (one machine, or a shared file system).

A rank that fails (e.g. a bad audio file under strict checks) must not leave the others waiting at the
barrier forever: every rank reports its status with `all_gather_object`, and if any rank failed, every rank
raises that rank's error (a DataError stays a DataError, with its file, line and reason).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from usam.errors import DataError

SHARD_DIR = ".shards"


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when this module created the process group (and must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistContext:
    """Join the process group that torchrun's environment describes (gloo); a plain run is rank 0 of 1."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    dist.init_process_group(backend="gloo", rank=rank, world_size=world)
    return DistContext(rank, world, int(os.environ.get("LOCAL_RANK", rank)), owns_group=True)


def close_distributed(ctx: DistContext) -> None:
    import torch.distributed as dist

    if ctx.owns_group and dist.is_initialized():
        # every rank reaches the teardown before any tears its connections down: a rank whose peer had already
        # exited could abort in gloo's teardown (std::terminate), about one 2-rank run in three here
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()


def _describe(err: BaseException) -> dict:
    if isinstance(err, DataError):
        return {"data_error": err.as_dict()}
    return {"type": type(err).__name__, "message": str(err)}


def raise_if_any_failed(ctx: DistContext, error: BaseException | None) -> None:
    """Collective: every rank passes its own error (or None); if any rank failed, all ranks raise.

    On one rank the error is re-raised as it is. On several, the lowest failing rank's error is raised
    everywhere (a DataError rebuilt with its file, line, key and reason; anything else as RuntimeError).
    """
    if not ctx.distributed:
        if error is not None:
            raise error
        return
    import torch.distributed as dist

    statuses: list = [None] * ctx.world_size
    dist.all_gather_object(statuses, None if error is None else _describe(error))
    for rank, status in enumerate(statuses):
        if status is None:
            continue
        if rank == ctx.rank and error is not None:
            raise error
        if "data_error" in status:
            d = status["data_error"]
            raise DataError(d["reason"], d["message"], file=d["file"], line=d["line"], field=d["field"],
                            key=d["key"])
        raise RuntimeError(f"evaluation failed on rank {rank}: {status['type']}: {status['message']}")


def shard_path(out_dir: str | Path, rank: int, world_size: int) -> Path:
    return Path(out_dir) / SHARD_DIR / f"rank{rank:03d}-of-{world_size:03d}.jsonl"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Atomic: a temporary file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_shard(out_dir: str | Path, ctx: DistContext, rows: list[dict]) -> Path:
    path = shard_path(out_dir, ctx.rank, ctx.world_size)
    write_jsonl(path, rows)
    return path


def merge_shards(out_dir: str | Path, world_size: int, *, remove: bool = True) -> list[dict]:
    """Rank 0, after the barrier: all shards' rows, in shard order. Removes the shard files when asked."""
    rows: list[dict] = []
    paths = [shard_path(out_dir, r, world_size) for r in range(world_size)]
    for path in paths:
        if not path.is_file():
            raise RuntimeError(f"{path}: shard missing after the barrier (do all ranks see the same --out folder?)")
        rows.extend(read_jsonl(path))
    if remove:
        for path in paths:
            path.unlink()
        try:
            paths[0].parent.rmdir()
        except OSError:
            pass
    return rows
