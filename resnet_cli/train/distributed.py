"""Distributed data parallel training under `torchrun`: no launcher of our own.

`torchrun --nproc-per-node N -m resnet_cli train ...` sets RANK, WORLD_SIZE,
LOCAL_RANK and the rendezvous variables; `from_env()` reads them and joins the
process group: NCCL when training on GPUs, gloo on CPU. Without those
variables (a plain `resnet train`) it returns a `SingleProcess`: the same
interface with one rank, so the training code has one path for both.

Conventions (also in docs/scaling.md):
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
class SingleProcess:
    """A plain `resnet train`: the same interface as a torchrun process, with one rank and nothing to agree on.

    Its collective operations return their inputs, `wrap` returns the model, `barrier` does nothing."""

    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return True

    def describe(self, batch_size: int) -> str:
        """The line that says how the run is spread over processes ("" for one process)."""
        return ""

    def sync_batchnorm(self, model: torch.nn.Module) -> torch.nn.Module:
        return model  # one process: BatchNorm already sees the whole batch

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def eval_forward(self, model: torch.nn.Module, step_forward):
        """What evaluation calls: the training step's (compiled) forward."""
        return step_forward

    def all_reduce(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(tensors)

    def max(self, value: int) -> int:
        return int(value)

    def all_true(self, flag: bool) -> bool:
        return bool(flag)

    def broadcast(self, obj):
        """Rank 0's `obj` (picklable), on every rank."""
        return obj

    def stop_agreed(self, signal: int, at_interval: bool) -> int:
        """The stop signal every rank acts on now: one process stops at the step it received it."""
        return signal

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class TorchrunProcess:
    """One rank of a torchrun group: collectives over the process group, DDP around the model."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str = "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self, batch_size: int) -> str:
        return (f"torchrun: {self.world} process(es), {self.backend}, global batch {batch_size} "
                f"({batch_size // self.world} per process)")

    def sync_batchnorm(self, model: torch.nn.Module) -> torch.nn.Module:
        """train.sync_bn: BatchNorm over the global batch."""
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel over the model; compilation (when on) wraps the result."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids)

    def eval_forward(self, model: torch.nn.Module, step_forward):
        """What evaluation calls: the bare module, eagerly, outside DDP's hooks."""
        return model

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

    def all_true(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on every rank (a step every rank may take, or none does)."""
        return not self.max(int(not flag))

    def broadcast(self, obj):
        """Rank 0's `obj` (picklable), on every rank: what rank 0 decided, the others follow."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def stop_agreed(self, signal: int, at_interval: bool) -> int:
        """Ranks agree on a stop at log intervals only (one collective there), so all stop at the same step."""
        return self.max(signal) if at_interval else 0

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


Process = SingleProcess | TorchrunProcess


def from_env(device_pref: str = "auto") -> Process:
    """Join the process group torchrun describes, or a single process on the `run.device` device."""
    if not launched_by_torchrun():
        from ..device import resolve_device

        return SingleProcess(resolve_device(device_pref))
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
        timeout = datetime.timedelta(minutes=30)
        dist.init_process_group(backend, timeout=timeout, **attempt_store(rank, world, timeout))
    return TorchrunProcess(rank, world, local_rank, device, backend)


def attempt_store(rank: int, world: int, timeout: datetime.timedelta) -> dict:
    """Under torchrun, the rendezvous store of this start of the worker group (init_process_group's store, rank
    and world_size); {} under other launchers (env:// as usual).

    torchrun --max-restarts starts the workers again against the same store (the agents keep it), and with torch
    2.13's env:// rendezvous the new group reads the keys the dead workers wrote (their addresses): gloo's
    connectFullMesh then fails with "Connection refused" and the restart is lost. Each start's keys therefore live
    under a prefix of its own generation (`agree_on_generation`), the same number on every rank."""
    if os.environ.get("TORCHELASTIC_RESTART_COUNT") is None or "MASTER_ADDR" not in os.environ:
        return {}
    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent_hosts_it and rank == 0, timeout=timeout)
    generation = agree_on_generation(store, rank, world, timeout.total_seconds())
    return {"store": dist.PrefixStore(f"resnet-cli/attempt-{generation}", store), "rank": rank, "world_size": world}


GENERATION, CURRENT = "resnet-cli/generation", "resnet-cli/current"


def agree_on_generation(store, rank: int, world: int, timeout_s: float, poll_s: float = 0.05) -> int:
    """A number for this start of the worker group: the same on every rank, new at every start.

    TORCHELASTIC_RESTART_COUNT is not one: it counts the restarts of each agent's own workers, so when one node's
    worker fails, that node's count goes up and a healthy node restarted for the membership change keeps its own;
    the ranks would then look for each other under different keys and the restart hangs. The number comes from
    the store, through a handshake that no key left by a dead start can answer (torchrun stops every old worker
    before it starts new ones): rank 0 takes the next generation from a counter and publishes it; every other rank
    acknowledges the generation it reads with a nonce of its own and waits for rank 0 to answer that nonce. A rank
    that read a dead start's generation gets no answer, and reads again."""
    import time
    import uuid

    deadline = time.monotonic() + timeout_s

    def wait_for(key: str, patience: float) -> bool:
        until = min(deadline, time.monotonic() + patience)
        while not store.check([key]):
            if time.monotonic() >= until:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"torchrun: the processes did not agree on a start within {timeout_s:.0f} s "
                                       f"(waiting for {key})")
                return False
            time.sleep(poll_s)
        return True

    if rank == 0:
        generation = store.add(GENERATION, 1)
        store.set(CURRENT, str(generation))
        for other in range(1, world):
            ack = f"resnet-cli/{generation}/ack/{other}"
            wait_for(ack, timeout_s)
            store.set(f"resnet-cli/{generation}/go/{store.get(ack).decode()}", "1")
        return generation
    nonce = uuid.uuid4().hex
    while True:
        wait_for(CURRENT, timeout_s)
        generation = int(store.get(CURRENT))
        store.set(f"resnet-cli/{generation}/ack/{rank}", nonce)
        if wait_for(f"resnet-cli/{generation}/go/{nonce}", 0.5):
            return generation
