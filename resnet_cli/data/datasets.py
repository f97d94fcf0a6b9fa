"""The two kinds of dataset a config loads (data/loading.py) and the one way to get batches of them: `TensorData`
(cifar10, cifar100, mnist, fashion-mnist, synthetic: uint8 tensors that live on the device) and `FolderData` (image
folders, decoded by workers); shards (data/shards.py) are a third of the same shape. Each says what its images are
(`input`, an `InputSpec`) and makes a `Loader` per split (`make_loader`): `DeviceLoader` or `FolderLoader`, one
interface (loader.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..errors import BadInput
from .inputs import DescribedByInput, InputSpec
from .views import Views

if TYPE_CHECKING:
    import torch


@dataclass
class TensorData(DescribedByInput):
    """A dataset small enough to live on the device: uint8 N x C x H x W images and int64 labels per split."""

    train_x: "torch.Tensor"
    train_y: "torch.Tensor"
    test_x: "torch.Tensor"
    test_y: "torch.Tensor"
    input: InputSpec  # classes, channels, size; mean/std from the training images
    val_x: "torch.Tensor | None" = None  # data.val_split: images held out of the training set
    val_y: "torch.Tensor | None" = None
    crops_while_decoding: ClassVar[bool] = False  # crop and flip happen in the batch augmentation

    @property
    def has_val(self) -> bool:
        return self.val_x is not None

    @property
    def train_count(self) -> int:
        return len(self.train_x)

    def count(self, split: str) -> int:
        """Images in `split` (train, val, test)."""
        return len({"train": self.train_x, "val": self.val_x if self.has_val else (), "test": self.test_x}[split])

    def epoch_steps(self, batch_size: int, world: int = 1) -> int:
        """Optimizer steps in an epoch at the global `batch_size` (every rank takes an equal share)."""
        return self.train_count // batch_size

    def train_tensors(self, what: str) -> tuple["torch.Tensor", "torch.Tensor"]:
        """The training images and labels, for work that reads them whole (`gradflow`)."""
        return self.train_x, self.train_y

    def tested(self, crop_pct: float = 0.0, views: Views = Views(), image_size: int = 0) -> "TensorData":
        if crop_pct or views != Views() or image_size:
            raise BadInput("--crop-pct, --ten-crop, --scales and --image-size are for image folders (the paper's "
                           "ImageNet test protocols); these images are evaluated whole, as trained")
        return self

    def loader(self, split: str, batch_size: int, device, *, training: bool, augment=None, seed: int = 0,
               channels_last: bool = False, rank: int = 0, world: int = 1, repeats: int = 1):
        from .loader import DeviceLoader

        x, y = {"train": (self.train_x, self.train_y), "val": (self.val_x, self.val_y),
                "test": (self.test_x, self.test_y)}[split]
        return DeviceLoader(x, y, batch_size, self.input, device, train=training, augment=augment, seed=seed,
                            channels_last=channels_last, rank=rank, world=world, repeats=repeats)


@dataclass
class FolderData(DescribedByInput):
    """Image folders: too large for the device, decoded (and cropped) by worker processes."""

    train_set: object  # ImageFolderDataset
    test_set: object
    input: InputSpec  # classes in folder order, the crop, the evaluation resize, ImageNet mean/std
    val_set: object = None
    workers: int = 4  # decoding processes per training process
    prefetch: bool = True  # data.prefetch: uploads on a side stream, one batch ahead (CUDA)
    crops_while_decoding: ClassVar[bool] = True  # the scale augmentation and flip happen while decoding

    @property
    def has_val(self) -> bool:
        return self.val_set is not None

    @property
    def train_count(self) -> int:
        return len(self.train_set)

    def count(self, split: str) -> int:
        """Images in `split` (train, val, test)."""
        found = {"train": self.train_set, "val": self.val_set, "test": self.test_set}[split]
        return len(found) if found is not None else 0

    def epoch_steps(self, batch_size: int, world: int = 1) -> int:
        """Optimizer steps in an epoch at the global `batch_size` (every rank takes an equal share)."""
        return self.train_count // batch_size

    def train_tensors(self, what: str):
        raise BadInput(f"{what} reads datasets that fit in memory: synthetic, mnist, fashion-mnist, cifar10/100")

    def tested(self, crop_pct: float = 0.0, views: Views = Views(), image_size: int = 0) -> "FolderData":
        """These folders evaluated at another crop (`image_size`, 0: as trained), with the shorter side resized to
        crop / `crop_pct` (timm's rule; 0: as trained, in proportion to the crop), and/or seen as `views` says (10
        crops per image, or whole at several scales: the paper's test protocols)."""
        crop, resize = self.input.tested_at(crop_pct, image_size)
        splits = {k: (getattr(self, k).for_testing(resize, views, crop) if getattr(self, k) is not None else None)
                  for k in ("train_set", "test_set", "val_set")}
        return FolderData(splits["train_set"], splits["test_set"],
                          dataclasses.replace(self.input, image_size=(crop, crop), resize=resize),
                          val_set=splits["val_set"], workers=self.workers, prefetch=self.prefetch)

    def loader(self, split: str, batch_size: int, device, *, training: bool, augment=None, seed: int = 0,
               channels_last: bool = False, rank: int = 0, world: int = 1, repeats: int = 1):
        from .imagefolder import FolderLoader

        dataset = {"train": self.train_set, "val": self.val_set, "test": self.test_set}[split]
        return FolderLoader(dataset, batch_size, self.input, device, train=training, seed=seed,
                            channels_last=channels_last, rank=rank, world=world, workers=self.workers,
                            augment=augment, prefetch=self.prefetch, repeats=repeats)


Data = TensorData | FolderData  # and shards.ShardData


def make_loader(data: Data, cfg, split: str, batch_size: int, device, *, training: bool, seed: int = 0,
                channels_last: bool = False, rank: int = 0, world: int = 1, num_classes: int = 0):
    """The `Loader` for one split ("train", "val", "test") of `data`. training: shuffled, augmented as the
    data section `cfg` says (TrainAugment; soft targets as wide as `num_classes` under mixup/cutmix, 0: the
    data's classes), full batches; else every image once."""
    from .augment import TrainAugment

    if split == "val" and not data.has_val:
        raise BadInput("there is no validation split: set data.val_split to hold one out of the training set")
    augment = TrainAugment.from_config(cfg, num_classes or data.num_classes,
                                       decoded_with_crop=data.crops_while_decoding) if training else None
    return data.loader(split, batch_size, device, training=training, augment=augment, seed=seed,
                       channels_last=channels_last, rank=rank, world=world,
                       repeats=cfg.aug_repeats if training else 1)
