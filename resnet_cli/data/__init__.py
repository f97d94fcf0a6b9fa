"""Datasets for training and evaluation, as uint8 tensors that can live on the device.

`load_data(cfg)` returns a `DataBundle` for cifar10, cifar100, mnist,
fashion-mnist or synthetic data; `DeviceLoader` (loader.py) serves batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput


@dataclass
class DataBundle:
    train_x: "torch.Tensor"  # uint8, N x C x H x W  # noqa: F821
    train_y: "torch.Tensor"  # int64, N  # noqa: F821
    test_x: "torch.Tensor"  # noqa: F821
    test_y: "torch.Tensor"  # noqa: F821
    classes: list[str]
    mean: "torch.Tensor"  # per channel, in [0, 1] units, from the training images  # noqa: F821
    std: "torch.Tensor"  # noqa: F821
    train_set: object = None  # image folders: datasets decoded by workers instead of resident tensors
    test_set: object = None
    val_x: "torch.Tensor | None" = None  # data.val_split: images held out of the training set  # noqa: F821
    val_y: "torch.Tensor | None" = None  # noqa: F821
    val_set: object = None  # image folders

    @property
    def has_val(self) -> bool:
        return self.val_x is not None or self.val_set is not None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return 3 if self.train_x is None else int(self.train_x.shape[1])

    @property
    def train_count(self) -> int:
        return len(self.train_set) if self.train_x is None else len(self.train_x)

    def input_info(self) -> dict:
        """What a model trained on this data expects of an image, saved in checkpoints for export and predict:
        class names, channels, size, per-channel mean/std in [0, 1] units, and the evaluation resize (image
        folders: shorter side to `resize`, then a centre crop to `image_size`; 0: resize straight to it)."""
        if self.train_x is None:
            crop = self.test_set.crop
            size, resize = [crop, crop], self.test_set.resize
        else:
            size, resize = [int(self.train_x.shape[-2]), int(self.train_x.shape[-1])], 0
        return {"classes": list(self.classes), "channels": self.in_channels, "image_size": size, "resize": resize,
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}


def fit_model(data: DataBundle, dataset: str, num_classes: int, in_channels: int, source: str) -> tuple[int, int]:
    """The class and channel counts a model needs for `data` (0 takes the data's). A model that cannot take
    the data (fewer outputs than classes, other channels) is one BadInput line naming both numbers."""
    num_classes = num_classes or data.num_classes
    in_channels = in_channels or data.in_channels
    if num_classes < data.num_classes:
        raise BadInput(f"{source} has {num_classes} outputs but {dataset} has {data.num_classes} classes")
    if in_channels != data.in_channels:
        raise BadInput(f"{source} expects {in_channels}-channel images; {dataset} has {data.in_channels}")
    return num_classes, in_channels


def make_loader(data: DataBundle, cfg, split: str, batch_size: int, device, *, training: bool, seed: int = 0,
                channels_last: bool = False, rank: int = 0, world: int = 1, num_classes: int = 0):
    """The batch source for one split ("train", "val", "test"). training: shuffled, augmented (TrainAugment;
    soft targets as wide as `num_classes` under mixup/cutmix), full batches; else every image once."""
    from .augment import TrainAugment

    if split == "val" and not data.has_val:
        raise BadInput("there is no validation split: set data.val_split to hold one out of the training set")
    augment = TrainAugment.from_config(cfg, num_classes or data.num_classes, decoded_with_crop=data.train_x is None) \
        if training else None
    if data.train_x is None:
        from .imagefolder import FolderLoader, ImageFolderDataset

        dataset = {"train": data.train_set, "val": data.val_set, "test": data.test_set}[split]
        if dataset.train != training:
            dataset = ImageFolderDataset(dataset.samples, training, crop=dataset.crop, resize=dataset.resize,
                                         flip=dataset.flip, scale=dataset.scale)
        return FolderLoader(dataset, batch_size, data.mean, data.std, device, train=training, seed=seed,
                            channels_last=channels_last, rank=rank, world=world, workers=cfg.workers,
                            augment=augment)
    from .loader import DeviceLoader

    x, y = {"train": (data.train_x, data.train_y), "val": (data.val_x, data.val_y),
            "test": (data.test_x, data.test_y)}[split]
    return DeviceLoader(x, y, batch_size, data.mean, data.std, device, train=training, augment=augment, seed=seed,
                        channels_last=channels_last, rank=rank, world=world)


VAL_SPLIT_SEED = 45_000_5000  # fixed: the held-out images depend only on the dataset and N, not on run.seed


def stratified_split(labels: "torch.Tensor", n_val: int) -> tuple["torch.Tensor", "torch.Tensor"]:  # noqa: F821
    """(train indices, val indices), both in the original order: `n_val` images held out, each class in its
    share of the whole (largest remainders get the rounding), chosen by a fixed seed."""
    import torch

    if not 0 < n_val < len(labels):
        raise BadInput(f"data.val_split {n_val} must be less than the {len(labels)} training images")
    g = torch.Generator().manual_seed(VAL_SPLIT_SEED)
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * n_val / len(labels)
    quota = exact.floor().long()
    short = n_val - int(quota.sum())
    if short:
        quota[(exact - quota).argsort(descending=True, stable=True)[:short]] += 1
    val = []
    for c, q in zip(classes.tolist(), quota.tolist()):
        members = (labels == c).nonzero().flatten()
        val.append(members[torch.randperm(len(members), generator=g)[:q]])
    held = torch.zeros(len(labels), dtype=torch.bool)
    held[torch.cat(val)] = True
    return (~held).nonzero().flatten(), held.nonzero().flatten()


def data_root(data_dir: str = "") -> Path:
    """--data-dir, else $RESNET_CLI_DATA, else ~/.cache/resnet-cli."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("RESNET_CLI_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "resnet-cli"


def channel_stats(x) -> tuple:
    """Per-channel mean and std of uint8 images, in [0, 1] units (computed in chunks, in float64)."""
    import torch

    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for chunk in torch.split(x, 4096):
        f = chunk.to(torch.float64).div_(255.0)
        total += f.sum(dim=(0, 2, 3))
        total_sq += f.pow(2).sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


def synthetic(cfg) -> tuple:
    """Seeded, learnable random images: a fixed pattern per class plus noise.

    Each class pattern is smooth (a random 4x4 grid per channel, upsampled) and left-right symmetric, so
    that it survives the training augmentations (a few pixels of pad-and-crop, a flip): the smoke run
    then visibly learns. Per-pixel noise keeps it from being trivial.
    """
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(20151210)  # fixed: every run sees the same data
    c, s, k = cfg.channels, cfg.image_size, cfg.classes
    coarse = torch.rand(k, c, 4, 4, generator=g)
    coarse = (coarse + coarse.flip(-1)) / 2
    smooth = F.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=False)
    low = smooth.amin(dim=(1, 2, 3), keepdim=True)
    high = smooth.amax(dim=(1, 2, 3), keepdim=True)
    prototypes = (smooth - low) / (high - low).clamp_min(1e-6) * 160 + 48

    def split(n):
        y = torch.randint(0, k, (n,), generator=g)
        noise = torch.randn(n, c, s, s, generator=g) * 48
        return (prototypes[y] + noise).round_().clamp_(0, 255).to(torch.uint8), y

    train_x, train_y = split(cfg.synthetic_train)
    test_x, test_y = split(cfg.synthetic_test)
    return train_x, train_y, test_x, test_y, [f"class{i}" for i in range(k)]


