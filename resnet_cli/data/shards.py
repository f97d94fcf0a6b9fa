"""Image datasets as tar shards in the WebDataset layout: `resnet data convert` writes them, `data.dataset: shards`
reads them from a folder, over http(s), or through a `pipe:` command (object stores through their CLIs).

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
import json
import math
import random
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import torch

from ..errors import BadInput
from .inputs import DescribedByInput, InputSpec

INDEX = "index.json"
FORMAT = "resnet-cli-shards"
VERSION = 1
MAX_INDEX_BYTES = 64 * 2**20  # an index lists shards, not images: far below this
SHARD_SPLIT = {"train": "train", "test": "val"}  # our split -> the shards' (an image folder's val/ is its test)


# ---------------------------------------------------------------- where shards are read from

@dataclass(frozen=True)
class Source:
    """A place shards are read from: a folder, an http(s) base URL, or `pipe:COMMAND` with `{}` standing for
    the file name (`pipe:aws s3 cp s3://bucket/imagenet/{} -`)."""

    location: str

    @property
    def kind(self) -> str:
        if self.location.startswith("pipe:"):
            return "pipe"
        if self.location.startswith(("http://", "https://")):
            return "http"
        return "local"

    @staticmethod
    def recognises(location: str) -> bool:
        """A URL or a pipe, or a folder holding our index."""
        if location.startswith(("pipe:", "http://", "https://")):
            return True
        return _is_our_index(Path(location).expanduser() / INDEX)

    def read(self, name: str, limit: int | None = None) -> bytes:
        """The bytes of file `name`; BadInput (one line) when they cannot be had."""
        if "/" in name or name.startswith("."):
            raise BadInput(f"shard name {name!r} in the index is not a plain file name")
        where = self.where(name)
        try:
            if self.kind == "local":
                with open(where, "rb") as f:
                    data = f.read(limit + 1 if limit else -1)
            elif self.kind == "http":
                import urllib.request

                from .download import check_url

                check_url(where)
                with urllib.request.urlopen(where, timeout=60) as response:
                    data = response.read(limit + 1 if limit else -1)
            else:
                done = subprocess.run(where, shell=True, capture_output=True, timeout=3600)
                if done.returncode != 0:
                    err = done.stderr.decode(errors="replace").strip().splitlines()
                    raise BadInput(f"{where!r} exited with {done.returncode}" + (f": {err[-1][:200]}" if err else ""))
                data = done.stdout
        except BadInput:
            raise
        except Exception as e:  # noqa: BLE001 - any failure to fetch is one line naming the file
            raise BadInput(f"cannot read {where}: {str(e)[:200] or type(e).__name__}") from None
        if limit and len(data) > limit:
            raise BadInput(f"{where} is larger than {limit // 2**20} MiB: not an index of ours")
        return data

    def where(self, name: str) -> str:
        if self.kind == "pipe":
            command = self.location[len("pipe:"):]
            return command.replace("{}", name) if "{}" in command else f"{command} {name}"
        if self.kind == "http":
            return self.location.rstrip("/") + "/" + name
        return str(Path(self.location).expanduser() / name)


def refuse_saved_command(saved_dir: str, given: str | None, where: str) -> None:
    """A `pipe:` data_dir read from a checkpoint is never run: a run folder from elsewhere could name any
    command. The user gives it again (--data-dir) to run it."""
    if str(saved_dir).startswith("pipe:") and not given:
        raise BadInput(f"{where} reads its data through a command ({str(saved_dir)[:80]}); a command from a "
                       "checkpoint is never run: give --data-dir (the same one, if you trust it)")


def _is_our_index(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return FORMAT.encode() in head


def read_index(source: Source) -> dict[str, Any]:
    """The index, checked: our format and version, classes, and each shard's name, count, bytes and sha256."""
    raw = source.read(INDEX, MAX_INDEX_BYTES)
    where = source.where(INDEX)
    try:
        index = json.loads(raw)
    except ValueError as e:
        raise BadInput(f"{where} is not JSON ({e})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise BadInput(f"{where} is not a shard index written by resnet data convert")
    if index.get("version") != VERSION:
        raise BadInput(f"{where} has version {index.get('version')!r}; this resnet-cli reads version {VERSION}")
    classes = index.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise BadInput(f"{where}: classes must be a non-empty list of names")
    splits = index.get("splits")
    if not isinstance(splits, dict) or "train" not in splits and "val" not in splits:
        raise BadInput(f"{where}: no train or val split")
    for split, entry in splits.items():
        shards = entry.get("shards") if isinstance(entry, dict) else None
        if split not in SHARD_SPLIT.values() or not isinstance(shards, list) or not shards:
            raise BadInput(f"{where}: split {split!r} must be train or val, with a list of shards")
        for s in shards:
            ok = isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("sha256"), str) \
                and isinstance(s.get("count"), int) and s["count"] > 0 and isinstance(s.get("bytes"), int)
            if not ok:
                raise BadInput(f"{where}: a {split} shard entry lacks name, count, bytes or sha256: {str(s)[:120]}")
        if entry.get("count") != sum(s["count"] for s in shards):
            raise BadInput(f"{where}: the {split} count is not the sum of its shards' counts")
    return index


