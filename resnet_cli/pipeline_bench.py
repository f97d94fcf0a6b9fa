"""`resnet data bench`: the input pipeline alone, with the run's own transforms, against the model it feeds.

Two measurements of the training loader a run would build (data.make_loader: the same crops, the same batch
augmentations on the device):
- the stage split, in this process on a sample of the epoch's images: CPU seconds per image to decode, to
  cut the crop's region out (and draw it), to collate a batch; then per batch the copy to the device and the
  device's share (resize, flip, normalisation and the recipe's batch augmentations);
- the throughput: the loader with its `data.workers` processes over `batches` batches (after one that starts
  the workers), images/s, and the CPU cores the processes kept busy meanwhile (Linux /proc).
The model's side is `bench`'s training step on this device, or a given `target_img_s`. Which side is slower
bounds training; the workers the model needs follow from the per-worker rate.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable


def _cpu_seconds(pids: list[int]) -> tuple[float, float] | None:
    """CPU seconds the threads of these processes have run so far (Linux), and the resolution of that count:
    each thread's nanoseconds from /proc schedstat where the kernel keeps them, else each process's user and
    system clock ticks from /proc stat (a bench of a few batches runs for fewer ticks than it has workers);
    None where /proc cannot tell."""
    return _thread_nanoseconds(pids) or _process_ticks(pids)


def _thread_nanoseconds(pids: list[int]) -> tuple[float, float] | None:
    import glob

    total = 0
    for pid in pids:
        tasks = glob.glob(f"/proc/{pid}/task/*/schedstat")
        if not tasks:  # no schedstat on this kernel (or the process is gone)
            return None
        for task in tasks:
            try:
                with open(task) as f:
                    total += int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                return None
    return total / 1e9, 1e-9


def _process_ticks(pids: list[int]) -> tuple[float, float] | None:
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / tick, 1 / tick


def cores_busy(before: tuple[float, float] | None, after: tuple[float, float] | None, wall: float) -> float | None:
    """Cores kept busy over `wall` seconds between two `_cpu_seconds` counts; None where /proc could not tell,
    or the CPU time counted is under ten steps of its resolution (a figure that is mostly rounding)."""
    if before is None or after is None or wall <= 0:
        return None
    used, resolution = after[0] - before[0], max(before[1], after[1])
    return used / wall if used >= 10 * resolution else None


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main_process_limit(stages: dict[str, float], overlapped: bool) -> float:
    """Images/s the training process itself can take: the copy to the device and the device's share of each batch
    (seconds per image in `stages`), one after the other, or side by side where the copy runs on its own stream
    while the device works (`overlapped`: data.prefetch on CUDA)."""
    copy, device = stages["to_device"], stages["device"]
    return 1 / max(max(copy, device) if overlapped else copy + device, 1e-9)


def stage_split(data, cfg, batch_size: int, device, sample: int) -> dict[str, float]:
    """Seconds per image of each stage (module docstring), measured in this process on `sample` images."""
    import torch

    from .data import make_loader

    loader = make_loader(data, cfg.data, "train", batch_size, device, training=True)
    from .data import image_files

    ds = data.train_set.finishing_for(device)  # the training transform as training runs it on `device`
    t0 = time.perf_counter()
    if hasattr(data, "split_shards"):  # shards: fetch and check whole shards, then decode from memory
        from .data.shards import read_shard

        raw = []
        for shard in data.split_shards("train"):
            raw += read_shard(data.source, shard, data.num_classes)
            if len(raw) >= sample:
                break
    else:  # image files: each read whole, as a worker reads it, then decoded from memory
        raw = [(str(ds.samples[i][0]), image_files.read(ds.samples[i][0], ds.limits), ds.samples[i][1])
               for i in loader.indices(0)[:sample]]
    read = time.perf_counter() - t0
    calls = [(lambda image=image: image_files.opened(image), i, label, key)
             for i, (key, image, label) in enumerate(raw[:sample])]
    ds.stage_times = {}
    items, t0 = [], time.perf_counter()
    try:
        for open_image, draw, label, where in calls:
            items.append(ds.prepare(open_image, draw, label, where))
    finally:
        ds.stage_times, times = None, ds.stage_times
    worker = time.perf_counter() - t0
    n = len(calls)
    t0 = time.perf_counter()
    batches = [torch.utils.data.default_collate(items[i:i + batch_size]) for i in range(0, n, batch_size)]
    collate = time.perf_counter() - t0
    copy = device_part = 0.0
    from .data.imagefolder import on_device

    for batch in batches:
        _sync(device)
        t0 = time.perf_counter()
        batch = [t.to(device) for t in batch]
        _sync(device)
        t1 = time.perf_counter()
        next(on_device(loader, [batch], ds.crop, 0, 0))  # what the loaders do on the device, the copy done
        _sync(device)
        copy, device_part = copy + t1 - t0, device_part + time.perf_counter() - t1
    decode, crop = times.get("decode", 0.0), times.get("crop", 0.0)
    return {"read": read / n, "decode": decode / n, "crop": crop / n, "other": max(worker - decode - crop, 0.0) / n,
            "collate": collate / n, "to_device": copy / n, "device": device_part / n, "images": n}


def throughput(data, cfg, batch_size: int, device, batches: int,
               on_batch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The real training loader: images/s over `batches` batches after a first one, and the cores it kept busy."""
    from .data import make_loader

    loader = make_loader(data, cfg.data, "train", batch_size, device, training=True)
    batches = min(batches, len(loader) - 1)
    it = iter(loader.batches(0))
    next(it)  # starts the workers and fills their queues
    _sync(device)
    import multiprocessing

    pids = [os.getpid()] + [p.pid for p in multiprocessing.active_children()]  # the loader's workers
    cpu0, t0 = _cpu_seconds(pids), time.perf_counter()
    for i in range(batches):
        next(it)
        if on_batch is not None:
            on_batch(i + 1, batches)
    _sync(device)
    wall = time.perf_counter() - t0
    cpu1 = _cpu_seconds(pids)
    it.close()
    del it
    loader.close()  # the model's bench runs next: idle workers must not hold cores or memory
    cores = cores_busy(cpu0, cpu1, wall)
    return {"img_per_s": batches * batch_size / wall, "batches": batches, "seconds": wall, "cores_busy": cores,
            "workers": loader.workers}


