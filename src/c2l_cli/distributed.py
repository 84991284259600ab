"""torch.distributed helpers: one process per device under ``torchrun``, a plain process otherwise.

``torchrun --nproc_per_node N c2l …`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_from_env` reads them and starts a process group with NCCL on CUDA and
gloo on the CPU. Without them (or with ``WORLD_SIZE=1``) everything here is a no-op, so the same code
runs on one device.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import C2LError, DeviceError, UsageError

if TYPE_CHECKING:
    import torch


@dataclass
class DistInfo:
    """Where this process stands: its rank, the number of processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: "torch.device"
    backend: str | None = None  # None: not distributed
    owns_group: bool = False  # True when init_from_env created the process group (and must destroy it)

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes shared files and prints progress)."""
        return self.rank == 0


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment; ``(0, 1, 0)`` without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise UsageError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {exc}") from exc
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return rank, world, local


def init_from_env(device: "str | torch.device | None" = None, *, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on the CPU) and pick this rank's device.

    *device*: ``auto``/``None`` → ``cuda:LOCAL_RANK`` when CUDA is present, else the CPU. An explicit
    ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun. Returns a :class:`DistInfo`; a single process
    (no torchrun) gets ``world_size=1`` and no process group.
    """
    import torch
    import torch.distributed as dist

    from .devices import resolve_device

    rank, world, local = env_world()
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        if world > 1:
            if local >= torch.cuda.device_count():
                raise DeviceError(
                    f"LOCAL_RANK {local} has no GPU ({torch.cuda.device_count()} visible); "
                    "use --nproc_per_node no larger than the number of GPUs"
                )
            dev = torch.device("cuda", local)
        else:
            dev = torch.device("cuda", torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world == 1:
        return DistInfo(rank=0, world_size=1, local_rank=0, device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    owns = False
    if not dist.is_initialized():
        if not dist.is_available():
            raise C2LError("torch.distributed is not available in this torch build")
        kwargs: dict[str, Any] = {}
        if backend == "nccl":
            kwargs["device_id"] = dev
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
            **kwargs,
        )
        owns = True
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev, backend=backend, owns_group=owns)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if info.distributed:
        import torch.distributed as dist

        if info.backend == "nccl":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def broadcast_object(info: DistInfo, obj: Any, src: int = 0) -> Any:
    """Rank *src*'s *obj* on every rank (a picklable Python value; our own values only)."""
    if not info.distributed:
        return obj
    import torch.distributed as dist

    box = [obj if info.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=info.device if info.backend == "nccl" else None)
    return box[0]


def all_gather_object(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's *obj*, in rank order."""
    if not info.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(info: DistInfo, tensor: "torch.Tensor") -> "torch.Tensor":
    """The mean of *tensor* over ranks (a new tensor; *tensor* itself for one process)."""
    if not info.distributed:
        return tensor
    import torch.distributed as dist

    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def agree(info: DistInfo, error: BaseException | None) -> None:
    """Raise on every rank when any rank hit a known error (so that no rank waits forever at a barrier).

    Each rank passes the error it caught (or None); all ranks then raise the first rank's error
    (known C2LErrors keep their type, so the exit code is the same everywhere).
    """
    if not info.distributed:
        if error is not None:
            raise error
        return
    payload = None if error is None else (type(error).__name__, str(error), isinstance(error, UsageError))
    gathered = all_gather_object(info, payload)
    for rank, item in enumerate(gathered):
        if item is None:
            continue
        if rank == info.rank and error is not None:
            raise error
        name, message, usage = item
        cls = UsageError if usage else C2LError
        raise cls(f"rank {rank}: {message}")


def cleanup(info: DistInfo) -> None:
    """Leave the process group if :func:`init_from_env` created it."""
    if info.owns_group:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        info.owns_group = False
