"""Small datasets generated in the real on-disk formats (CIFAR python pickles in a .tar.gz, IDX files)."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


def _pickle(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


def cifar10_archive(path: Path, per_batch: int = 20, seed: int = 0) -> dict[str, str]:
    """Write a cifar-10-python.tar.gz with 5 train batches and a test batch; return {member: md5}."""
    rng = np.random.default_rng(seed)
    members: dict[str, bytes] = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        members[name] = _pickle({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                                 b"filenames": [f"{i}.png".encode() for i in range(per_batch)]})
    members["batches.meta"] = _pickle({b"label_names": [f"name{i}".encode() for i in range(10)],
                                       b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    write_tar(path, {f"cifar-10-batches-py/{k}": v for k, v in members.items()})
    return {k: hashlib.md5(v).hexdigest() for k, v in members.items()}


def write_tar(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> None:
    path.write_bytes(tar_bytes(files, links))


def tar_bytes(files: dict[str, bytes], links: dict[str, str] | None = None, gz: bool = True) -> bytes:
    """A tar archive (gzipped unless `gz` is False) of `files` and symbolic links `links` (name -> target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, n_train: int = 64, n_test: int = 32, gz: bool = True, seed: int = 0) -> None:
    """The four MNIST-style files (28x28 images, labels 0-9)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays = {f"{prefix}-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28)),
                  f"{prefix}-labels-idx1-ubyte": rng.integers(0, 10, (n,))}
        for name, arr in arrays.items():
            raw = idx_bytes(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