def load_data(cfg, classes: list[str] | None = None, need_train: bool = True) -> DataBundle:
    """Load the dataset named by a DataConfig, apply the train/test limits, compute normalisation stats.

    Image folders only: `classes` fixes the label order (a checkpoint's), and with `need_train` False a
    folder without train/ evaluates val/ (or, without that either, its own class folders)."""
    import torch

    root = data_root(cfg.data_dir)
    if cfg.dataset == "synthetic":
        parts = synthetic(cfg)
    elif cfg.dataset in ("cifar10", "cifar100"):
        from . import cifar

        parts = cifar.load(cfg.dataset, root, cfg.download, cfg.url)
    elif cfg.dataset in ("mnist", "fashion-mnist"):
        from . import idx

        parts = idx.load(cfg.dataset, root, cfg.download)
    elif cfg.dataset == "imagefolder":
        return _image_folders(cfg, root, classes, need_train)
    else:
        raise BadInput(f"unknown dataset {cfg.dataset!r}")
    train_x, train_y, test_x, test_y, classes = parts
    val_x = val_y = None
    if cfg.val_split:  # held out of the whole training set first, so train_limit never changes which
        keep, held = stratified_split(train_y, cfg.val_split)
        val_x, val_y, train_x, train_y = train_x[held], train_y[held], train_x[keep], train_y[keep]
    if cfg.train_limit:
        train_x, train_y = train_x[: cfg.train_limit], train_y[: cfg.train_limit]
    if cfg.test_limit:
        test_x, test_y = test_x[: cfg.test_limit], test_y[: cfg.test_limit]
    if cfg.normalize:
        mean, std = channel_stats(train_x)
    else:
        mean, std = torch.zeros(train_x.shape[1]), torch.ones(train_x.shape[1])
    return DataBundle(train_x, train_y, test_x, test_y, list(classes), mean, std, val_x=val_x, val_y=val_y)


def _image_folders(cfg, root: Path, classes: list[str] | None = None, need_train: bool = True) -> DataBundle:
    import torch

    from .imagefolder import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataset, scan

    try:
        import PIL  # noqa: F401
    except ImportError:
        raise BadInput('image folders need Pillow: pip install "resnet-cli[images]"') from None
    has_train = need_train or (root / "train").is_dir()
    if has_train:
        train, classes = scan(root / "train", classes)
        test, _ = scan(root / "val", classes)
    else:  # evaluation only: val/, or a plain folder of class folders
        test, classes = scan(root / "val" if (root / "val").is_dir() else root, classes)
        train = test
    val = None
    if cfg.val_split and has_train:
        keep, held = stratified_split(torch.tensor([label for _, label in train]), cfg.val_split)
        val, train = [train[i] for i in held.tolist()], [train[i] for i in keep.tolist()]
    if cfg.train_limit:
        train = train[: cfg.train_limit]
    if cfg.test_limit:
        test = test[: cfg.test_limit]
    # The paper's 256/224 evaluation resize and [256, 480] scale augmentation, kept in proportion to the crop.
    size, resize = cfg.image_size, round(cfg.image_size * 256 / 224)
    scale = (resize, round(cfg.image_size * 480 / 224))
    return DataBundle(None, None, None, None, classes, IMAGENET_MEAN, IMAGENET_STD,
                      train_set=ImageFolderDataset(train, True, crop=size, resize=resize, flip=cfg.flip, scale=scale),
                      test_set=ImageFolderDataset(test, False, crop=size, resize=resize),
                      val_set=ImageFolderDataset(val, False, crop=size, resize=resize) if val else None)
