"""Images/s of `resnet train` on an image folder with the batch uploads on the compute stream (data.prefetch off,
the code before #34 item 3) against uploads on a side stream one batch ahead (data.prefetch on), in the same
run, alternating, on the same generated folder.

    python benchmarks/uploads.py [--device cuda] [--images 10240] [--models resnet50-v1.5,resnet18] [--json]

The folder holds generated 256x256 JPEGs (two classes; imagenet_path.py's generator), written once with every
core into a folder of --dir named by its shape (a folder made for other settings is never mixed in): small
images decode fast, so the workers keep ahead of the GPU and what is measured is the step and its upload
(256 x 3 x 336 x 336 uint8 canvases, 87 MB a batch at b256). Each run is the torchvision preset for --epochs
epochs (train.compile off, so no run waits a minute compiling; the CUDA graph replays eager kernels),
data.workers from the cores; the figure is the last epoch's img/s from metrics.csv (the
first carries the workers' start and the capture). --repeats pairs run off, on, off, on, ...; the table gives the
median of each and their ratio. On a CPU (--device cpu, tiny settings) it checks that the script runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from imagenet_path import machine_line, make_folder  # noqa: E402  (generated JPEGs, written with every core)


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

    t0 = time.perf_counter()
    folder = make_folder(Path(a.dir) / f"{a.images}x2-{a.side}px-val32", a.images, 32, classes=2, side=a.side)
    print(machine_line(a.device, f"{a.images} {a.side}px JPEGs ready in {time.perf_counter() - t0:.0f} s"), flush=True)
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
