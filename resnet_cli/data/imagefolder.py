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

import numpy as np
import torch

from .. import gate
from ..errors import BadInput
from . import image_files
from .inputs import DescribedByInput, InputSpec
from .loader import batch_seed, model_batch, shard_copies, shard_indices, shard_len, worker_context
from .samples import Samples
from .crops import canvas_side, decode_region, finished_crop, random_resized_box, resize_crops, scale_box
from .image_files import EXTENSIONS, hidden
from .transforms import center_crop, ten_crops, upright_8bit, whole_views
from .views import Views

MARKER = "resnet-cli: cannot decode image "


INDEX_VERSION = 2  # 2: hidden names left out (a listing kept by version 1 may hold them)
MAX_LISTING_BYTES = 2**30  # ImageNet's 1.28M files list in about 60 MB


def listing(split_dir: Path, cache_dir: Path | None = None) -> dict[str, list[str]]:
    """Every image file under each class folder of `split_dir` (class -> paths relative to it, sorted), read from
    an index in `cache_dir` while no folder under `split_dir` has changed (every directory's mtime is checked:
    adding or removing a file changes its folder's), else walked and the index rewritten. A 1.28M-file
    ImageNet is then walked once, not at every start (minutes on a network file system)."""
    import hashlib
    import json
    import os

    root = split_dir.resolve()
    index = cache_dir / f"{hashlib.sha256(str(root).encode()).hexdigest()[:24]}.json" if cache_dir else None
    if index is not None and (saved := _saved_listing(index, root)) is not None:
        return saved
    dirs = {".": os.stat(root).st_mtime_ns}
    classes = {c: _files_under(root, c, dirs) for c in sorted(e.name for e in _entries(root)
                                                              if not hidden(e.name) and e.is_dir())}
    if index is not None:
        from ..files import atomic_write_text

        try:
            index.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(index, json.dumps({"version": INDEX_VERSION, "root": str(root), "dirs": dirs,
                                                 "classes": classes}))
        except OSError:
            pass  # a read-only cache costs the next start a walk, nothing else
    return classes


def _files_under(root: Path, top: str, dirs: dict[str, int]) -> list[str]:
    """The image files below `root/top` (paths relative to `root`), each folder's entries in name order and a
    subfolder's files where its name sorts (the order of sorted(Path.rglob)), hidden names left out
    (image_files.hidden); every folder's mtime goes into `dirs`. A symlink to a folder is noted, not entered.
    os.scandir's entries, not a Path a file: ImageNet's 1.28M names in seconds where rglob took a minute of CPU."""
    import os

    dirs[top] = os.stat(root / top).st_mtime_ns
    files: list[str] = []
    stack = [(top, iter(_entries(root / top)))]
    while stack:
        rel, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        if hidden(entry.name):  # macOS's ._photo.jpg, .ipynb_checkpoints/
            continue
        child = f"{rel}/{entry.name}"
        if entry.is_dir():
            dirs[child] = entry.stat().st_mtime_ns
            if not entry.is_symlink():
                stack.append((child, iter(_entries(root / child))))
        elif _suffix(entry.name).lower() in EXTENSIONS and entry.is_file():
            files.append(child)
    return files


def _entries(folder: Path) -> list:
    """`folder`'s entries (os.DirEntry), by name; a folder that cannot be read is one line, never skipped (its
    images would be missing from every count)."""
    import os

    try:
        with os.scandir(folder) as found:
            return sorted(found, key=lambda e: e.name)
    except OSError as e:
        raise BadInput(f"cannot list {folder}: {e.strerror or e}") from None


def _suffix(name: str) -> str:
    """Path(name).suffix, without making a Path."""
    i = name.rfind(".")
    return name[i:] if 0 < i < len(name) - 1 else ""


