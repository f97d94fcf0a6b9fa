"""`resnet data convert`: an image folder's train/ and val/ as tar shards in the WebDataset layout, with the index
data/shard_source.py reads. Deterministic, resumable after an interruption, and never over a user's files: an
output folder that holds shard-named files without our conversion state or index is refused without --force."""

from __future__ import annotations

import io
import json
import random
from collections import deque
from pathlib import Path
from typing import Any, Callable

from .. import gate
from ..errors import BadInput
from ..files import atomic_write, atomic_write_text, ensure_writable_dir
from . import image_files
from .shard_source import FORMAT, INDEX, VERSION

STATE = ".convert-state.json"
# What a conversion writes in its folder: the shards, and the temporary files of their atomic writes.
OWN_FILES = ("train-*.tar", "val-*.tar")
OWN_TEMPORARIES = (".train-*.tmp.*.tar", ".val-*.tmp.*.tar", ".index.tmp.*.json", ".convert-state.tmp.*.json")


def convert(folder: Path, out: Path, shard_images: int = 0, shard_mb: float = 0, max_size: int = 0,
            quality: int = 90, force: bool = False,
            on_progress: Callable[[int, int], None] | None = None,
            on_unreadable: Callable[[str, str], None] | None = None, workers: int = 0) -> dict[str, Any]:
    """`resnet data convert`: `folder`'s train/ and val/ as shards in `out` (module docstring). The training
    samples are shuffled once (a fixed seed) so that every shard mixes the classes; val/ keeps its order.
    Deterministic: the same folder and settings give the same bytes, whatever `workers` (processes that read,
    check and re-encode the images ahead of the writer, in order; 0: this process). Shards written before an
    interruption are kept (checked against their sha256) and the rest written; `force` starts over."""
    from .imagefolder import descriptions, eval_folder, scan

    if not 0 < quality <= 100:
        raise BadInput(f"--quality must be 1..100, got {quality}")
    if (shard_images > 0) == (shard_mb > 0):
        raise BadInput("give the shard size as --shard-images N or --shard-mb M (one of them)")
    train, classes = scan(folder / "train")
    evaluated = eval_folder(folder)  # val/, or a name timm also reads for it (valid/, ...); the shards' "val"
    val, _ = scan(evaluated, classes) if evaluated else ([], classes)
    order = list(range(len(train)))
    random.Random(f"convert {len(train)}").shuffle(order)  # the order a shuffle of the pairs themselves had
    train = train.take(order)
    settings = {"shard_images": shard_images, "shard_mb": shard_mb, "max_size": max_size, "quality": quality,
                "classes": classes, "train": len(train), "val": len(val)}
    ensure_writable_dir(out)
    state_path = out / STATE
    if (out / INDEX).exists() and not force:
        raise BadInput(f"{out / INDEX} exists: these shards are written; add --force to write them again")
    state = {"settings": settings, "done": {}}
    for temporary in (t for pattern in OWN_TEMPORARIES for t in out.glob(pattern)):  # left by an interruption
        temporary.unlink(missing_ok=True)
    if state_path.exists() and not force:
        state = _saved_state(state_path, settings, out)
    elif force:
        for old in [p for pattern in OWN_FILES for p in out.glob(pattern)] + [out / INDEX]:
            if old.is_file() or old.is_symlink():
                old.unlink()
    else:
        theirs = sorted(p.name for pattern in OWN_FILES for p in out.glob(pattern))
        if theirs:
            raise BadInput(f"{out} holds {theirs[0]}" + (f" and {len(theirs) - 1} more" if len(theirs) > 1 else "")
                           + " but no conversion of ours (no index.json, no interrupted conversion): they would be "
                           "replaced; choose another folder, or add --force")

    with _Encoder(max_size, quality, workers) as encoder:
        splits, unreadable = _write_splits(out, {"train": train, "val": val}, state, shard_images, shard_mb,
                                           encoder, on_progress, on_unreadable)
    if not splits.get("train") and not splits.get("val"):
        raise BadInput(f"no image of {folder} could be read")
    described = descriptions(folder, classes)  # what each class is, where the folder says (synset_words.txt)
    index = {"format": FORMAT, "version": VERSION, "classes": classes, **({"descriptions": list(described)}
                                                                         if described else {}), "splits": splits,
             "max_size": max_size or None, "quality": quality if max_size else None,
             "unreadable": len(unreadable), "unreadable_files": unreadable[:1000]}
    atomic_write_text(out / INDEX, json.dumps(index, indent=1) + "\n")
    state_path.unlink(missing_ok=True)
    return {"out": str(out), "classes": len(classes), "unreadable": unreadable,
            **{f"{k}_images": v["count"] for k, v in splits.items()},
            **{f"{k}_shards": len(v["shards"]) for k, v in splits.items()},
            "bytes": sum(s["bytes"] for v in splits.values() for s in v["shards"])}


def _write_splits(out: Path, split_samples: dict[str, list], state: dict[str, Any], shard_images: int,
                  shard_mb: float, encoder: "_Encoder", on_progress, on_unreadable) -> tuple[dict, list]:
    """Each split's shards (kept from an interrupted conversion where intact, else written), and the unreadable
    images left out."""
    total, done_images = sum(len(s) for s in split_samples.values()), 0
    unreadable: list[dict[str, str]] = []
    splits = {}
    limit = shard_mb * 2**20
    state_path = out / STATE
    for split, samples in split_samples.items():
        if not samples:
            continue
        shards: list[dict] = []
        i = 0
        while i < len(samples):
            name = f"{split}-{len(shards):06d}.tar"
            previous = state["done"].get(name)
            if previous and previous.get("first") == i and (out / name).exists() \
                    and gate.digest(out / name) == previous["sha256"]:
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
                image, ext = encoder.get(samples, i)
                if image is None:  # unreadable: `ext` says why
                    skipped.append({"path": str(path), "error": ext})
                    if on_unreadable is not None:
                        on_unreadable(str(path), ext)
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
    return splits, unreadable


