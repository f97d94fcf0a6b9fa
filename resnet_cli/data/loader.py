"""The `Loader` interface every batch source has, and `DeviceLoader`: batches straight from tensors that
live on the training device.

The whole (small) dataset is one uint8 tensor on the device; each epoch is a
seeded permutation, and augmentation runs on the whole batch there. There is
no per-sample Python and no worker process. With `world > 1` each rank takes a
disjoint, equal share of every epoch's permutation.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import torch

from .augment import TrainAugment, to_float
from .inputs import DescribedByInput, InputSpec


class Loader(Protocol):
    """One split's batches, as training, evaluation and the benchmarks read them: `DeviceLoader` (tensors on
    the device) and `FolderLoader` (image folders) implement it.

    `batches(epoch, start)` yields (images, labels) on the device, ready for the model: training batches
    shuffled by (seed, epoch) and augmented by (seed, epoch, batch), so a run resumed at batch `start`
    skips the batches it did without loading them; evaluation batches cover every image once across ranks.
    `input` says what the images are (classes, channels, size, normalisation) and holds the evaluation
    transform (`InputSpec.transform`)."""

    input: InputSpec

    @property
    def classes(self) -> list[str]: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def channels(self) -> int: ...

    def __len__(self) -> int: ...

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def epoch_seed(seed: int, epoch: int) -> int:
    """One generator seed per (run seed, epoch): a resumed run replays the same permutation."""
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**63 - 1)


def batch_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    """Augmentation seed per batch, so a run resumed mid-epoch skips batches without replaying them."""
    return (epoch_seed(seed, epoch) * 31 + batch * 1_009 + rank * 65_537 + 1) % (2**63 - 1)


def shard_len(n: int, batch_size: int, train: bool, rank: int = 0, world: int = 1) -> int:
    """Batches per epoch on one rank."""
    if train:  # full batches only: equal steps on every rank, no BatchNorm on a 1-image batch
        return n // (batch_size * world)
    return -(-len(range(rank, n, world)) // batch_size)


def shard_indices(n: int, batch_size: int, train: bool, rank: int, world: int, seed: int, epoch: int,
                  device: torch.device | str = "cpu", repeats: int = 1) -> torch.Tensor:
    """This rank's sample indices for an epoch.

    Training: a disjoint, equal share of one seeded permutation (the same on every rank). With `repeats` K > 1
    (data.aug_repeats: repeated augmentation, timm's RepeatAugSampler, torchvision's RASampler), each of the
    first n / K images of the permutation K times in a row, so the epoch keeps n samples; dealt out rank by
    rank, a picture's copies go to K different processes (or, on one, into the same batch), each augmented
    its own way.
    Evaluation: every sample exactly once across ranks, in order.
    """
    if not train:
        return torch.arange(rank, n, world, device=device)
    g = torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch))
    perm = torch.randperm(n, generator=g, device=device)
    if repeats > 1:
        perm = perm.repeat_interleave(repeats)[:n]
    return perm[: shard_len(n, batch_size, True, rank, world) * batch_size * world][rank::world]


def shard_copies(n: int, batch_size: int, rank: int, world: int, repeats: int) -> list[int]:
    """Which copy (0 .. repeats - 1) of its image each of `shard_indices`' training positions is, so that a
    worker draws each copy's crop from its own seed."""
    return (torch.arange(shard_len(n, batch_size, True, rank, world) * batch_size * world) % repeats)[rank::world] \
        .tolist()


def model_batch(x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                augment: TrainAugment | None, seed: int, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A uint8 batch on the device -> what the model takes: augmented (training, `augment` given) or only
    normalised, in the run's memory format. Both loaders end with it."""
    if augment is not None:
        x, y = augment(x, y, mean, std, seed)
    else:
        x = to_float(x, mean, std)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


class DeviceLoader(DescribedByInput):
    """The `Loader` of a dataset held as uint8 tensors: moved to the device once, batched and augmented there."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, input: InputSpec,
                 device: torch.device, train: bool, augment: TrainAugment | None = None, seed: int = 0,
                 channels_last: bool = False, rank: int = 0, world: int = 1, repeats: int = 1) -> None:
        self.x = x.to(device, non_blocking=True)
        self.y = y.to(device, non_blocking=True)
        self.input = input
        self.mean, self.std = input.normalizer(device)
        self.batch_size, self.train = batch_size, train
        self.augment = augment or TrainAugment()
        self.seed, self.device, self.channels_last = seed, device, channels_last
        self.rank, self.world = rank, world
        self.repeats = repeats  # data.aug_repeats (training): each batch's augmentation differs per copy already

    def __len__(self) -> int:
        return shard_len(len(self.x), self.batch_size, self.train, self.rank, self.world)

    def indices(self, epoch: int) -> torch.Tensor:
        return shard_indices(len(self.x), self.batch_size, self.train, self.rank, self.world, self.seed, epoch,
                             self.device, self.repeats)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of `epoch`, from batch number `start` on (a run resumed mid-epoch)."""
        idx = self.indices(epoch)
        for b, first in enumerate(range(start * self.batch_size, len(idx), self.batch_size), start=start):
            sel = idx[first:first + self.batch_size]
            yield model_batch(self.x[sel], self.y[sel], self.mean, self.std, self.augment if self.train else None,
                              batch_seed(self.seed, epoch, b, self.rank), self.channels_last)


WORKER_START_VAR = "RESNET_CLI_WORKER_START"  # fork, forkserver or spawn; unset: PyTorch's default (fork on Linux)


def worker_context():
    """How DataLoader workers start: the multiprocessing start method $RESNET_CLI_WORKER_START names, which the
    command line sets to forkserver (cli.main); unset, PyTorch's default.

    A worker forked straight from the training process can deadlock at birth. Forking copies the interpreter's
    locks as they are, and one that another thread holds at that instant (a finished loader's queue thread
    exiting, TensorBoard's writer) is never released in the child: seen under torchrun with shards, a worker
    waiting forever in CPython 3.11's PyOS_AfterFork_Child for the thread-state lock while its rank waited for it
    and the other rank in an all-reduce (tests/test_restarts.py, about one run in a few dozen). The fork server
    is one single-threaded process, started once with torch and the data modules imported, that forks the
    workers instead (the start method Python 3.14 makes the default for this reason). A script of the user's
    keeps the default: a fork server imports the script in every worker, which runs again an unguarded one (no
    `if __name__ == "__main__":`)."""
    import multiprocessing
    import os

    method = os.environ.get(WORKER_START_VAR, "")
    if not method:
        return None
    if method not in multiprocessing.get_all_start_methods():
        from ..errors import BadInput

        raise BadInput(f"{WORKER_START_VAR}={method!r}: this platform starts processes by "
                       f"{', '.join(multiprocessing.get_all_start_methods())}")
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["torch", "resnet_cli.data.imagefolder", "resnet_cli.data.shards"])
    return context
