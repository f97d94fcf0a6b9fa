"""Images/s of `resnet train` on an image folder with the batch uploads on the compute stream (data.prefetch off,
the code before #34 item 3) against uploads on a side stream one batch ahead (data.prefetch on), in the same
run, alternating, on the same generated folder.

    python benchmarks/uploads.py [--device cuda] [--images 10240] [--models resnet50-v1.5,resnet18] [--json]

The folder holds generated 256x256 JPEGs (two classes; quality 90; smooth colour fields with noise), written once
into --dir with every core: small images decode fast, so the workers keep ahead of the GPU and what is measured
is the step and its upload (256 x 3 x 336 x 336 uint8 canvases, 87 MB a batch at b256). Each run is the
torchvision preset for --epochs epochs (train.compile off, so no run waits a minute compiling; the CUDA graph
replays eager kernels), data.workers from the cores; the figure is the last epoch's img/s from metrics.csv (the
first carries the workers' start and the capture). --repeats pairs run off, on, off, on, ...; the table gives the
median of each and their ratio. On a CPU (--device cpu, tiny settings) it checks that the script runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def write_jpeg(args: tuple[str, int, int]) -> None:
    import numpy as np
    from PIL import Image

    path, seed, side = args
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(low).resize((side, side), Image.BICUBIC)).astype(np.int16)
    img = img + rng.integers(-20, 20, img.shape)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def make_folder(root: Path, images: int, side: int) -> Path:
    """train/{a,b}/ with `images` JPEGs, val/{a,b}/ with 64; kept for the next run."""
    jobs = []
    for split, n in (("train", images), ("val", 64)):
        for i in range(n):
            cls = "ab"[i % 2]
            path = root / split / cls / f"{i:06d}.jpg"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                jobs.append((str(path), i + (10**7 if split == "val" else 0), side))
    if jobs:
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(write_jpeg, jobs, chunksize=64))
    return root


def train_rate(folder: Path, model: str, prefetch: bool, a: argparse.Namespace, runs: Path) -> dict:
    """One `resnet train` run; its last epoch's img/s and wall time."""
    name = f"{model}-{'on' if prefetch else 'off'}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "resnet_cli", "train", "--preset", "torchvision", "--data-dir", str(folder),
           "--model", model, "--device", a.device, "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
           "--run-dir", str(runs), "--name", name, "--set", "train.compile=off", "--set", f"data.prefetch={prefetch}",
           "--set", f"data.image_size={a.image_size}", "--set", f"train.eval_batch_size={a.batch_size}", "--json"]
    if a.workers >= 0:
        cmd += ["--set", f"data.workers={a.workers}"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    with open(runs / name / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"model": model, "prefetch": prefetch, "img_per_s": float(rows[-1]["img_per_s"]),
            "wall_s": round(time.perf_counter() - t0, 1), "graph_replays": result.get("cuda_graph_replays"),
            "input_bound": "input-bound:" in done.stdout}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--images", type=int, default=10240)
    p.add_argument("--side", type=int, default=256, help="the generated JPEGs' side")
    p.add_argument("--image-size", type=int, default=224, help="the training crop")
    p.add_argument("--models", default="resnet50-v1.5,resnet18")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=-1, help="data.workers (-1: the preset's, from the cores)")
    p.add_argument("--repeats", type=int, default=2, help="pairs of runs (off, on) per model")
    p.add_argument("--dir", default="/tmp/upload_jpegs")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    import torch

    t0 = time.perf_counter()
    folder = make_folder(Path(a.dir), a.images, a.side)
    made = time.perf_counter() - t0
    device = torch.cuda.get_device_name(0) if a.device == "cuda" else a.device
    print(f"device: {device}; torch {torch.__version__}, CUDA {torch.version.cuda}; {os.cpu_count()} cores; "
          f"{a.images} {a.side}px JPEGs ready in {made:.0f} s; "
          f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for model in a.models.split(","):
            for _ in range(a.repeats):
                for prefetch in (False, True):
                    row = train_rate(folder, model, prefetch, a, Path(runs))
                    rows.append(row)
                    print(json.dumps(row) if a.json else
                          f"  {model:<15} prefetch {'on ' if prefetch else 'off'} {row['img_per_s']:>9,.0f} img/s  "
                          f"({row['wall_s']} s{', input-bound' if row['input_bound'] else ''})", flush=True)
    print(f"\n{'model':<15} {'prefetch off':>13} {'prefetch on':>12} {'on/off':>7}")
    for model in a.models.split(","):
        off = statistics.median(r["img_per_s"] for r in rows if r["model"] == model and not r["prefetch"])
        on = statistics.median(r["img_per_s"] for r in rows if r["model"] == model and r["prefetch"])
        print(f"{model:<15} {off:>13,.0f} {on:>12,.0f} {on / off:>7.3f}")


if __name__ == "__main__":
    main()
