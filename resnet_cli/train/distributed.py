"""Distributed data parallel training under `torchrun`: no launcher of our own.

`torchrun --nproc-per-node N -m resnet_cli train ...` sets RANK, WORLD_SIZE,
LOCAL_RANK and the rendezvous variables; `from_env()` reads them and joins the
process group: NCCL when training on GPUs, gloo on CPU. Without those
variables (a plain `resnet train`) it returns None and nothing changes.

Conventions (also in the README):
- `train.batch_size` is the GLOBAL batch: each of the N ranks takes batch_size / N.
  A run on 1 GPU and a run on 8 with the same config take the same optimizer steps.
- The learning rate is not rescaled for you: when you raise the global batch, scale
  lr linearly (lr = 0.1 x batch / 256) and add a few epochs of linear warm-up
  (Goyal et al., 2017), e.g. --set train.warmup=linear --set train.warmup_length=...
- Rank 0 alone prints progress and writes the run folder, metrics and checkpoints.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import BadInput


def launched_by_torchrun() -> bool:
    """torchrun (even with one process: TORCHELASTIC_RUN_ID), or another launcher of several ranks."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ["WORLD_SIZE"]) > 1


@dataclass
class DistContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str = "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel over the model; compilation (when on) wraps the result."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids)

    def all_reduce(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Sums across ranks (copies; the inputs are left alone)."""
        out = [t.detach().clone() for t in tensors]
        for t in out:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return out

    def max(self, value: int) -> int:
        """The largest of every rank's `value` (e.g. a stop signal one rank received): all ranks agree."""
        t = torch.tensor(int(value), device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def from_env(device_pref: str = "auto") -> DistContext | None:
    """Join the process group torchrun describes, or return None for a single-process run."""
    if not launched_by_torchrun():
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = device_pref.startswith("cuda") or (device_pref == "auto" and torch.cuda.is_available())
    if want_cuda:
        if not torch.cuda.is_available():
            raise BadInput("--device cuda under torchrun, but no CUDA GPU is available here")
        if local_rank >= torch.cuda.device_count():
            raise BadInput(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) on this node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistContext(rank, world, local_rank, device, backend)
