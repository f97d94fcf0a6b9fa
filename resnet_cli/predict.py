"""`resnet predict`: class probabilities for image files, with the run's own evaluation transform.

The transform is the one evaluation used in training, from what the checkpoint carries (data.InputSpec,
`transform`): grayscale or RGB as the model expects; for image-folder runs the shorter side resized to
`resize` and a centre crop (exactly `resnet eval`'s), otherwise a resize to the training image size;
then the training data's per-channel normalisation. Images are files, folders or http(s) URLs (as Ultralytics
takes them; through the gate: https, or http on loopback). An unreadable file or URL is named and skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from . import gate
from .errors import BadInput

# The bound and deadline on reading one image (predict has no data.* settings; data.max_read_mb's default).
IMAGE_LIMITS = gate.Limits(keys=("the bound on an image file", "the deadline on an image file"))


def list_images(paths: Iterable[str | Path]) -> list[Path | str]:
    """Files as given; folders searched recursively for images, in sorted order, hidden names left out (macOS's
    `._photo.jpg`, `.ipynb_checkpoints/`: image_files.hidden); http(s) URLs as given (str), each one the gate
    allows (https; http on loopback alone)."""
    from .data.image_files import EXTENSIONS, hidden

    found: list[Path | str] = []
    for item in paths:
        if gate.is_url(item):
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

    data = gate.read_url(item, IMAGE_LIMITS) if gate.is_url(item) else image_files.read(item, IMAGE_LIMITS)
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
    from .classifier import load_model
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
        clf = load_model(source, model=model, dataset=dataset)  # the network and its input record
        spec = clf.input
        dev = resolve_device(device)
        speed = Speed.resolve(dev, compile="off")
        net = clf.model.to(dev, memory_format=speed.memory_format())
        name, runtime, where = clf.name, "pytorch", clf.source
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
                top = [{"class": classes[i], "index": i, "prob": q} for q, i in zip(ps, ids)]
                if spec.descriptions:
                    for t in top:
                        t["description"] = spec.description(t["index"])
                rows.append({"path": str(item), "top": top})
        done += len(batch)
        if on_batch is not None:
            on_batch(done, len(images))
    return {"checkpoint": where, "model": name, "runtime": runtime, "device": str(dev), "input": spec.prepared(),
            "topk": k, "predictions": rows, "skipped": skipped, "count": len(rows)}


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
    BENCHMARKS.md, "predict's readers". A loop that stops early leaves no read queued, and waits for those
    running (a file's take milliseconds); Ctrl-C does not wait: the readers are daemon threads, so a URL read
    still waiting on its server (up to a minute, the gate's longest wait for a packet) keeps no one."""
    if workers is None:
        from .config import usable_cores

        workers = min(32, usable_cores())
    if workers == 0:
        for first in range(0, len(items), batch_size):
            yield collate([read_one(item, spec) for item in items[first:first + batch_size]])
        return
    import queue
    import threading

    todo: queue.SimpleQueue = queue.SimpleQueue()  # (index, image), then one None per reader: stop
    done: dict[int, Any] = {}  # index -> read_one's sample, or what it raised
    arrived = threading.Condition()
    awaited = [-1]  # the index the loop waits for: only its arrival wakes the loop

    def reader() -> None:
        while (job := todo.get()) is not None:
            try:
                got: Any = read_one(job[1], spec)
            except BaseException as e:  # noqa: BLE001 - raised again in the loop's thread, where it belongs
                got = e
            with arrived:
                done[job[0]] = got
                if job[0] == awaited[0]:
                    arrived.notify()

    readers = [threading.Thread(target=reader, name="resnet-predict-read", daemon=True) for _ in range(workers)]
    for t in readers:
        t.start()
    queued, interrupted = 0, False
    try:
        for first in range(0, len(items), batch_size):
            last = min(first + batch_size, len(items))
            while queued < min(last + 2 * batch_size, len(items)):  # this batch and the two after it
                todo.put((queued, items[queued]))
                queued += 1
            with arrived:
                for i in range(first, last):
                    awaited[0] = i
                    while i not in done:
                        arrived.wait()
                batch = [done.pop(i) for i in range(first, last)]
            for got in batch:
                if isinstance(got, BaseException):
                    raise got
            yield collate(batch)  # the model runs on it while the next two batches are read
    except BaseException as e:
        interrupted = not isinstance(e, GeneratorExit)  # Ctrl-C or an error: running reads are not waited for
        raise
    finally:
        while True:  # what is queued is not read
            try:
                todo.get_nowait()
            except queue.Empty:
                break
        for _ in readers:
            todo.put(None)
        if not interrupted:
            for t in readers:
                t.join()
