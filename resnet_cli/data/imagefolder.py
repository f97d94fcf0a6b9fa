"""ImageNet-style image folders: `train/<class>/*.jpg|png` and `val/<class>/*`, decoded with Pillow.

Too large to live on the device, so images are decoded in DataLoader worker processes, then resized,
augmented and normalised on the device in batches.
- Training (crops.py): the paper's scale augmentation (shorter side resized to a random length in
  [256, 480], then a random 224 crop) or torchvision's RandomResizedCrop (`data.crop`), plus a horizontal
  flip. A worker decodes and cuts out the region; the device resizes the batch.
- Evaluation: shorter side resized to 256 (`data.eval_resize`), then the center 224 crop, on the CPU with
  the same transform `predict` uses.
- An unreadable image stops the run with one line naming the file: a silently
  skipped file would make evaluation counts inexact. A split folder without
  images is refused up front.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from ..errors import BadInput
from .inputs import DescribedByInput, InputSpec
from .loader import batch_seed, model_batch, shard_indices, shard_len
from .crops import canvas_side, decode_region, random_resized_box, resize_crops, scale_box
from .transforms import center_crop, eight_bit, resize_shorter, ten_crops

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
MARKER = "resnet-cli: cannot decode image "


def scan(split_dir: Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, label) pairs, classes in sorted folder-name order (as torchvision's ImageFolder)."""
    if not split_dir.is_dir():
        raise BadInput(f"image folder {split_dir} does not exist (expected train/<class>/* and val/<class>/*)")
    found = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    classes = classes or found
    if not classes:
        raise BadInput(f"{split_dir} has no class folders")
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for c in found:
        if c not in index:
            raise BadInput(f"{split_dir / c} is a class the training split does not have")
        for p in sorted((split_dir / c).rglob("*")):
            if p.suffix.lower() in EXTENSIONS and p.is_file():
                samples.append((p, index[c]))
    if not samples:
        raise BadInput(f"{split_dir} holds no images ({', '.join(sorted(EXTENSIONS))})")
    if classes is found:  # the split that names the classes: a class without images could never be learnt
        present = {label for _, label in samples}
        empty = [c for c in found if index[c] not in present]
        if empty:
            raise BadInput(f"{split_dir / empty[0]} holds no images ({', '.join(sorted(EXTENSIONS))}); a class "
                           "needs some: add them or remove the folder" + (f" ({len(empty) - 1} more)" if len(empty) > 1
                                                                          else ""))
    return samples, classes


@dataclass(frozen=True)
class TrainCrop:
    """How a training crop's region is drawn (crops.py): `mode` "scale" (the paper's: shorter side in `scale`,
    in pixels) or "random-resized" (torchvision's: area fraction in `area`, aspect ratio in `ratio`)."""

    mode: str = "scale"
    scale: tuple[int, int] = (256, 480)
    area: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def box(self, w: int, h: int, rng: random.Random, crop: int) -> tuple[int, int, int, int]:
        if self.mode == "random-resized":
            return random_resized_box(w, h, rng, self.area, self.ratio)
        return scale_box(w, h, rng, crop, self.scale)


class ImageFolderDataset(torch.utils.data.Dataset):
    def __init__(self, samples: list[tuple[Path, int]], train: bool, crop: int = 224, resize: int = 256,
                 train_crop: TrainCrop = TrainCrop(), flip: bool = True, ten_crop: bool = False) -> None:
        self.samples, self.train, self.crop, self.resize = samples, train, crop, resize
        self.train_crop, self.flip = train_crop, flip
        self.ten_crop = ten_crop  # evaluation: 10 crops per image (eval --ten-crop)
        self.epoch_seed = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        """Training: (canvas, (h, w, flip), label), the crop's region for the device to resize (crops.py);
        evaluation: (the centre crop, or 10 crops, as uint8, label)."""
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[i]
        try:
            if self.train:
                rng = random.Random(self.epoch_seed * 1_000_003 + i)
                with Image.open(path) as im:
                    box = self.train_crop.box(*im.size, rng, self.crop)
                flip = int(self.flip and rng.random() < 0.5)
                canvas, h, w = decode_region(lambda: Image.open(path), box, canvas_side(self.crop),
                                             lambda im: eight_bit(im, "RGB"))
                return canvas, torch.tensor([h, w, flip], dtype=torch.int32), label
            with Image.open(path) as im:
                img = eight_bit(im, "RGB")
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            raise RuntimeError(f"{MARKER}{path} ({str(e)[:200]})") from None
        if self.ten_crop:
            return ten_crops(resize_shorter(img, self.resize), self.crop), label
        return center_crop(resize_shorter(img, self.resize), self.crop, self.crop), label

    def for_training(self, train: bool) -> "ImageFolderDataset":
        """The same images with the training (random) or evaluation (centre crop) transform."""
        if train == self.train:
            return self
        return ImageFolderDataset(self.samples, train, crop=self.crop, resize=self.resize, flip=self.flip,
                                  train_crop=self.train_crop)

    def for_testing(self, resize: int, ten_crop: bool) -> "ImageFolderDataset":
        """The same images evaluated after another resize, or with 10 crops each."""
        return ImageFolderDataset(self.samples, False, crop=self.crop, resize=resize, flip=self.flip,
                                  train_crop=self.train_crop, ten_crop=ten_crop)


class FolderLoader(DescribedByInput):
    """The `Loader` of image folders: decoded and cropped in DataLoader workers, normalised (and given the
    batch augmentations) on the device; sharded by rank."""

    def __init__(self, dataset: ImageFolderDataset, batch_size: int, input: InputSpec, device: torch.device,
                 train: bool, seed: int = 0, channels_last: bool = False, rank: int = 0, world: int = 1,
                 workers: int = 4, augment=None) -> None:
        self.dataset, self.batch_size, self.device, self.train = dataset.for_training(train), batch_size, device, train
        self.input = input
        self.mean, self.std = input.normalizer(device)
        self.seed, self.channels_last, self.rank, self.world, self.workers = seed, channels_last, rank, world, workers
        self.augment = augment  # TrainAugment's batch ops (crop and flip happened while decoding)

    def __len__(self) -> int:
        return shard_len(len(self.dataset), self.batch_size, self.train, self.rank, self.world)

    def indices(self, epoch: int) -> list[int]:
        return shard_indices(len(self.dataset), self.batch_size, self.train, self.rank, self.world, self.seed,
                             epoch).tolist()

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.dataset.epoch_seed = self.seed * 7_919 + epoch
        idx = self.indices(epoch)[start * self.batch_size:]
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(self.dataset, idx), batch_size=self.batch_size,
                                             shuffle=False, num_workers=self.workers,
                                             pin_memory=self.device.type == "cuda",
                                             persistent_workers=False)
        try:
            for b, batch in enumerate(loader, start=start):
                if self.dataset.train:  # regions on canvases: the device resizes them to the crop size
                    xb, sizes, yb = batch
                    xb = resize_crops(xb.to(self.device, non_blocking=True), sizes.to(self.device, non_blocking=True),
                                      self.dataset.crop)
                else:
                    xb, yb = batch
                    xb = xb.flatten(0, 1) if xb.ndim == 5 else xb  # 10-crop: B x 10 images -> 10B, labels stay B
                yield model_batch(xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True),
                                  self.mean, self.std, self.augment if self.train else None,
                                  batch_seed(self.seed, epoch, b, self.rank), self.channels_last)
        except RuntimeError as e:
            line = next((ln for ln in str(e).splitlines() if MARKER in ln), None)
            if line is None:
                raise
            raise BadInput(line[line.index(MARKER) + len("resnet-cli: "):]) from None