def default_workers() -> int:
    """`data convert --workers`' default: every core this process may use, at most 32 (the writer mostly waits for
    them); none on one core, where a worker would only add the hand-over. On 2 cores, 1,100 ImageNet-sized JPEGs
    to --max-size 320: 6.4-6.6 s with 2 workers, 6.8-8.2 s with none, 8.3-9.3 s with 1 (2026-12-06)."""
    from ..config import usable_cores

    cores = usable_cores()
    return min(32, cores) if cores > 1 else 0


class _Encoder:
    """`_encoded` of samples[i], i counting up from where the writer starts: in this process (`workers` 0), or
    computed by `workers` processes up to AHEAD images per worker ahead of the writer and handed over in order
    (bounded, so a slow disk never lets encoded images pile up in memory). A request that does not follow the
    last (a shard kept from an interrupted conversion was skipped) starts the window again there."""

    AHEAD = 8

    def __init__(self, max_size: int, quality: int, workers: int) -> None:
        self.max_size, self.quality, self.workers = max_size, quality, workers
        self.pool = None
        self.pending: deque | None = None  # futures of samples[next:submitted]
        self.samples, self.next, self.submitted = None, 0, 0

    def __enter__(self) -> "_Encoder":
        if self.workers > 0:
            from concurrent.futures import ProcessPoolExecutor

            from .loader import worker_context

            self.pool = ProcessPoolExecutor(self.workers, mp_context=worker_context(), initializer=_leave_interrupts)
            self.pending = deque()
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def get(self, samples: list, i: int) -> tuple[bytes | None, str]:
        """(bytes, extension) of samples[i], or (None, why it is unreadable)."""
        if self.pool is None:
            return encode_job((samples[i][0], self.max_size, self.quality))
        if samples is not self.samples or i != self.next:
            for future in self.pending:
                future.cancel()
            self.pending.clear()
            self.samples, self.next, self.submitted = samples, i, i
        while self.submitted < len(samples) and self.submitted < i + self.AHEAD * self.workers:
            self.pending.append(self.pool.submit(encode_job, (samples[self.submitted][0], self.max_size,
                                                              self.quality)))
            self.submitted += 1
        self.next += 1
        return self.pending.popleft().result()


def _leave_interrupts() -> None:
    """A worker leaves Ctrl-C to the converting process, which stops the pool (no traceback from each worker)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def encode_job(job: tuple[str, int, int]) -> tuple[bytes | None, str]:
    """`_encoded` for a worker process: (bytes, extension), or (None, the reason) for an unreadable image."""
    try:
        return _encoded(*job)
    except _Unreadable as e:
        return None, str(e)


def _saved_state(path: Path, settings: dict[str, Any], out: Path) -> dict[str, Any]:
    """The state an interrupted conversion left, if it was of these settings and files."""
    try:
        saved = gate.json_bytes(gate.read_file(path, gate.Limits(64 * 2**20)), str(path))
    except BadInput:
        saved = {}
    if not isinstance(saved, dict) or saved.get("settings") != settings or not isinstance(saved.get("done"), dict):
        raise BadInput(f"{out} holds an interrupted conversion with other settings or files; add --force to "
                       "start over")
    return saved


class _Unreadable(Exception):
    pass


def _encoded(path: str, max_size: int, quality: int) -> tuple[bytes, str]:
    """The image's bytes as they will be stored, and their extension: the file itself, or (with `max_size`,
    when its longer side is larger) re-encoded as JPEG with the longer side at `max_size`, turned upright as its
    EXIF orientation says (a file kept as it is keeps its tag, which every reader applies)."""
    from PIL import Image

    from .transforms import upright_8bit

    try:
        data = image_files.read(path)
    except BadInput as e:
        raise _Unreadable(str(e)) from None
    try:
        with image_files.opened(data) as im:
            fmt, size = im.format, image_files.shown_size(im)  # re-encoded upright: its EXIF tag is not kept
            if max_size and max(size) > max_size:
                im.draft("RGB", (im.size[0] * max_size // max(size), im.size[1] * max_size // max(size)))
                img = upright_8bit(im, "RGB")
                scale = max_size / max(size)
                img = img.resize((max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), Image.BICUBIC)
                buffer = io.BytesIO()
                img.save(buffer, "JPEG", quality=quality)
                return buffer.getvalue(), "jpg"
            im.load()  # a truncated file fails here, not in training
    except image_files.errors() as e:
        raise _Unreadable(image_files.reason(e)) from None
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "PPM": "ppm", "TIFF": "tif"}.get(fmt)
    if ext is None:
        raise _Unreadable(f"format {fmt} is not stored in shards (JPEG, PNG, WebP, BMP, PPM, TIFF)")
    return data, ext


def _write_shard(path: Path, samples: list[tuple[str, str, bytes, int]]) -> dict[str, Any]:
    import webdataset as wds

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f, wds.TarWriter(f, user="", group="", mtime=0, encoder=False) as sink:
            for key, ext, image, label in samples:
                sink.write({"__key__": key, ext: image, "cls": str(label).encode()})

    atomic_write(path, write)
    return {"name": path.name, "count": len(samples), "bytes": path.stat().st_size, "sha256": gate.digest(path)}