def _saved_listing(index: Path, root: Path) -> dict[str, list[str]] | None:
    """The listing kept in `index` if it is still `root`'s (every folder's mtime unchanged) and names only image
    files inside their class folders; None (walk again) when it is stale, unreadable, too large or not ours. Read
    through the gate: the cache folder may be shared ($RESNET_CLI_DATA), so the file is outside bytes."""
    import os

    try:
        raw = gate.read_file(index, gate.Limits().at_most(MAX_LISTING_BYTES, "the bound on a folder listing"))
        saved = gate.json_bytes(raw, str(index))
        if saved["version"] != INDEX_VERSION or saved["root"] != str(root) or not all(
                os.stat(root / rel).st_mtime_ns == mtime for rel, mtime in saved["dirs"].items()):
            return None
        classes = saved["classes"]
        if all(_all_inside(files, c) for c, files in classes.items()):
            return classes
        return None
    except (BadInput, OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # stale, unreadable or not ours: walk again


def _all_inside(files: list, folder: str) -> bool:
    """Whether every name in `files` (from a saved listing) is an image file below `folder`: relative, no hidden
    part. One pass in about a microsecond a name (ImageNet's 1.28M in about a second; Path() would take ten)."""
    if not isinstance(folder, str) or not folder or hidden(folder) or "/" in folder or not isinstance(files, list):
        return False
    prefix = folder + "/"
    return all(type(rel) is str and rel.startswith(prefix) and _suffix(rel).lower() in EXTENSIONS
               and "/." not in rel for rel in files)  # no hidden part, so no `..` either


# An image folder's evaluation split: val/ (ImageNet's, torchvision's), or one of the names timm also reads for
# it: valid/ (Roboflow's and many Kaggle exports), validation/, eval/, evaluation/. Never test/: a test split is
# held out from every choice a run makes, best.pt's included.
EVAL_FOLDERS = ("val", "valid", "validation", "eval", "evaluation")


def eval_folder(root: Path) -> Path | None:
    """The evaluation split's folder under `root` (EVAL_FOLDERS), None where it has none; two of them are one
    BadInput line (which one is meant is never guessed)."""
    found = [root / name for name in EVAL_FOLDERS if (root / name).is_dir()]
    if len(found) > 1:
        raise BadInput(f"{root} has both {found[0].name}/ and {found[1].name}/: which one is the evaluation split is "
                       "never guessed; keep one (move or rename the other)")
    return found[0] if found else None


MAX_DESCRIPTIONS_BYTES = 16 * 2**20


def descriptions(root: Path, classes: list[str]) -> tuple[str, ...]:
    """What each class is, from synset_words.txt (imagenet.DESCRIPTIONS) beside train/ and val/: a line per
    class, its folder name, a space, its description (`resnet data imagenet` writes it from ImageNet's devkit;
    Caffe's has the same lines), "" for a class it does not name. Without the file, classes that are all
    ImageNet-1k's WordNet ids get their words from the shipped list; else (). Display only: the classes stay the
    folder names."""
    from .imagenet import DESCRIPTIONS

    path = root / DESCRIPTIONS
    if not path.is_file():
        return wordnet_words(classes)
    raw = gate.read_file(path, gate.Limits(MAX_DESCRIPTIONS_BYTES, keys=(f"the bound on {DESCRIPTIONS}",
                                                                         "data.read_timeout")))
    said: dict[str, str] = {}
    for line in raw.decode("utf-8", errors="replace").splitlines():
        name, _, text = line.strip().partition(" ")
        if name and text.strip():
            said[name] = text.strip()[:1000]
    return tuple(said.get(c, "") for c in classes) if any(c in said for c in classes) else ()


def of_imagenet(root: Path) -> bool:
    """Whether the class folders of `root`'s evaluation split (or of `root` itself, with none) are all
    ImageNet-1k's WordNet ids: a 1000-output ImageNet net's outputs then say which output is which class."""
    folder = eval_folder(root) or root
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not hidden(p.name)) if folder.is_dir() else []
    return bool(wordnet_words(names))


def wordnet_words(classes: list[str]) -> tuple[str, ...]:
    """ImageNet-1k's words for classes that are all its WordNet ids (n01440764: "tench, Tinca tinca"), else ()."""
    from .imagenet_classes import imagenet_1k

    wnids, words = imagenet_1k()
    said = dict(zip(wnids, words))
    return tuple(said[c] for c in classes) if classes and all(c in said for c in classes) else ()


def missing_eval_folder(root: Path) -> BadInput:
    """The refusal for an image folder with train/ and no evaluation split."""
    test = "; it has test/: to evaluate on it, name it val/" if (root / "test").is_dir() else ""
    return BadInput(f"{root} has train/ but no val/ (the evaluation split, expected as val/<class>/*; valid/, "
                    f"validation/, eval/ or evaluation/ are read as it too){test}")


