"""Image datasets as tar shards in the WebDataset layout: `resnet data convert` writes them, `data.dataset: shards`
reads them from a folder, over http(s), or through a `pipe:` command (object stores through their CLIs). Where
they come from and their index: data/shard_source.py; writing them: data/shard_convert.py; the plan of an epoch:
data/shard_plan.py. This module reads them: one shard's samples, the stream a DataLoader worker decodes, the
dataset and its loader.

Layout: `train-000000.tar`, ... and `val-000000.tar`, ..., each sample two members, `KEY.jpg` (or .png, as the
image was) and `KEY.cls` (the label, decimal), and `index.json`: the classes, and per shard its sample count,
size and sha256. Every shard is checked against its sha256 when read, so a truncated or changed shard is one
line naming it, never a silently shorter epoch.

Reading, with `world` ranks of `workers` decoding processes each (`roles`; 1 without workers):
- training: each epoch permutes the shards from (seed, epoch); rank r takes every world-th shard from r, its
  role j every roles-th of those; a role reads its shards in turn and yields each shard's samples in an order
  permuted from (seed, epoch, shard). Every role stops after the same number of batches (the smallest share
  decides: a few samples of an epoch are left out, others next epoch), so ranks take equal steps and the
  DataLoader's round robin makes batch b the role b % roles's batch b // roles. A run resumed at batch b skips
  whole shards by their counts, without reading them, and starts each role in its shard at its sample: the
  batches are those the uninterrupted run would have seen, as long as data.workers is unchanged (it is part of
  the run's config).
- evaluation: rank r reads every world-th shard from r, each sample once; the ranks' sums give exact counts.
"""

from __future__ import annotations

import hashlib
import io
import math
import tarfile
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch

from .. import gate
from ..errors import BadInput
from . import image_files
from .inputs import DescribedByInput, InputSpec
from .shard_plan import sample_order, train_plan
from .shard_source import INDEX, SHARD_SPLIT, Source, read_index
from .views import Views

# ---------------------------------------------------------------- reading one shard

def read_shard(source: Source, shard: dict[str, Any], num_classes: int) -> list[tuple[str, bytes, int]]:
    """(key, image bytes, label) of every sample of `shard`, in the tar's order, its sha256 and count checked."""
    where = source.where(shard["name"])
    data = source.read(shard["name"], source.limits.at_most(shard["bytes"], "its size in the index"))
    if hashlib.sha256(data).hexdigest() != shard["sha256"]:
        raise BadInput(f"{where}: its sha256 is not the index's ({len(data):,} bytes, the index says "
                       f"{shard['bytes']:,}): truncated or changed since resnet data convert wrote it")
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.rpartition(".")
                parts = samples.setdefault(key, {})
                if ext in parts:
                    raise BadInput(f"{where}: sample {key!r} appears twice (two {key}.{ext} members): which one "
                                   "is meant? Convert the folder again")
                parts[ext] = tar.extractfile(member).read()
    except tarfile.TarError as e:
        raise BadInput(f"{where}: not a readable tar ({e})") from None
    out = []
    for key, parts in samples.items():
        image = next((v for k, v in parts.items() if k in IMAGE_EXTS), None)
        try:
            label = int(parts["cls"])
        except (KeyError, ValueError):
            raise BadInput(f"{where}: sample {key!r} has no valid .cls label") from None
        if image is None or not 0 <= label < num_classes:
            raise BadInput(f"{where}: sample {key!r} has " + ("no image" if image is None else
                                                             f"label {label}, outside 0..{num_classes - 1}"))
        out.append((key, image, label))
    if len(out) != shard["count"]:
        raise BadInput(f"{where} holds {len(out)} samples, the index says {shard['count']}")
    return out


IMAGE_EXTS = frozenset(ext.lstrip(".") for ext in image_files.EXTENSIONS)  # a member's, as a folder's files


