"""`resnet predict`'s readers: images read and transformed in this thread against threads reading the next
batches while the model runs (resnet_cli/predict.py, `read_batches`), side by side in one run.

    python benchmarks/predict_readers.py [--workers 0,1,2] [--repeats 3] [--model resnet20] [--image-size 32]

Two generated folders of JPEGs (quality 90): 2,000 at 500 x 375 (ImageNet's typical size) and 200 photographs at
2000 x 1500 (a phone's, downscaled). A run trained for one epoch on a tiny image folder gives the transform (the
shorter side to image-size x 256/224, the centre crop) and the model. Reading an image (decoding it whole, then
the resize) costs the same at any crop size, so the default small crop times what a GPU leaves to the host: the
readers, with a model that takes next to nothing. `--model resnet18 --image-size 224` times a CPU device, whose
forward pass needs the same cores. Each setting runs `--repeats` times, alternating, and the median is kept;
every setting's predictions are checked equal to the first's. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def folder(root: Path, count: int, size: tuple[int, int]) -> Path:
    import numpy as np
    from PIL import Image

    out = root / f"{count}x{size[0]}x{size[1]}"
    out.mkdir()
    low = np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)  # smooth, photo-like colour
    for i in range(count):
        Image.fromarray(np.roll(low, i, axis=1)).resize(size, Image.BICUBIC).save(out / f"{i:05d}.jpg", quality=90)
    return out


def trained_run(root: Path, model: str, size: int) -> Path:
    """One epoch on 8 images of 2 classes, `size` crops: a run folder predict accepts (its weights are trained)."""
    import numpy as np
    from PIL import Image

    from resnet_cli.cli import app

    for split in ("train", "val"):
        for c, channel in (("red", 0), ("blue", 2)):
            (root / "images" / split / c).mkdir(parents=True)
            for i in range(4):
                a = np.zeros((256, 256, 3), np.uint8)
                a[..., channel] = 200 + i
                Image.fromarray(a).save(root / "images" / split / c / f"{i}.jpg")
    args = ["train", "--data-dir", str(root / "images"), "--model", model, "--image-size", str(size), "--epochs", "1",
            "--batch-size", "4", "--workers", "0", "--device", "cpu", "--run-dir", str(root / "runs"), "--name", "r",
            "--json"]
    try:
        app(args)
    except SystemExit as e:
        if e.code not in (0, None):
            sys.exit(f"training the run failed (exit {e.code})")
    return root / "runs" / "r"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="0,1,2", help="reader threads to compare, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--image-size", type=int, default=32)
    o = parser.parse_args()
    from resnet_cli.predict import predict

    settings = [int(w) for w in o.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = trained_run(root, o.model, o.image_size)
        sets = {"2,000 at 500x375": folder(root, 2000, (500, 375)),
                "200 at 2000x1500": folder(root, 200, (2000, 1500))}
        results = {}
        for name, images in sets.items():
            times: dict[int, list[float]] = {w: [] for w in settings}
            first = None
            for _ in range(o.repeats):
                for w in settings:
                    t = time.perf_counter()
                    out = predict(str(run), [str(images)], device="cpu", workers=w)
                    times[w].append(time.perf_counter() - t)
                    first = first or out["predictions"]
                    assert out["predictions"] == first and out["count"] == len(first), (name, w)
            results[name] = {w: statistics.median(t) for w, t in times.items()}
    base = settings[0]
    print(f"{'images':<18} " + " ".join(f"{f'{w} threads':>16}" for w in settings))
    for name, by in results.items():
        print(f"{name:<18} " + " ".join(f"{f'{s:.2f} s ({results[name][base] / s:.2f}x)':>16}" for s in by.values()))
    print(json.dumps({"model": o.model, "image_size": o.image_size, "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__,
                      "python": platform.python_version(), "threads": torch.get_num_threads(),
                      "seconds": {n: {str(w): round(s, 3) for w, s in by.items()} for n, by in results.items()}}))


if __name__ == "__main__":
    main()
