"""The process's place in the job: rendezvous values read once from the environment that
torchrun (or a pod) provides, with single-process defaults for a plain `python -m`."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rendezvous:
    rank: int
    localRank: int
    world: int
    masterAddr: str
    masterPort: int

    @property
    def isMain(self) -> bool:
        """The process that writes progress, metrics and markers."""
        return self.rank == 0

    @property
    def isNodeMain(self) -> bool:
        """The process that fetches and uploads for its node."""
        return self.localRank == 0

    def env(self) -> dict[str, str]:
        """What torch.distributed's env:// initialisation reads."""
        return {
            "RANK": str(self.rank),
            "LOCAL_RANK": str(self.localRank),
            "WORLD_SIZE": str(self.world),
            "MASTER_ADDR": self.masterAddr,
            "MASTER_PORT": str(self.masterPort),
        }


def rendezvous(environ: Mapping[str, str]) -> Rendezvous:
    """torchrun's variables, or one process on a free loopback port when they are absent."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return Rendezvous(
            rank=int(environ["RANK"]),
            localRank=int(environ.get("LOCAL_RANK", "0")),
            world=int(environ["WORLD_SIZE"]),
            masterAddr=environ.get("MASTER_ADDR", "127.0.0.1"),
            masterPort=int(environ.get("MASTER_PORT", "29500")),
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return Rendezvous(0, 0, 1, "127.0.0.1", port)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's value of a small picklable object, on every rank."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: list[float], group: Any = None) -> list[float]:
    """Element-wise sum over the ranks of `group` (all ranks by default), in float64."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized():
        if dist.get_backend() == "nccl":  # NCCL reduces CUDA tensors only
            t = t.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(t, group=group)
    return t.cpu().tolist()