class ShardStream(torch.utils.data.IterableDataset):
    """The samples a DataLoader worker decodes: training, the role (worker + start) % roles of the plan, from
    its resume point; evaluation, this rank's shards split over the workers."""

    def __init__(self, source: Source, shards: list[dict], prepare, num_classes: int, train: bool,
                 batch_size: int, seed: int, rank: int, world: int, workers: int) -> None:
        self.source, self.shards, self.prepare, self.num_classes = source, shards, prepare, num_classes
        self.train, self.batch_size, self.seed = train, batch_size, seed
        self.rank, self.world, self.workers = rank, world, workers
        self.epoch = self.start = 0

    def eval_shards(self) -> list[int]:
        """This rank's shards when evaluating: every world-th from its rank, each read once."""
        return list(range(len(self.shards)))[self.rank::self.world]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if not self.train:
            for i in self.eval_shards()[worker::n_workers]:
                for key, image, label in read_shard(self.source, self.shards[i], self.num_classes):
                    yield self._item(i, key, image, label, 0)
            return
        roles, per_role = train_plan(self.shards, self.seed, self.epoch, self.rank, self.world, self.workers,
                                     self.batch_size)
        role = (worker + self.start) % len(roles)
        done = max(0, -(-(self.start - role) // len(roles)))  # this role's batches among the first `start`
        skip, left = done * self.batch_size, (per_role - done) * self.batch_size
        from .loader import epoch_seed

        draws = epoch_seed(self.seed, self.epoch)
        for i in roles[role]:
            if left <= 0:
                return
            count = self.shards[i]["count"]
            if skip >= count:  # consumed before the resume: not even read
                skip -= count
                continue
            samples = read_shard(self.source, self.shards[i], self.num_classes)
            for position in sample_order(count, self.seed, self.epoch, i)[skip:skip + left]:
                key, image, label = samples[position]
                yield self._item(i, key, image, label, draws * 1_000_003 + i * 1_000_000 + position)
            left -= count - skip
            skip = 0

    def _item(self, shard: int, key: str, image: bytes, label: int, draw: int):
        return self.prepare(lambda: image_files.opened(image), draw, label,
                            f"{self.source.where(self.shards[shard]['name'])}: {key}")


# ---------------------------------------------------------------- the dataset and its loader

@dataclass
class ShardData(DescribedByInput):
    """A dataset in shards (`data.dataset: shards`): the index's splits, decoded by worker processes with the
    image folders' transforms."""

    source: Source
    index: dict[str, Any]
    input: InputSpec
    train_set: Any  # ImageFolderDataset without samples: the training transform (its `prepare`)
    test_set: Any  # the evaluation transform
    workers: int = 4
    prefetch: bool = True  # data.prefetch (imagefolder.on_device)
    crops_while_decoding: ClassVar[bool] = True
    has_val: ClassVar[bool] = False

    @property
    def train_count(self) -> int:
        return self.index["splits"]["train"]["count"]

    def epoch_steps(self, batch_size: int, world: int = 1) -> int:
        """Optimizer steps in an epoch: each rank's roles take the same number of whole batches (`train_plan`)."""
        roles, per_role = train_plan(self.split_shards("train"), 0, 0, 0, world, self.workers,
                                     max(1, batch_size // world))
        return len(roles) * per_role

    def count(self, split: str) -> int:
        """Images in `split` (train, test: the index's val), as the index counts them."""
        return sum(int(shard["count"]) for shard in self.split_shards(split))

    def split_shards(self, split: str) -> list[dict]:
        name = SHARD_SPLIT[split]
        entry = self.index["splits"].get(name)
        if entry is None:
            raise BadInput(f"{self.source.where(INDEX)} has no {name} split")
        return entry["shards"]

    def train_tensors(self, what: str):
        raise BadInput(f"{what} reads datasets that fit in memory: synthetic, mnist, fashion-mnist, cifar10/100")

    def tested(self, crop_pct: float = 0.0, views: Views = Views(), image_size: int = 0) -> "ShardData":
        """As FolderData.tested: another crop or resize, or other views of each image, for evaluation."""
        import dataclasses

        crop, resize = self.input.tested_at(crop_pct, image_size)
        return dataclasses.replace(self, test_set=self.test_set.for_testing(resize, views, crop),
                                   input=dataclasses.replace(self.input, image_size=(crop, crop), resize=resize))

    def loader(self, split: str, batch_size: int, device, *, training: bool, augment=None, seed: int = 0,
               channels_last: bool = False, rank: int = 0, world: int = 1, repeats: int = 1):
        if repeats > 1:  # config.validate refuses it first, in one line
            raise BadInput("data.aug_repeats applies to image folders and datasets in memory: shards are streamed")
        if split == "val":
            raise BadInput("shards carry their own splits (train, val): data.val_split holds images out of an "
                           "image folder only")
        transform = self.train_set.finishing_for(device) if training else self.test_set
        stream = ShardStream(self.source, self.split_shards(split), transform.prepare, self.num_classes, training,
                             batch_size, seed, rank, world, self.workers)
        return ShardLoader(stream, transform, batch_size, self.input, device, channels_last, augment, self.prefetch)


class ShardLoader(DescribedByInput):
    """The `Loader` of shards: a DataLoader over `ShardStream`, started at each epoch; batches finished on the
    device as the image folders' are."""

    def __init__(self, stream: ShardStream, transform, batch_size: int, input: InputSpec, device,
                 channels_last: bool, augment, prefetch: bool = True) -> None:
        self.stream, self.transform, self.batch_size, self.input = stream, transform, batch_size, input
        self.device, self.channels_last, self.augment, self.prefetch = device, channels_last, augment, prefetch
        self.mean, self.std = input.normalizer(device)
        self.train, self.workers = stream.train, stream.workers
        self.seed, self.rank = stream.seed, stream.rank

    def __len__(self) -> int:
        s = self.stream
        if s.train:
            roles, per_role = train_plan(s.shards, s.seed, 0, s.rank, s.world, s.workers, s.batch_size)
            return len(roles) * per_role
        return sum(math.ceil(s.shards[i]["count"] / self.batch_size) for i in s.eval_shards())  # at most

    def close(self) -> None:
        """Nothing to stop: a shard loader's workers end with each epoch."""

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from .imagefolder import on_device
        from .loader import worker_context

        s = self.stream
        s.epoch, s.start = epoch, start
        roles = len(train_plan(s.shards, s.seed, epoch, s.rank, s.world, s.workers, self.batch_size)[0]) \
            if s.train else min(max(1, s.workers), max(1, len(s.eval_shards())))
        loader = torch.utils.data.DataLoader(s, batch_size=self.batch_size, num_workers=roles if s.workers else 0,
                                             pin_memory=self.device.type == "cuda", drop_last=False,
                                             multiprocessing_context=worker_context() if s.workers else None)
        yield from on_device(self, loader, self.transform.crop, epoch, start)


def load_shards(cfg, location: str, classes: list[str] | None = None) -> ShardData:
    """`data.dataset: shards` at `location` (a folder, a URL or a pipe), with the image folders' transforms.
    `classes` (a checkpoint's) must be the index's."""
    from .imagefolder import image_datasets
    from .inputs import IMAGENET_MEAN, IMAGENET_STD

    try:
        import PIL  # noqa: F401
    except ImportError:
        raise BadInput('shards hold images: decoding them needs Pillow: pip install "resnet-cli[images]"') from None
    for key, value in (("data.val_split", cfg.val_split), ("data.train_limit", cfg.train_limit),
                       ("data.test_limit", cfg.test_limit)):
        if value:
            raise BadInput(f"{key} applies to image folders; shards are read whole (convert a smaller folder)")
    source = Source(location, gate.Limits.of(cfg))
    index = read_index(source)
    if classes is not None and list(classes) != index["classes"]:
        raise BadInput(f"{source.where(INDEX)} has other classes than the checkpoint was trained on")
    train, test, _ = image_datasets(cfg, [], [])
    spec = InputSpec.of(index["classes"], 3, test.crop, test.resize, IMAGENET_MEAN, IMAGENET_STD,
                        index.get("descriptions", ()), test.interpolation)
    return ShardData(source, index, spec, train, test, workers=cfg.workers, prefetch=cfg.prefetch)
