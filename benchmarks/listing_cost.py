"""What an image folder's sample list costs at ImageNet's size, per process: the old list of (Path, label) tuples
against `Samples` (resnet_cli/data/samples.py), side by side in one run; and the walk that lists a folder, the
old sorted(rglob) against `imagefolder.listing`'s os.scandir, on a generated tree of empty files.

    python benchmarks/listing_cost.py [--images 1281167] [--workers 2] [--walk 100000]

For each: the time to build it from the listing's names, its size pickled and the time to pickle and unpickle it
(a DataLoader worker started from a fork server, as `resnet train` starts them, gets the dataset so), the Python
heap it takes (tracemalloc), and, with real DataLoader workers (forkserver), the time to the first batch and
each worker's resident memory then. No image is read: the dataset returns each sample's label.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import time
import tracemalloc
from pathlib import Path

import torch

from resnet_cli.data.samples import Samples


class Labels(torch.utils.data.Dataset):
    """The samples' labels, as a dataset: what a worker holds is the sample list, nothing else."""

    def __init__(self, samples) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> int:
        return self.samples[i][1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def measure(name: str, build, workers: int) -> dict:
    gc.collect()
    tracemalloc.start()  # the heap of one build, then the time of another without tracemalloc's cost
    kept = build()
    heap = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    del kept
    gc.collect()
    t0 = time.perf_counter()
    samples = build()
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    blob = pickle.dumps(samples, protocol=pickle.HIGHEST_PROTOCOL)
    pickled = time.perf_counter() - t0
    t0 = time.perf_counter()
    pickle.loads(blob)
    unpickled = time.perf_counter() - t0
    loader = torch.utils.data.DataLoader(Labels(samples), batch_size=256, num_workers=workers,
                                         multiprocessing_context="forkserver", persistent_workers=True)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    worker_rss = [rss_mb(w.pid) for w in it._workers]
    del it, loader
    return {"name": name, "build_s": built, "heap_mib": heap, "pickle_mib": len(blob) / 2**20, "pickle_s": pickled,
            "unpickle_s": unpickled, "first_batch_s": first, "worker_rss_mib": max(worker_rss)}


def rglob_walk(root: Path) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The walk `listing` did until 2026-12-07: (class -> files, folder -> mtime). tests/test_crops.py holds the
    new walk to it."""
    from resnet_cli.data.image_files import EXTENSIONS

    dirs, classes = {".": os.stat(root).st_mtime_ns}, {}
    for c in sorted(d.name for d in root.iterdir() if d.is_dir()):
        dirs[c] = os.stat(root / c).st_mtime_ns
        files = []
        for p in sorted((root / c).rglob("*")):
            if p.is_dir():
                dirs[str(p.relative_to(root))] = p.stat().st_mtime_ns
            elif p.suffix.lower() in EXTENSIONS and p.is_file():
                files.append(str(p.relative_to(root)))
        classes[c] = files
    return classes, dirs


def walks(n: int) -> None:
    """Both walks of a tree of `n` empty .JPEG files in 100 class folders (made in a temporary folder)."""
    import tempfile

    from resnet_cli.data.imagefolder import listing

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "train"
        for i in range(n):
            folder = root / f"n{i % 100:08d}"
            if i < 100:
                folder.mkdir(parents=True)
            (folder / f"{folder.name}_{i}.JPEG").touch()
        times = {}
        for name, walk in (("sorted(rglob)", lambda root: rglob_walk(root)[0]), ("os.scandir", listing)):
            t0 = time.perf_counter()
            found = walk(root)
            times[name] = time.perf_counter() - t0
        assert found == rglob_walk(root)[0]
    print(f"walk of {n:,} files in 100 folders: sorted(rglob) {times['sorted(rglob)']:.2f} s, os.scandir "
          f"{times['os.scandir']:.2f} s ({times['sorted(rglob)'] / times['os.scandir']:.1f}x faster)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1_281_167)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--walk", type=int, default=100_000, help="files in the walked tree (0: no walk)")
    args = ap.parse_args()
    if args.walk:
        walks(args.walk)
    per_class = -(-args.images // 1000)
    names = [f"n{i // per_class:08d}/n{i // per_class:08d}_{i}.JPEG" for i in range(args.images)]
    labels = [i // per_class for i in range(args.images)]
    root = Path("/data/imagenet/train")
    rows = [measure("list of (Path, int)", lambda: [(root / n, y) for n, y in zip(names, labels)], args.workers),
            measure("Samples", lambda: Samples.of(root, names, labels), args.workers)]
    print(f"{args.images:,} samples, {args.workers} forkserver workers; torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'':22}{'build s':>9}{'heap MiB':>10}{'pickle MiB':>11}{'pickle s':>10}{'unpickle s':>11}"
          f"{'1st batch s':>12}{'worker MiB':>11}")
    for r in rows:
        print(f"{r['name']:22}{r['build_s']:9.2f}{r['heap_mib']:10.0f}{r['pickle_mib']:11.0f}{r['pickle_s']:10.2f}"
              f"{r['unpickle_s']:11.2f}{r['first_batch_s']:12.2f}{r['worker_rss_mib']:11.0f}")
    old, new = rows
    print(f"Samples / list: build {new['build_s'] / old['build_s']:.2f}x the time, heap "
          f"{new['heap_mib'] / old['heap_mib']:.2f}x, first batch {new['first_batch_s'] / old['first_batch_s']:.2f}x, "
          f"worker memory {new['worker_rss_mib'] / old['worker_rss_mib']:.2f}x")


if __name__ == "__main__":
    main()
