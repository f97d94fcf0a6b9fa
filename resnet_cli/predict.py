"""`resnet predict`: class probabilities for image files, with the run's own evaluation transform.

The transform is the one evaluation used in training, from what the checkpoint carries (data.InputSpec,
`transform`): grayscale or RGB as the model expects; for image-folder runs the shorter side resized to
`resize` and a centre crop (exactly `resnet eval`'s), otherwise a resize to the training image size;
then the training data's per-channel normalisation. Images are files, folders or http(s) URLs (as Ultralytics
takes them; through the gate: https, or http on loopback). An unreadable file or URL is named and skipped.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from . import gate
from .errors import BadInput

# The bound and deadline on reading one image (predict has no data.* settings; data.max_read_mb's default).
IMAGE_LIMITS = gate.Limits(keys=("the bound on an image file", "the deadline on an image file"))


def is_url(item: str | Path) -> bool:
    return isinstance(item, str) and item.startswith(("https://", "http://"))


def list_images(paths: Iterable[str | Path]) -> list[Path | str]:
    """Files as given; folders searched recursively for images, in sorted order, hidden names left out (macOS's
    `._photo.jpg`, `.ipynb_checkpoints/`: image_files.hidden); http(s) URLs as given (str), each one the gate
    allows (https; http on loopback alone)."""
    from .data.image_files import EXTENSIONS, hidden

    found: list[Path | str] = []
    for item in paths:
        if is_url(item):
            gate.check_url(str(item))
            found.append(str(item))
            continue
        p = Path(item)
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in EXTENSIONS
                            and not any(map(hidden, f.relative_to(p).parts)) and f.is_file())
        elif p.is_file():
            found.append(p)
        elif p.exists():  # a FIFO or a device: the gate names which, and refuses it
            gate.open_regular(p, "image").close()
        else:
            raise BadInput(f"no such file or folder: {p}")
    if not found:
        raise BadInput(f"no images found in {', '.join(map(str, paths))}")
    return found


def read_image(item: Path | str, spec) -> torch.Tensor:
    """One image (a file, or a URL: its body fetched through the gate, within the same bound and deadline) as a
    uint8 C x H x W tensor, transformed as the run's evaluation did (InputSpec.transform)."""
    from .data import image_files

    data = gate.read_url(item, IMAGE_LIMITS) if is_url(item) else image_files.read(item, IMAGE_LIMITS)
    with image_files.opened(data) as im:
        return spec.transform(im)