def scan(split_dir: Path, classes: list[str] | None = None,
         cache_dir: Path | None = None) -> tuple[Samples, list[str]]:
    """(path, label) pairs (`Samples`: paths as str, under `split_dir`), classes in sorted folder-name order (as
    torchvision's ImageFolder); the folder's listing from `cache_dir`'s index when nothing changed (`listing`)."""
    if not split_dir.is_dir():
        from .imagenet import archives_hint

        raise BadInput(f"image folder {split_dir} does not exist (expected train/<class>/* and val/<class>/*)"
                       + archives_hint(split_dir.parent))
    files = listing(split_dir, cache_dir)
    found = list(files)
    classes = classes or found
    if not classes:
        raise BadInput(f"{split_dir} has no class folders")
    index = {c: i for i, c in enumerate(classes)}
    for c in found:
        if c not in index:
            raise BadInput(f"{split_dir / c} is a class the training split does not have")
    samples = Samples.of(split_dir, [rel for c in found for rel in files[c]],
                         [index[c] for c in found for _ in files[c]])
    if not len(samples):
        raise BadInput(f"{split_dir} holds no images ({', '.join(sorted(EXTENSIONS))})")
    if classes is found:  # the split that names the classes: a class without images could never be learnt
        present = set(np.unique(samples.labels).tolist())
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


def image_datasets(cfg, train: Samples | list, test: Samples | list, val: Samples | None = None):
    """(training, evaluation, held-out or None) datasets of these samples with `cfg`'s transforms: the crop
    data.image_size drawn as data.crop says, flipped with data.flip; evaluation at data.eval_image_size (0: the
    same) from data.eval_resize (the paper's 256/224 and [256, 480] scale kept in proportion to each crop).
    Image folders and shards (empty sample lists: their `prepare`) both use them; an image file is read within
    data.max_read_mb and data.read_timeout."""
    size, tested = cfg.image_size, cfg.eval_image_size or cfg.image_size
    limits = gate.Limits.of(cfg)
    resize = cfg.eval_resize or round(tested * 256 / 224)
    crop = TrainCrop(cfg.crop, (round(size * 256 / 224), round(size * 480 / 224)), tuple(cfg.crop_scale),
                     tuple(cfg.crop_ratio))

    def evaluated(samples):
        return ImageFolderDataset(samples, False, crop=tested, resize=resize, limits=limits,
                                  interpolation=cfg.eval_interpolation)

    return (ImageFolderDataset(train, True, crop=size, resize=resize, flip=cfg.flip, train_crop=crop, limits=limits,
                               interpolation=cfg.eval_interpolation, eval_crop=tested),
            evaluated(test), evaluated(val) if val else None)