def model_rate(cfg, batch_size: int, device, planned_steps: int) -> float:
    """`bench`'s training step for the run's model at its crop size on this device, with the run's speed
    settings (compiled where the run would be; the compilation is not timed), images/s."""
    from .bench import BenchConfig, measure
    from .speed import Speed

    speed = Speed.for_train(cfg.train, device, planned_steps)
    bc = BenchConfig("train", batch_size, cfg.data.image_size, speed, warmup=2, iters=3, repeats=3)
    return measure(cfg.model.name, bc, device, 0)["images_per_s"]


def bench_pipeline(cfg, device_name: str = "auto", batches: int = 20, batch_size: int | None = None,
                   target_img_s: float | None = None, sample: int = 128,
                   on_batch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """`resnet data bench`: the stage split, the throughput, the model's rate and which one bounds training."""
    from .data import load_data
    from .device import device_name as describe_device, resolve_device
    from .errors import BadInput

    from .config import DECODED

    if cfg.data.dataset not in DECODED:
        raise BadInput(f"{cfg.data.dataset} lives on the device in one tensor: no input pipeline to bench "
                       "(data bench reads image folders and shards)")
    device = resolve_device(device_name)
    batch_size = batch_size or cfg.train.batch_size
    data = load_data(cfg.data)
    if data.epoch_steps(batch_size) < 2:
        raise BadInput(f"{data.train_count} training images make {data.epoch_steps(batch_size)} batch(es) "
                       f"of {batch_size}: the bench needs 2 or more (lower --batch-size)")
    stages = stage_split(data, cfg, batch_size, device, min(sample, data.train_count))
    measured = throughput(data, cfg, batch_size, device, batches, on_batch)
    model = {"img_per_s": target_img_s, "source": "given"} if target_img_s else \
        {"img_per_s": model_rate(cfg, batch_size, device, cfg.train.epochs * data.epoch_steps(batch_size)),
         "source": f"measured: {cfg.model.name} training step"}
    cpu_per_image = stages["read"] + stages["decode"] + stages["crop"] + stages["other"] + stages["collate"]
    per_core = 1 / cpu_per_image
    workers = measured["workers"]
    per_worker = measured["img_per_s"] / workers if workers else per_core
    main_limit = main_process_limit(stages, overlapped=device.type == "cuda" and cfg.data.prefetch)
    held_by_main = workers > 0 and measured["img_per_s"] >= 0.8 * main_limit
    need = None if held_by_main else math.ceil(model["img_per_s"] / per_worker)
    rates = f"the loader feeds {measured['img_per_s']:,.0f} img/s, the model "
    if measured["img_per_s"] < model["img_per_s"]:
        bound = "input"
        rates += f"would take {model['img_per_s']:,.0f}"
        if held_by_main:
            verdict = (f"input-bound: {rates}; the training process holds the loader at about {main_limit:,.0f} "
                       "img/s (the copy to the device and the device's resize and augmentations): more workers "
                       "will not help")
        else:
            verdict = (f"input-bound: {rates}; about {need} workers ({need} cores at {per_worker:,.0f} img/s "
                       "each) would feed it")
    else:
        bound = "model"
        rates += f"takes {model['img_per_s']:,.0f}"
        verdict = f"model-bound: {rates}" + (f"; {need} of {max(workers, 1)} worker(s) would do" if need else "")
    if device.type == "cpu":
        verdict += " (on a CPU the model, the device's share and the workers share the same cores)"
    return {"data_dir": str(cfg.data.data_dir), "dataset": cfg.data.dataset, "images": data.train_count, "batch_size": batch_size,
            "crop": cfg.data.crop, "image_size": cfg.data.image_size, "device": describe_device(device),
            "stages_ms_per_image": {k: v * 1000 for k, v in stages.items() if k != "images"},
            "stage_sample": stages["images"], "cpu_img_per_s_per_core": per_core,
            "pipeline": measured, "per_worker_img_per_s": per_worker, "model": model,
            "main_process_img_per_s": main_limit, "workers_needed": need, "bound": bound, "verdict": verdict}
