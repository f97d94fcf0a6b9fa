"""MNIST and Fashion-MNIST from IDX files, gzipped or raw, without torchvision.

Files are looked for in the data folder (directly, or in a `<dataset>/`
subfolder) and, for Fashion-MNIST, in /usr/share/datasets/fashion-mnist where
Debian's `dataset-fashion-mnist` puts them. Checksums are taken on the
decompressed bytes, because Debian re-compressed its copies.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from .. import gate
from ..errors import BadInput
from .download import DownloadError, download

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class IdxSpec:
    base_url: str
    raw_md5: dict[str, str]  # md5 of the decompressed files, where known
    gz_md5: dict[str, str]  # md5 of the upstream .gz files (what a download must match)
    system_dirs: tuple[str, ...]
    classes: tuple[str, ...]


SPECS = {
    "fashion-mnist": IdxSpec(
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
         "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
         "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
         "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"},
        {"train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310"},
        ("/usr/share/datasets/fashion-mnist",),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "mnist": IdxSpec(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {},  # no published reference for the decompressed bytes: the header and sizes are checked
        {"train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c"},
        (),
        tuple(str(i) for i in range(10))),
}

# IDX type byte -> numpy dtype; MNIST-like files only use unsigned bytes.
_UBYTE = 0x08
MAX_IDX_BYTES = 2**30  # the largest IDX set (EMNIST) is under 1 GiB


def read_idx(path: Path, md5: str | None = None):
    """Parse an IDX file (gzipped or raw) into a uint8 tensor; every defect is one BadInput naming the file.
    `md5`: the decompressed bytes' published checksum, checked on the bytes parsed (one read, one inflate)."""
    import numpy as np
    import torch

    raw = _read_bytes(path)
    if md5 is not None and (got := hashlib.md5(raw).hexdigest()) != md5:
        raise BadInput(f"checksum mismatch for {path}: md5 of the decompressed bytes is {got}, expected {md5}")
    if len(raw) < 4:
        raise BadInput(f"{path} is truncated: not an IDX file")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != _UBYTE or not 1 <= ndim <= 4:
        raise BadInput(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BadInput(f"{path} is truncated: header cut short")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)  # exact: numpy's int64 product wraps (2^16 x 4 dims is 0)
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise BadInput(f"{path} is {what}: {len(raw)} bytes, expected {expected} for shape {tuple(dims)}")
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy())


def _read_bytes(path: Path) -> bytes:
    limits = gate.Limits(MAX_IDX_BYTES, keys=("the bound on an IDX file", "data.read_timeout"))
    return gate.read_gzip(path, limits) if path.suffix == ".gz" else gate.read_file(path, limits)


def _find(name: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for candidate in (d / name, d / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def search_dirs(dataset: str, root: Path) -> list[Path]:
    return [root, root / dataset] + [Path(d) for d in SPECS[dataset].system_dirs]


def identify(root: Path) -> str | None:
    """Which IDX dataset the folder `root` (or its mnist/, fashion-mnist/ subfolder) holds, told by the
    training labels' published checksums; None without IDX files. IDX files that match neither are refused:
    the dataset is never guessed."""
    for dataset in SPECS:
        labels = _find("train-labels-idx1-ubyte", [root, root / dataset])
        if labels is None:
            continue
        if hashlib.md5(_read_bytes(labels)).hexdigest() == SPECS["fashion-mnist"].raw_md5["train-labels-idx1-ubyte"]:
            return "fashion-mnist"
        if labels.suffix == ".gz" and gate.digest(labels, "md5") == \
                SPECS["mnist"].gz_md5["train-labels-idx1-ubyte"]:
            return "mnist"
        raise BadInput(f"{labels} is an IDX file but not Fashion-MNIST's or MNIST's published one: say which "
                       "dataset it is with --dataset mnist or --dataset fashion-mnist")
    return None


def locate(dataset: str, root: Path, download_ok: bool = True, limits=None) -> dict[str, Path]:
    """Find (or download into `root/<dataset>`) the four IDX files."""
    spec = SPECS[dataset]
    dirs = search_dirs(dataset, root)
    found: dict[str, Path] = {}
    for name in FILES:
        path = _find(name, dirs)
        if path is None:
            if not download_ok:
                raise BadInput(_missing(dataset, root, "downloads are off (data.download: false)"))
            try:
                path = download(spec.base_url + name + ".gz", root / dataset / f"{name}.gz", spec.gz_md5[name],
                                limits)
            except DownloadError as e:
                raise BadInput(_missing(dataset, root, str(e))) from None
        found[name] = path
    return found


def _missing(dataset: str, root: Path, reason: str) -> str:
    where = " or ".join(str(d) for d in [root / dataset] + [Path(d) for d in SPECS[dataset].system_dirs])
    return f"{dataset} is not available ({reason}); put {', '.join(f + '.gz' for f in FILES)} into {where}"


def load(dataset: str, root: Path, download_ok: bool = True, limits=None):
    """Return (train_x, train_y, test_x, test_y, class_names); images are uint8 N x 1 x 28 x 28."""
    paths = locate(dataset, root, download_ok, limits)
    tensors = {name: read_idx(path, SPECS[dataset].raw_md5.get(name)) for name, path in paths.items()}
    train_x, train_y = tensors["train-images-idx3-ubyte"], tensors["train-labels-idx1-ubyte"]
    test_x, test_y = tensors["t10k-images-idx3-ubyte"], tensors["t10k-labels-idx1-ubyte"]
    for x, y, split in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise BadInput(f"{dataset} {split} files disagree: images {tuple(x.shape)}, labels {tuple(y.shape)}")
    return (train_x.unsqueeze(1), train_y.long(), test_x.unsqueeze(1), test_y.long(), list(SPECS[dataset].classes))
