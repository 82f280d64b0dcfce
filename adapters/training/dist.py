"""Training past one process: ``torchrun`` ranks with DDP (``gloo`` on CPU, ``nccl`` on CUDA).

    ctx = setup(device)          # reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK; one process: world 1
    model = ctx.wrap(model)      # DistributedDataParallel over the LoRA weights (identity alone)
    mine = ctx.shard(indices)    # this rank's rows of the global batch (rank::world)
    n = ctx.sum(local_count)     # all-reduce of a number (token counts, metric sums)

Every rank holds the whole (frozen) base and its LoRA; gradients of the LoRA weights are
averaged across ranks by DDP after each step's last micro-batch. The trainer divides each
rank's loss sum by the *global* count of labelled tokens (pairs for DPO) and multiplies by
the world size, so the averaged gradient is exactly the one-process gradient of the global
batch: same data, same seed, same adapter (up to float summation order).

FSDP (sharding the base itself, for bases that do not fit one GPU) is not implemented: a
base too big for one GPU trains with ``qlora`` (4-bit) instead, which fits 70B-class bases
on one 80 GB GPU. Multi-node: the same command under ``torchrun --nnodes N
--rdzv-endpoint HOST:PORT``; rank 0 writes the job's rows and the adapter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Ctx:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def wrap(self, model: Any) -> Any:
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, rows: list[int]) -> list[int]:
        return rows[self.rank::self.world]

    def sum(self, value: float) -> float:
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return float(t.item())

    def sums(self, values: dict[str, float]) -> dict[str, float]:
        """All-reduce several numbers in one call (same keys, same order on every rank)."""
        if not self.distributed:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist(), strict=True))

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def setup(device: str | None = None) -> Ctx:
    """This process's place: under torchrun, join (or reuse) the process group."""
    want = device if device not in (None, "auto") else ("cuda" if torch.cuda.is_available() else "cpu")
    if want == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda was asked for, but no CUDA device is visible")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ctx(device=torch.device(want))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if want == "cuda" else torch.device("cpu")
    if want == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want == "cuda" else "gloo")
    return Ctx(rank, world, local, dev)
