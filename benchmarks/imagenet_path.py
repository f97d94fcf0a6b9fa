"""The ImageNet path end to end on one machine (#35 step 3): `resnet train --preset torchvision` on a generated
folder of ImageNet-like JPEGs and on its `resnet data convert --max-size 320` shards, against `bench`'s model-only
rate for the same model and batch, with the CPU cores the run kept busy and `resnet data bench`'s verdict beside.

    python benchmarks/imagenet_path.py [--images 20480] [--models resnet18,resnet50-v1.5] [--device cuda]
                                       [--epochs 2] [--dir /tmp/imagenet_like] [--json]

The JPEGs (written once into --dir with every core, then kept) have ImageNet's spread of sizes: the shorter side
drawn from 300-500 px, aspect ratios 3:4 to 16:9 either way, quality 90, smooth colour fields with noise (about
the entropy, so the decode cost, of photographs); --classes classes (100), --val-per-class validation images each
(10).
`resnet data convert` (a worker per core) writes the shards once; they are kept in --dir too, and the time of
this preparation is printed. Each training run is the preset as a user starts it (data.workers
from the cores, CUDA graphs, compile off: a minute of compiling per run would say nothing about the input path),
--epochs epochs; its figure is the last epoch's img/s (the first carries the workers' start and the capture),
beside the first's. The cores used are the run's CPU seconds (the training process and its workers) over its wall
time. On a CPU (--device cpu, tiny settings) it checks that the script runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

CLASSES = 100


def write_jpeg(job: tuple[str, int, int]) -> None:
    """One generated JPEG: `side` x `side`, or (side 0) ImageNet's spread of sizes (module docstring)."""
    import numpy as np
    from PIL import Image

    path, seed, side = job
    rng = np.random.default_rng(seed)
    short = side or int(rng.integers(300, 501))
    ratio = float(np.exp(rng.uniform(np.log(4 / 3), np.log(16 / 9)))) if not side and rng.random() < 0.9 else 1.0
    w, h = (int(short * ratio), short) if rng.random() < 0.75 else (short, int(short * ratio))
    low = rng.integers(0, 255, (18, 24, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC)).astype(np.int16)
    img = img + rng.integers(-25, 25, img.shape)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def make_folder(root: Path, images: int, val_per_class: int, classes: int = CLASSES, side: int = 0) -> Path:
    """train/ with `images` generated JPEGs over `classes` class folders, val/ with `val_per_class` each, written
    with every core and kept: a file already there is not written again."""
    jobs = []
    for split, n, base in (("train", images, 0), ("val", classes * val_per_class, 10**8)):
        for i in range(n):
            path = root / split / f"n{i % classes:03d}" / f"{i:07d}.JPEG"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                jobs.append((str(path), base + i, side))
    if jobs:
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(write_jpeg, jobs, chunksize=64))
    return root


def machine_line(device: str, ready: str) -> str:
    """The first line of a benchmark's output: the device, versions, cores, what was prepared, and the date."""
    import torch

    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else device
    return (f"device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}; {os.cpu_count()} cores; "
            f"{ready}; {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC")


def resnet(*args: str, timeout: float) -> tuple[str, float, float]:
    """Run `python -m resnet_cli ARGS`: (stdout, wall seconds, CPU seconds of it and its workers)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "resnet_cli", *args], capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"resnet {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.stdout, wall, cpu


def last_json(text: str) -> dict:
    """The JSON a command printed: the whole output (bench, data bench), else its last line (train's JSON Lines)."""
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(text.strip().splitlines()[-1])


def measure(source: str, data: str, model: str, a: argparse.Namespace, runs: Path) -> dict:
    common = ["--preset", "torchvision", "--model", model, "--device", a.device, "--batch-size", str(a.batch_size),
              "--set", f"data.image_size={a.image_size}"] + (["--workers", str(a.workers)] if a.workers >= 0 else [])
    name = f"{source}-{model}"
    out, wall, cpu = resnet("train", "--data-dir", data, *common, "--epochs", str(a.epochs), "--set",
                            "train.compile=off", "--set", f"train.eval_batch_size={a.batch_size}", "--run-dir",
                            str(runs), "--name", name, "--json", timeout=a.timeout)
    result = last_json(out)
    with open(runs / name / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    model_only = last_json(resnet("bench", model, "--mode", "train", "--device", a.device, "-b", str(a.batch_size),
                                  "--input-size", str(a.image_size), "--no-compile", "--warmup", "5", "--iters", "10",
                                  "--repeats", "3", "--json", timeout=a.timeout)[0])["results"][0]
    verdict = last_json(resnet("data", "bench", data, *common, "--batches", str(a.data_batches),
                               "--target-img-s", str(model_only["images_per_s"]), "--json", timeout=a.timeout)[0])
    img_s = float(rows[-1]["img_per_s"])
    return {"source": source, "model": model, "img_per_s": round(img_s), "first_epoch_img_per_s":
            round(float(rows[0]["img_per_s"])), "model_only_img_per_s": round(model_only["images_per_s"]),
            "ratio_to_model_only": round(img_s / model_only["images_per_s"], 3), "wall_s": round(wall, 1),
            "cores_used": round(cpu / wall, 1), "graph_replays": result.get("cuda_graph_replays"),
            "input_bound_line": "input-bound:" in out, "data_bench_bound": verdict.get("bound"),
            "data_bench_verdict": verdict.get("verdict"), "test_top1": result["final"]["test_top1"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=20480)
    p.add_argument("--models", default="resnet18,resnet50-v1.5")
    p.add_argument("--classes", type=int, default=CLASSES, help="class folders the images are dealt over")
    p.add_argument("--val-per-class", type=int, default=10, help="validation images per class")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=-1, help="data.workers (-1: the preset's, from the cores)")
    p.add_argument("--data-batches", type=int, default=20, help="batches `data bench` times")
    p.add_argument("--sources", default="folder,shards")
    p.add_argument("--dir", default="/tmp/imagenet_like")
    p.add_argument("--timeout", type=float, default=400)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if not 1 <= a.classes <= a.images:
        p.error(f"--classes must be 1..--images ({a.images}): every class needs a training image")

    root = Path(a.dir)
    t0 = time.perf_counter()
    # one folder (and its shards) per shape: a folder kept from a run of another size is never mixed in
    folder = make_folder(root / f"folder-{a.images}x{a.classes}-val{a.val_per_class}", a.images, a.val_per_class,
                         a.classes)
    shards = root / f"shards-{folder.name}"
    if not (shards / "index.json").exists():
        resnet("data", "convert", str(folder), str(shards), "--max-size", "320", timeout=1800)
    print(machine_line(a.device, f"{a.images:,} JPEGs and their shards ready in {time.perf_counter() - t0:.0f} s"),
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for model in a.models.split(","):
            for source in a.sources.split(","):
                data = str(folder) if source == "folder" else str(shards)
                row = measure(source, data, model, a, Path(runs))
                rows.append(row)
                print(json.dumps(row), flush=True)
    if a.json:
        return
    print(f"\n{'model':<15} {'source':<7} {'img/s':>7} {'1st ep.':>8} {'model only':>10} {'ratio':>6} {'cores':>6}"
          f"  data bench")
    for r in rows:
        print(f"{r['model']:<15} {r['source']:<7} {r['img_per_s']:>7,} {r['first_epoch_img_per_s']:>8,} "
              f"{r['model_only_img_per_s']:>10,} {r['ratio_to_model_only']:>6.2f} {r['cores_used']:>6.1f}"
              f"  {r['data_bench_bound']}")


if __name__ == "__main__":
    main()