class ImageFolderDataset(torch.utils.data.Dataset):
    def __init__(self, samples: Samples | list, train: bool, crop: int = 224, resize: int = 256,
                 train_crop: TrainCrop = TrainCrop(), flip: bool = True, views: Views = Views(),
                 limits: gate.Limits = gate.Limits(), interpolation: str = "bilinear", eval_crop: int = 0) -> None:
        self.samples, self.train, self.crop, self.resize = samples, train, crop, resize
        self.eval_crop = eval_crop or crop  # a training set's evaluation crop (data.eval_image_size); else `crop`
        self.interpolation = interpolation  # the evaluation resize's filter (data.eval_interpolation)
        self.limits = limits  # the bound and deadline on reading one image file (image_files.read)
        self.train_crop, self.flip = train_crop, flip
        self.views = views  # evaluation: the centre crop, 10 crops or whole images at several scales (Views)
        self.epoch_seed = 0
        self.stage_times: dict[str, float] | None = None  # `resnet data bench`: seconds per stage, in-process
        self.finish_in_worker = False  # training on the CPU: the worker resizes and flips too (crops.finished_crop)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]):
        """Training: (canvas, (h, w, flip), label), the crop's region for the device to resize (crops.py);
        evaluation: (the centre crop, or 10 crops, as uint8, label), or (a 2 x C x H x W uint8 tensor per scale,
        label) for whole images at several scales. `key` is an index, or (index, epoch seed[,
        copy]) from the loader's sampler: persistent workers keep their copy of the dataset, so the epoch travels
        with each index, and which copy of the image it is (data.aug_repeats: each copy its own crop)."""
        i, epoch_seed, copy = (*key, 0)[:3] if isinstance(key, tuple) else (key, self.epoch_seed, 0)
        path, label = self.samples[i]
        data = image_files.read(path, self.limits)
        return self.prepare(lambda: image_files.opened(data), epoch_seed * 1_000_003 + i + copy * 998_244_353, label,
                            str(path))

    def prepare(self, open_image, draw: int, label: int, where: str):
        """One sample from `open_image()` (a PIL image, not yet decoded): for training, its random region drawn
        from the seed `draw` (crops.py); for evaluation, the transform below. A file that cannot be decoded is
        a RuntimeError naming `where` (workers can only pass exceptions on as text; `decode_error` reads it)."""
        try:
            if self.train:
                rng = random.Random(draw)
                im = open_image()  # opened once: the header gives the size, then decode_region decodes and closes
                box = self.train_crop.box(*image_files.shown_size(im), rng, self.crop)  # upright
                flip = int(self.flip and rng.random() < 0.5)
                if self.finish_in_worker:  # the crop itself, mirrored: nothing is left for the (CPU) device
                    done = finished_crop(lambda: im, box, self.crop, flip, lambda im: upright_8bit(im, "RGB"),
                                         self.stage_times)
                    return done, torch.tensor([self.crop, self.crop, 0], dtype=torch.int32), label
                canvas, h, w = decode_region(lambda: im, box, canvas_side(self.crop),
                                             lambda im: upright_8bit(im, "RGB"), self.stage_times)
                return canvas, torch.tensor([h, w, flip], dtype=torch.int32), label
            with open_image() as im:
                img = upright_8bit(im, "RGB")
        except image_files.errors() as e:
            raise RuntimeError(f"{MARKER}{where} ({image_files.reason(e)})") from None
        if self.views.scales:
            return whole_views(img, self.views.scales, self.interpolation), label
        if self.views.ten_crop:
            return ten_crops(img, self.resize, self.crop, self.interpolation), label
        return center_crop(img, self.resize, self.crop, self.crop, self.interpolation), label

    def for_training(self, train: bool) -> "ImageFolderDataset":
        """The same images with the training (random) or evaluation (centre crop) transform."""
        if train == self.train:
            return self
        if train:
            raise ValueError("an evaluation set has no training crop")  # only training sets are also evaluated
        return ImageFolderDataset(self.samples, False, crop=self.eval_crop, resize=self.resize, flip=self.flip,
                                  train_crop=self.train_crop, limits=self.limits, interpolation=self.interpolation)

    def finishing_for(self, device: torch.device) -> "ImageFolderDataset":
        """This training transform for a loader on `device`: on a GPU the worker leaves the resize and flip to
        the device (one grid_sample per batch); on the CPU the device is these same cores, so the worker does
        them (Pillow, antialiased) and nothing is left to do after collation."""
        import copy

        finish = self.train and device.type == "cpu"
        if finish == self.finish_in_worker:
            return self
        out = copy.copy(self)
        out.finish_in_worker = finish
        return out

    def for_testing(self, resize: int, views: Views, crop: int = 0) -> "ImageFolderDataset":
        """The same images evaluated after another resize, at another crop (0: this one), or seen another way
        (`views`: 10 crops each, or whole at several scales)."""
        return ImageFolderDataset(self.samples, False, crop=crop or self.eval_crop, resize=resize, flip=self.flip,
                                  train_crop=self.train_crop, views=views, limits=self.limits,
                                  interpolation=self.interpolation)


def decode_error(e: RuntimeError) -> BadInput | None:
    """The one line naming an image that could not be decoded, from a worker's error (`prepare`); None if the
    error is another."""
    line = next((ln for ln in str(e).splitlines() if MARKER in ln), None)
    return None if line is None else BadInput(line[line.index(MARKER) + len("resnet-cli: "):])


