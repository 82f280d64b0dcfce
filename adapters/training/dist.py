"""Training past one process: ``torchrun`` ranks with DDP or FSDP (``gloo`` on CPU, ``nccl`` on CUDA).

    ctx = setup(device, strategy)  # reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK; one process: world 1
    model = ctx.wrap(model)        # DDP over the LoRA weights, or FSDP shards (identity alone)
    with ctx.no_sync(model): ...   # a micro-batch whose gradients are not reduced yet
    mine = ctx.shard(indices)      # this rank's rows of the global batch (rank::world)
    n = ctx.sum(local_count)       # all-reduce of a number (token counts, metric sums)
    state = ctx.lora_state(model)  # the trainable weights, whole, on every rank (a collective)

``ddp`` (the default): every rank holds the whole frozen base and its LoRA; gradients of the
LoRA weights are averaged across ranks after each step's last micro-batch. ``fsdp``: the
base is too big for one device, so every decoder layer (the model's ``_no_split_modules``)
and then the root are sharded with PyTorch's ``fully_shard`` (FSDP2): each rank keeps
1/world of every weight (frozen base and LoRA alike; the optimizer state only for its
shard), a layer's weights are gathered just before its forward and backward and freed
after. Either way the trainer divides each rank's loss sum by the *global* count of
labelled tokens (pairs for DPO) and multiplies by the world size, so the averaged gradient
is exactly the one-process gradient of the global batch: same data, same seed, same
adapter (up to float summation order), which ``tests/training/test_distributed.py`` checks
for both.

Multi-node: the same command under ``torchrun --nnodes N --rdzv-endpoint HOST:PORT``; rank 0
writes the job's rows and the adapter. A base too big even for FSDP's shards trains with
``qlora`` (4-bit, one GPU).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
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
    strategy: str = "ddp"  # "ddp" | "fsdp"

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def sharded(self) -> bool:
        """Weights are FSDP shards: every forward is a collective (all ranks run it)."""
        return self.distributed and self.strategy == "fsdp"

    def wrap(self, model: Any) -> Any:
        """DDP's wrapper, or ``model`` itself sharded in place (build the optimizer after this)."""
        if not self.distributed:
            return model
        if self.sharded:
            return _fully_shard(model, self.device)
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    @contextmanager
    def no_sync(self, wrapped: Any) -> Iterator[None]:
        """Gradients accumulate locally inside; the next pass outside reduces them all."""
        if not self.distributed:
            yield
        elif self.sharded:
            wrapped.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                wrapped.set_requires_gradient_sync(True)
        else:
            with wrapped.no_sync():
                yield

    def lora_state(self, model: Any) -> dict[str, torch.Tensor]:
        """The trainable weights by name (as ``model.state_dict()`` names them), whole and on the CPU.
        Sharded, every rank must call it (each weight's shards are gathered)."""
        out = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                full = p.full_tensor() if hasattr(p, "full_tensor") else p
                out[name] = full.detach().to("cpu", copy=True)
        return out

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


def setup(device: str | None = None, strategy: str | None = None) -> Ctx:
    """This process's place: under torchrun, join (or reuse) the process group."""
    strategy = strategy or "ddp"
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"strategy must be ddp or fsdp, not {strategy!r}")
    want = device if device not in (None, "auto") else ("cuda" if torch.cuda.is_available() else "cpu")
    if want == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda was asked for, but no CUDA device is visible")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ctx(device=torch.device(want), strategy=strategy)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if want == "cuda" else torch.device("cpu")
    if want == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want == "cuda" else "gloo")
    return Ctx(rank, world, local, dev, strategy)


def _fully_shard(model: Any, device: torch.device) -> Any:
    """FSDP2 over ``model`` in place: each decoder layer its own unit (gathered one at a time),
    then the root (embeddings, final norm, head). Frozen bf16 base and fp32 LoRA share a unit:
    only the LoRA weights have gradients to reduce, so their dtypes never mix."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    layers = set(getattr(model, "_no_split_modules", None) or [])
    if not layers:  # peft's wrapper: ask the transformers model inside
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        layers = set(getattr(inner, "_no_split_modules", None) or [])
    units = [m for m in model.modules() if type(m).__name__ in layers]
    if not units:
        raise ValueError(f"fsdp: no decoder layers found in {type(model).__name__} (its _no_split_modules)")
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model