def predict(source, paths: list[str | Path], topk: int = 5, batch_size: int = 64, device: str = "auto",
            model: str | None = None, dataset: str | None = None,
            on_batch: Callable[[int, int], None] | None = None, trust_exported: bool = False,
            workers: int | None = None) -> dict[str, Any]:
    """Top-k classes and probabilities for every readable image under `paths`; `trust_exported`: load a .pt2
    file `resnet export` did not write for this user (exported.py); `workers`: threads reading the images
    (`read_batches`; None: one a core)."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise BadInput('predict reads images with Pillow: pip install "resnet-cli[images]"') from None
    from .analysis import refuse_on_cpu
    from .checkpoint import model_from_checkpoint
    from .data import input_of_run
    from .data.augment import to_float
    from .device import resolve_device
    from .speed import Speed

    images = list_images(paths)
    from .exported import is_exported, load_exported

    if is_exported(source):  # an ONNX or .pt2 file export wrote: its runtime, its metadata's input record
        if model or dataset:
            raise BadInput(f"{source} names its model and input in its metadata: --model and --dataset do not apply")
        net = load_exported(source, trust_exported)
        spec, dev, name, runtime, where = net.spec, net.device, net.name, net.runtime, str(source)
        speed = Speed.resolve(dev, compile="off", precision="fp32", channels_last="off")
        if dev.type == "cpu":  # its model's shapes: its runtime holds no less
            refuse_on_cpu(net.twin(strict=False), spec.image_size, net.forward_batch(min(batch_size, len(images))),
                          f"--batch-size {batch_size}", name, inference=True)
    else:
        loaded = model_from_checkpoint(source, model, dataset)
        if loaded.from_run and not loaded.trained:
            raise BadInput(f"{loaded.path} holds untrained weights (written by resnet build): its predictions would "
                           f"be noise; train it first (resnet train --init {shlex.quote(str(loaded.path))} ...)")
        spec = input_of_run(loaded.config, loaded.saved_input, loaded.trained or dataset is not None,
                            f"{loaded.path} {loaded.unknown_data}")
        dev = resolve_device(device)
        speed = Speed.resolve(dev, compile="off")
        net = loaded.model.to(dev, memory_format=speed.memory_format())
        name, runtime, where = loaded.config.model.name, "pytorch", str(loaded.path)
        if dev.type == "cpu":
            refuse_on_cpu(net, spec.image_size, min(batch_size, len(images)), f"--batch-size {batch_size}", name,
                          inference=True)
    speed.configure_backends(dev)  # as train and eval run on the device, whatever ran before in the process
    mean, std = spec.normalizer(dev)
    classes = spec.classes
    k = min(topk, len(classes))
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    done = 0
    for batch, x, why in read_batches(images, spec, batch_size, workers):
        skipped += [{"path": str(item), "error": w} for item, w in zip(batch, why) if w]
        if x is not None:
            x = to_float(x.to(dev), mean, std).contiguous(memory_format=speed.memory_format())
            with torch.inference_mode(), speed.autocast(dev):
                probs = torch.softmax(net(x).float(), dim=1)
            p, idx = probs.topk(k, dim=1)
            for item, ps, ids in zip([item for item, w in zip(batch, why) if not w], p.tolist(), idx.tolist()):
                rows.append({"path": str(item), "top": [{"class": classes[i], "index": i, "prob": q}
                                                        for q, i in zip(ps, ids)]})
        done += len(batch)
        if on_batch is not None:
            on_batch(done, len(images))
    return {"checkpoint": where, "model": name, "runtime": runtime,
            "device": str(dev), "topk": k, "predictions": rows, "skipped": skipped, "count": len(rows)}


def read_one(item: Path | str, spec) -> tuple[Path | str, torch.Tensor | None, str]:
    """(the image, its uint8 tensor or None, why it could not be read: "" when it could)."""
    from .data import image_files

    try:
        return item, read_image(item, spec), ""
    except BadInput as e:  # gone since it was listed, larger than the bound, a URL that did not answer
        return item, None, str(e)
    except image_files.errors() as e:
        return item, None, image_files.reason(e)


def collate(samples: list) -> tuple[list[Path | str], torch.Tensor | None, list[str]]:
    """`read_one`'s samples as a batch: (its images, the readable ones' tensors stacked, why each could not be
    read, "" where it could)."""
    good = [x for _, x, _ in samples if x is not None]
    return [item for item, _, _ in samples], torch.stack(good) if good else None, [why for _, _, why in samples]


def read_batches(items: list[Path | str], spec, batch_size: int,
                 workers: int | None = None) -> Iterator[tuple[list[Path | str], torch.Tensor | None, list[str]]]:
    """`collate`d batches of `items`, in order, read and transformed by `workers` threads (0: in this thread;
    None: one a core this process may use, at most 32) up to two batches ahead, so the next batches decode while
    the model runs this one. Threads, not processes: Pillow decodes and resizes outside the GIL, and a thread
    starts at once where a DataLoader worker from a fork server costs seconds (its import of torch): measured in
    BENCHMARKS.md, "predict's readers"."""
    if workers is None:
        from .config import usable_cores

        workers = min(32, usable_cores())
    if workers == 0:
        for first in range(0, len(items), batch_size):
            yield collate([read_one(item, spec) for item in items[first:first + batch_size]])
        return
    import itertools
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers, thread_name_prefix="resnet-predict-read")
    ahead = iter(items)
    pending = deque(pool.submit(read_one, item, spec) for item in itertools.islice(ahead, 2 * batch_size))
    try:
        while pending:
            batch = [pending.popleft().result() for _ in range(min(batch_size, len(pending)))]
            pending.extend(pool.submit(read_one, item, spec) for item in itertools.islice(ahead, batch_size))
            yield collate(batch)  # the model runs on it while the next two batches are read
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a loop stopped early leaves no reads running
