"""From a config's data section to a dataset: `load_data` (which dataset, where its files are, synthetic data
made to measure, held-out validation images), `identify_dataset` for a --data-dir alone (never a guess), and
`input_of_run`: what a checkpoint's model expects of an image."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import gate
from ..errors import BadInput
from .inputs import InputSpec

if TYPE_CHECKING:
    import torch
from .datasets import Data, FolderData, TensorData


# Datasets whose class count is fixed (synthetic's is data.classes; folders and shards have their own).
FIXED_CLASSES = {"mnist": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100}


def input_of_run(cfg, saved: dict | None, from_run: bool, unknown: str) -> InputSpec:
    """What a model expects of an image, for `export` and `predict`: the checkpoint's own record (`saved`);
    else, for a run's checkpoint from before it was recorded or a bare state_dict with its dataset named
    (`from_run`), the run's data; else torchvision's ImageNet conventions for a bare ImageNet-family
    state_dict. Outputs past the named classes are numbered. `unknown` names the weights in the error when none
    of these applies ("PATH is a bare state_dict")."""
    from ..models import model_info

    if isinstance(saved, dict):
        spec = InputSpec.from_dict(saved)
        fixed = FIXED_CLASSES.get(cfg.data.dataset, cfg.data.classes if cfg.data.dataset == "synthetic" else None)
        if len(spec.classes) > cfg.model.num_classes or spec.channels != cfg.model.in_channels \
                or from_run and fixed is not None and len(spec.classes) != fixed:
            raise BadInput(f"the checkpoint's input record names {len(spec.classes)} class{'es' * (len(spec.classes) != 1)} "
                           f"of {spec.channels}-channel "
                           f"images for a {cfg.model.num_classes}-output, {cfg.model.in_channels}-channel "
                           f"{cfg.model.name} trained on {cfg.data.dataset}: it does not fit; the file is damaged or "
                           "was not written by resnet-cli")
    elif from_run:
        from ..config import DECODED
        from .shard_source import refuse_saved_command

        refuse_saved_command(cfg.data.data_dir, None, unknown.split(" ")[0])
        spec = load_data(cfg.data, need_train=cfg.data.dataset not in DECODED).input
        if len(spec.classes) > cfg.model.num_classes:  # its outputs could not name the data's classes
            raise BadInput(f"{unknown.split(' ')[0]}: a {cfg.model.num_classes}-output {cfg.model.name} cannot be a "
                           f"model of {cfg.data.dataset}, which has {len(spec.classes)} classes")
    elif model_info(cfg.model.name).family == "imagenet" and cfg.model.in_channels == 3:
        spec = InputSpec.imagenet(cfg.model.num_classes)
    else:
        raise BadInput(f"{unknown}: say with --dataset which dataset its images come from, "
                       "so that they are normalised as in training")
    return spec.for_outputs(cfg.model.num_classes)


VAL_SPLIT_SEED = 45_000_5000  # fixed: the held-out images depend only on the dataset and N, not on run.seed


def stratified_split(labels: "torch.Tensor", n_val: int) -> tuple["torch.Tensor", "torch.Tensor"]:
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


def identify_dataset(data_dir: str) -> str:
    """The dataset in `data_dir` when none was named (--data-dir alone): IDX files (Fashion-MNIST or MNIST, by
    their published checksums), CIFAR-10/100 batches, or image folders (train/<class>/). Anything else is one
    BadInput line: the dataset is never guessed, and never replaced by synthetic data."""
    from . import cifar, idx
    from .image_files import hidden
    from .shard_source import Source

    if Source.recognises(data_dir):  # a URL, a pipe: command, or a folder with our shard index
        return "shards"
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise BadInput(f"--data-dir {data_dir}: no such folder")
    found = [d for d in (idx.identify(root), cifar.identify(root)) if d]
    if (root / "train").is_dir() and any(not hidden(p.name) and p.is_dir() for p in (root / "train").iterdir()):
        found.append("imagefolder")
    if len(found) != 1:
        what = f"both {' and '.join(found)}" if found else "no IDX files, CIFAR batches or train/<class>/ folders"
        raise BadInput(f"cannot tell which dataset {root} holds ({what}); name it with --dataset "
                       "(cifar10, cifar100, mnist, fashion-mnist, imagefolder, shards)")
    return found[0]


def data_root(data_dir: str = "") -> Path:
    """--data-dir, else $RESNET_CLI_DATA, else ~/.cache/resnet-cli ($XDG_CACHE_HOME/resnet-cli where it is set)."""
    from ..files import cache_home

    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("RESNET_CLI_DATA")
    if env:
        return Path(env).expanduser()
    return cache_home()


def channel_stats(x) -> tuple:
    """Per-channel mean and std of uint8 images (N x C x H x W), in [0, 1] units: from each channel's histogram
    of the 256 values, so the sums are exact (float64 holds them) and no float copy of the images is made
    (CIFAR-10's train set: 0.11 s on 2 cores, where summing float64 chunks took 0.9 s at every start)."""
    import torch

    hist = torch.stack([torch.bincount(x[:, k].reshape(-1), minlength=256) for k in range(x.shape[1])]).double()
    value = torch.arange(256, dtype=torch.float64) / 255.0
    count = hist.sum(1)
    mean = hist @ value / count
    std = (hist @ value.pow(2) / count - mean.pow(2)).clamp_min(1e-12).sqrt()
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


def check_labels(dataset: str, classes: list[str], splits: dict[str, torch.Tensor]) -> None:
    """Every split has images, and every label names one of the classes: a label out of range would index past
    the model's outputs (an internal error deep in an epoch), and an empty split would report 0%."""
    for split, y in splits.items():
        if len(y) == 0:
            raise BadInput(f"{dataset}: the {split} split has no images")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= len(classes):
            bad = low if low < 0 else high
            raise BadInput(f"{dataset}: the {split} labels hold {bad}, outside 0..{len(classes) - 1} for "
                           f"{len(classes)} classes: the label file is damaged or not this dataset's")


def load_data(cfg, classes: list[str] | None = None, need_train: bool = True) -> Data:
    """Load the dataset named by a DataConfig, apply the train/test limits, compute normalisation stats.

    Image folders only: `classes` fixes the label order (a checkpoint's), and with `need_train` False a
    folder without train/ evaluates val/ (imagefolder.eval_folder; without one, its own class folders)."""
    import torch

    from .shard_source import Source
    from .shards import load_shards

    root = data_root(cfg.data_dir)
    if cfg.data_dir and cfg.dataset in ("cifar10", "cifar100", "mnist", "fashion-mnist") and not root.exists():
        if not cfg.download:
            raise BadInput(f"data.data_dir {root}: no such folder (and data.download is off)")
        # a mistyped --data-dir should not download silently into a new folder
        print(f"note: data folder {root} does not exist: creating it to download {cfg.dataset} there",
              file=sys.stderr, flush=True)
    if cfg.dataset == "synthetic":
        parts = synthetic(cfg)
    elif cfg.dataset in ("cifar10", "cifar100"):
        from . import cifar

        parts = cifar.load(cfg.dataset, root, cfg.download, cfg.url, gate.Limits.of(cfg))
    elif cfg.dataset in ("mnist", "fashion-mnist"):
        from . import idx

        parts = idx.load(cfg.dataset, root, cfg.download, gate.Limits.of(cfg))
    elif cfg.dataset == "shards" or (cfg.dataset == "imagefolder" and cfg.data_dir
                                     and Source.recognises(cfg.data_dir)):  # the imagenet preset on shards
        return load_shards(cfg, cfg.data_dir or str(root), classes)
    elif cfg.dataset == "imagefolder":
        return _image_folders(cfg, root, classes, need_train)
    else:
        raise BadInput(f"unknown dataset {cfg.dataset!r}")
    train_x, train_y, test_x, test_y, classes = parts
    check_labels(cfg.dataset, classes, {"training": train_y, "test": test_y})
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
    spec = InputSpec.of(classes, train_x.shape[1], tuple(train_x.shape[-2:]), 0, mean.tolist(), std.tolist())
    return TensorData(train_x, train_y, test_x, test_y, spec, val_x=val_x, val_y=val_y)


def _image_folders(cfg, root: Path, classes: list[str] | None = None, need_train: bool = True) -> FolderData:
    import torch

    from .imagefolder import descriptions, eval_folder, image_datasets, missing_eval_folder, scan
    from .inputs import IMAGENET_MEAN, IMAGENET_STD

    try:
        import PIL  # noqa: F401
    except ImportError:
        raise BadInput('image folders need Pillow: pip install "resnet-cli[images]"') from None
    has_train = need_train or (root / "train").is_dir()
    index = data_root() / "index"  # the folders' listings, kept in the cache folder (imagefolder.listing)
    evaluated = eval_folder(root)  # val/, or a name timm also reads for it (valid/, ...)
    if has_train:
        train, classes = scan(root / "train", classes, index)  # without train/: one line saying so
        if evaluated is None:
            raise missing_eval_folder(root)
        test, _ = scan(evaluated, classes, index)
    else:  # evaluation only: val/ (or its other names), or a plain folder of class folders
        test, classes = scan(evaluated or root, classes, index)
        train = test
    val = None
    if cfg.val_split and has_train:
        keep, held = stratified_split(torch.from_numpy(train.labels), cfg.val_split)
        val, train = train.take(held.numpy()), train.take(keep.numpy())
    if cfg.train_limit:
        train = train[: cfg.train_limit]
    if cfg.test_limit:
        test = test[: cfg.test_limit]
    train_set, test_set, val_set = image_datasets(cfg, train, test, val)
    return FolderData(train_set, test_set,
                      InputSpec.of(classes, 3, test_set.crop, test_set.resize, IMAGENET_MEAN, IMAGENET_STD,
                                   descriptions(root, classes), test_set.interpolation),
                      val_set=val_set, workers=cfg.workers, prefetch=cfg.prefetch)