# ---------------------------------------------------------------- reading one shard

def read_shard(source: Source, shard: dict[str, Any], num_classes: int) -> list[tuple[str, bytes, int]]:
    """(key, image bytes, label) of every sample of `shard`, in the tar's order, its sha256 and count checked."""
    data = source.read(shard["name"])
    where = source.where(shard["name"])
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
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
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


IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "tif", "tiff")


# ---------------------------------------------------------------- the plan of an epoch

def train_plan(shards: list[dict], seed: int, epoch: int, rank: int, world: int, workers: int,
               batch_size: int) -> tuple[list[list[int]], int]:
    """(each role's shard indices in reading order, batches per role) for this rank's training epoch."""
    if len(shards) < world:
        raise BadInput(f"{len(shards)} training shard(s) cannot be shared by {world} processes: convert with "
                       "smaller shards (--shard-images)")
    order = list(range(len(shards)))
    random.Random(f"shards {seed} {epoch}").shuffle(order)
    roles = max(1, min(workers, len(shards) // world))

    # Every role reads at least `least` shards whatever the permutation, so the k smallest shards bound what any
    # role holds: the same number of batches in every epoch, on every rank and role.
    least = len(shards) // (world * roles)
    per_role = sum(sorted(s["count"] for s in shards)[:least]) // batch_size
    if per_role == 0:
        raise BadInput(f"{len(shards)} training shard(s) of {min(s['count'] for s in shards)}+ images do not make a "
                       f"batch of {batch_size} for each of {world} process(es) x {roles} worker(s): lower the batch "
                       "size or the workers, or convert with more shards")
    return [order[rank::world][j::roles] for j in range(roles)], per_role


def sample_order(count: int, seed: int, epoch: int, shard: int) -> list[int]:
    order = list(range(count))
    random.Random(f"samples {seed} {epoch} {shard}").shuffle(order)
    return order


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
        from PIL import Image

        return self.prepare(lambda: Image.open(io.BytesIO(image)), draw, label,
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

    def split_shards(self, split: str) -> list[dict]:
        name = SHARD_SPLIT[split]
        entry = self.index["splits"].get(name)
        if entry is None:
            raise BadInput(f"{self.source.where(INDEX)} has no {name} split")
        return entry["shards"]

    def train_tensors(self, what: str):
        raise BadInput(f"{what} reads datasets that fit in memory: synthetic, mnist, fashion-mnist, cifar10/100")

    def tested(self, crop_pct: float = 0.0, ten_crop: bool = False) -> "ShardData":
        import dataclasses

        crop = self.input.image_size[0]
        resize = round(crop / crop_pct) if crop_pct else self.input.resize
        return dataclasses.replace(self, test_set=self.test_set.for_testing(resize, ten_crop),
                                   input=dataclasses.replace(self.input, resize=resize))

    def loader(self, split: str, batch_size: int, device, *, training: bool, augment=None, seed: int = 0,
               channels_last: bool = False, rank: int = 0, world: int = 1):
        if split == "val":
            raise BadInput("shards carry their own splits (train, val): data.val_split holds images out of an "
                           "image folder only")
        transform = self.train_set if training else self.test_set
        stream = ShardStream(self.source, self.split_shards(split), transform.prepare, self.num_classes, training,
                             batch_size, seed, rank, world, self.workers)
        return ShardLoader(stream, transform, batch_size, self.input, device, channels_last, augment)


class ShardLoader(DescribedByInput):
    """The `Loader` of shards: a DataLoader over `ShardStream`, started at each epoch; batches finished on the
    device as the image folders' are."""

    def __init__(self, stream: ShardStream, transform, batch_size: int, input: InputSpec, device,
                 channels_last: bool, augment) -> None:
        self.stream, self.transform, self.batch_size, self.input = stream, transform, batch_size, input
        self.device, self.channels_last, self.augment = device, channels_last, augment
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
    source = Source(location)
    index = read_index(source)
    if classes is not None and list(classes) != index["classes"]:
        raise BadInput(f"{source.where(INDEX)} has other classes than the checkpoint was trained on")
    train, test, _ = image_datasets(cfg, [], [])
    spec = InputSpec.of(index["classes"], 3, test.crop, test.resize, IMAGENET_MEAN, IMAGENET_STD)
    return ShardData(source, index, spec, train, test, workers=cfg.workers)


# ---------------------------------------------------------------- writing: resnet data convert

def convert(folder: Path, out: Path, shard_images: int = 0, shard_mb: float = 0, max_size: int = 0,
            quality: int = 90, force: bool = False,
            on_progress: Callable[[int, int], None] | None = None,
            on_unreadable: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """`resnet data convert`: `folder`'s train/ and val/ as shards in `out` (module docstring). The training
    samples are shuffled once (a fixed seed) so that every shard mixes the classes; val/ keeps its order.
    Deterministic: the same folder and settings give the same bytes. Shards written before an interruption are
    kept (checked against their sha256) and the rest written; `force` starts over."""
    from .imagefolder import scan

    if not 0 < quality <= 100:
        raise BadInput(f"--quality must be 1..100, got {quality}")
    if (shard_images > 0) == (shard_mb > 0):
        raise BadInput("give the shard size as --shard-images N or --shard-mb M (one of them)")
    train, classes = scan(folder / "train")
    val, _ = scan(folder / "val", classes) if (folder / "val").is_dir() else ([], classes)
    random.Random(f"convert {len(train)}").shuffle(train)
    settings = {"shard_images": shard_images, "shard_mb": shard_mb, "max_size": max_size, "quality": quality,
                "classes": classes, "train": len(train), "val": len(val)}
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / ".convert-state.json"
    if (out / INDEX).exists() and not force:
        raise BadInput(f"{out / INDEX} exists: these shards are written; add --force to write them again")
    state = {"settings": settings, "done": {}}
    if state_path.exists() and not force:
        try:
            saved = json.loads(state_path.read_text())
        except ValueError:
            saved = {}
        if saved.get("settings") != settings:
            raise BadInput(f"{out} holds an interrupted conversion with other settings or files; add --force to "
                           "start over")
        state = saved
    elif force:
        for old in list(out.glob("train-*.tar")) + list(out.glob("val-*.tar")) + [out / INDEX]:
            old.unlink(missing_ok=True)
    from ..files import atomic_write_text

    total, done_images = len(train) + len(val), 0
    unreadable: list[dict[str, str]] = []
    splits = {}
    limit = shard_mb * 2**20
    for split, samples in (("train", train), ("val", val)):
        if not samples:
            continue
        shards: list[dict] = []
        i = 0
        while i < len(samples):
            name = f"{split}-{len(shards):06d}.tar"
            previous = state["done"].get(name)
            if previous and previous.get("first") == i and (out / name).exists() \
                    and _sha256_file(out / name) == previous["sha256"]:
                shards.append(previous)  # written before an interruption, and intact: its images are not read
                unreadable += previous.get("unreadable", [])
                done_images += previous["next"] - i
                i = previous["next"]
                if on_progress is not None:
                    on_progress(done_images, total)
                continue
            first, batch, batch_bytes, skipped = i, [], 0, []
            while i < len(samples) and not ((shard_images and len(batch) >= shard_images)
                                            or (limit and batch_bytes >= limit)):
                path, label = samples[i]
                try:
                    image, ext = _encoded(path, max_size, quality)
                except _Unreadable as e:
                    skipped.append({"path": str(path), "error": str(e)})
                    if on_unreadable is not None:
                        on_unreadable(str(path), str(e))
                else:
                    batch.append((f"{i:08d}", ext, image, label))
                    batch_bytes += len(image) + 1024  # the tar headers
                i += 1
                done_images += 1
                if on_progress is not None:
                    on_progress(done_images, total)
            unreadable += skipped
            if not batch:
                continue
            entry = {**_write_shard(out / name, batch), "first": first, "next": i, "unreadable": skipped}
            state["done"][name] = entry
            atomic_write_text(state_path, json.dumps(state))
            shards.append(entry)
        shards = [{k: v for k, v in e.items() if k in ("name", "count", "bytes", "sha256")} for e in shards]
        if shards:
            splits[split] = {"count": sum(e["count"] for e in shards), "shards": shards}
    if not splits.get("train") and not splits.get("val"):
        raise BadInput(f"no image of {folder} could be read")
    index = {"format": FORMAT, "version": VERSION, "classes": classes, "splits": splits,
             "max_size": max_size or None, "quality": quality if max_size else None,
             "unreadable": len(unreadable), "unreadable_files": unreadable[:1000]}
    atomic_write_text(out / INDEX, json.dumps(index, indent=1) + "\n")
    state_path.unlink(missing_ok=True)
    return {"out": str(out), "classes": len(classes), "unreadable": unreadable,
            **{f"{k}_images": v["count"] for k, v in splits.items()},
            **{f"{k}_shards": len(v["shards"]) for k, v in splits.items()},
            "bytes": sum(s["bytes"] for v in splits.values() for s in v["shards"])}


class _Unreadable(Exception):
    pass


def _encoded(path: Path, max_size: int, quality: int) -> tuple[bytes, str]:
    """The image's bytes as they will be stored, and their extension: the file itself, or (with `max_size`,
    when its longer side is larger) re-encoded as JPEG with the longer side at `max_size`."""
    from PIL import Image, UnidentifiedImageError

    from .transforms import eight_bit

    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, size = im.format, im.size
            if max_size and max(size) > max_size:
                im.draft("RGB", (size[0] * max_size // max(size), size[1] * max_size // max(size)))
                img = eight_bit(im, "RGB")
                scale = max_size / max(size)
                img = img.resize((max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), Image.BICUBIC)
                buffer = io.BytesIO()
                img.save(buffer, "JPEG", quality=quality)
                return buffer.getvalue(), "jpg"
            im.load()  # a truncated file fails here, not in training
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise _Unreadable(str(e)[:200] or type(e).__name__) from None
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "PPM": "ppm", "TIFF": "tif"}.get(fmt)
    if ext is None:
        raise _Unreadable(f"format {fmt} is not stored in shards (JPEG, PNG, WebP, BMP, PPM, TIFF)")
    return data, ext


def _write_shard(path: Path, samples: list[tuple[str, str, bytes, int]]) -> dict[str, Any]:
    import webdataset as wds

    from ..files import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f, wds.TarWriter(f, user="", group="", mtime=0, encoder=False) as sink:
            for key, ext, image, label in samples:
                sink.write({"__key__": key, ext: image, "cls": str(label).encode()})

    atomic_write(path, write)
    return {"name": path.name, "count": len(samples), "bytes": path.stat().st_size, "sha256": _sha256_file(path)}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()