class _Order(torch.utils.data.Sampler):
    """The keys of this epoch's samples, (index, epoch seed, copy), in order; set by the loader before each
    epoch."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int, int]] = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class FolderLoader(DescribedByInput):
    """The `Loader` of image folders: decoded and cropped in DataLoader workers, normalised (and given the
    batch augmentations) on the device; sharded by rank. A training loader's workers persist across epochs
    (started once per run, as timm's); an evaluation loader's start at each evaluation."""

    def __init__(self, dataset: ImageFolderDataset, batch_size: int, input: InputSpec, device: torch.device,
                 train: bool, seed: int = 0, channels_last: bool = False, rank: int = 0, world: int = 1,
                 workers: int = 4, augment=None, prefetch: bool = True, repeats: int = 1) -> None:
        self.dataset = dataset.for_training(train).finishing_for(device)
        self.repeats = repeats if train else 1  # data.aug_repeats
        self.batch_size, self.device, self.train = batch_size, device, train
        self.input = input
        self.mean, self.std = input.normalizer(device)
        self.seed, self.channels_last, self.rank, self.world, self.workers = seed, channels_last, rank, world, workers
        self.augment = augment  # TrainAugment's batch ops (crop and flip happened while decoding)
        self.prefetch = prefetch  # data.prefetch: uploads one batch ahead on a side stream (on_device)
        self._order = _Order()
        self._loader = None

    def __len__(self) -> int:
        return shard_len(len(self.dataset), self.batch_size, self.train, self.rank, self.world)

    def indices(self, epoch: int) -> list[int]:
        return shard_indices(len(self.dataset), self.batch_size, self.train, self.rank, self.world, self.seed,
                             epoch, repeats=self.repeats).tolist()

    def data_loader(self) -> torch.utils.data.DataLoader:
        """The one DataLoader of this loader, its sampler reset each epoch (`_Order`)."""
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self.dataset, batch_size=self.batch_size, sampler=self._order, num_workers=self.workers,
                pin_memory=self.device.type == "cuda", persistent_workers=self.train and self.workers > 0,
                multiprocessing_context=worker_context() if self.workers else None)
        return self._loader

    def close(self) -> None:
        """Stop the persistent workers (they end with the DataLoader that owns them); the next epoch starts new."""
        self._loader = None

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch_seed, first = self.seed * 7_919 + epoch, start * self.batch_size
        copies = shard_copies(len(self.dataset), self.batch_size, self.rank, self.world, self.repeats) \
            if self.repeats > 1 else None
        self._order.keys = [(i, epoch_seed, copies[first + k] if copies else 0)
                            for k, i in enumerate(self.indices(epoch)[first:])]
        yield from on_device(self, self.data_loader(), self.dataset.crop, epoch, start)


def on_device(loader, worker_batches, crop: int, epoch: int, start: int):
    """The batches of DataLoader workers (image folders' or shards'), finished on `loader`'s device: uploaded
    (`uploads`), training regions resized to the crop (crops.py), 10-crop stacks flattened, then `model_batch`; an
    image a worker could not decode is its one line (`decode_error`). Whole images at several scales (Views) are
    a list of batches, one per scale."""
    try:
        for b, batch in enumerate(uploads(worker_batches, loader.device, loader.prefetch), start=start):
            if loader.train:  # regions on canvases: the device resizes them to the crop size
                xb, sizes, yb = batch
                if xb.shape[-1] != crop:  # finished in the worker where the device is the CPU (crops.finished_crop)
                    xb = resize_crops(xb, sizes, crop)
            else:
                xb, yb = batch
                if isinstance(xb, list):  # whole images at several scales: B x 2 views per scale -> 2B, each
                    yield ([model_batch(x.flatten(0, 1), yb, loader.mean, loader.std, None, 0, loader.channels_last)[0]
                            for x in xb], yb)
                    continue
                xb = xb.flatten(0, 1) if xb.ndim == 5 else xb  # 10-crop: B x 10 images -> 10B, labels stay B
            yield model_batch(xb, yb, loader.mean, loader.std, loader.augment if loader.train else None,
                              batch_seed(loader.seed, epoch, b, loader.rank), loader.channels_last)
    except RuntimeError as e:
        bad = decode_error(e)
        if bad is None:
            raise
        raise bad from None


def uploads(batches, device: torch.device, ahead: bool):
    """Each batch (a tuple of host tensors, pinned by the DataLoader on CUDA) on `device`.

    On CUDA with `ahead` (data.prefetch), batch i+1 is copied on a side stream before batch i is handed out: the
    copy runs beside the steps already queued on the compute stream instead of after them (87 MB a batch for
    ResNet-50 at 256 on the 1.5x canvas). The compute stream waits for that batch's copy alone (an event), and the
    tensors are marked as used there, so the allocator keeps them until the step that reads them is done.
    Elsewhere (the CPU, or prefetch off) each batch is copied where it is handed out, on the current stream."""
    if device.type != "cuda" or not ahead:
        for batch in batches:
            yield tuple(_each(t, lambda t: t.to(device, non_blocking=True)) for t in batch)
        return
    side = torch.cuda.Stream(device)

    def stage(batch):
        with torch.cuda.stream(side):
            moved = tuple(_each(t, lambda t: t.to(device, non_blocking=True)) for t in batch)
            copied = torch.cuda.Event()
            copied.record(side)
        return moved, copied

    def hand(staged):
        moved, copied = staged
        compute = torch.cuda.current_stream(device)
        compute.wait_event(copied)
        for t in moved:
            _each(t, lambda t: t.record_stream(compute))
        return moved

    yield from one_ahead(batches, stage, hand)


def _each(t, fn):
    """`fn` of a tensor, or of each tensor of a list (whole images at several scales: one tensor per scale)."""
    return [fn(x) for x in t] if isinstance(t, list) else fn(t)


def one_ahead(items, stage, hand):
    """`hand(stage(item))` for each item, in order, with item i+1 staged before item i is handed out."""
    pending = None
    for item in items:
        staged = stage(item)
        if pending is not None:
            yield hand(pending)
        pending = staged
    if pending is not None:
        yield hand(pending)
