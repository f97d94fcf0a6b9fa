"""CIFAR-10 and CIFAR-100 from the official python-version archives, without torchvision.

Every file is checked against its published md5 (the archive, each batch and the meta file, as torchvision
checks them) before it is used. The batches are pickles; each is read once, whole, through the gate (at most
MAX_BATCH_BYTES), its md5 taken on those very bytes, which then go to an unpickler that accepts only the numpy
array types the official files contain, so a doctored file cannot run code, nor make the reader allocate what
the file does not hold.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

from .. import gate
from ..errors import BadInput
from .download import DownloadError, download, md5_file, safe_extract


@dataclass(frozen=True)
class CifarSpec:
    url: str
    archive: str
    md5: str  # of the .tar.gz
    folder: str  # what the archive extracts to
    train: tuple[tuple[str, str], ...]  # (file, md5)
    test: tuple[tuple[str, str], ...]
    label_key: str
    meta: tuple[str, str]  # (file, md5): the class names
    names_key: str
    classes: int


SPECS = {
    "cifar10": CifarSpec(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py",
        (("data_batch_1", "c99cafc152244af753f735de768cd75f"), ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
         ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"), ("data_batch_4", "634d18415352ddfa80567beed471001a"),
         ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")),
        (("test_batch", "40351d587109b95175f43aff81a1287e"),), "labels",
        ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"), "label_names", 10),
    "cifar100": CifarSpec(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python",
        (("train", "16019d7e3df5f24257cddd939b257f8d"),), (("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        "fine_labels",
        ("meta", "7973b15100ade9c7d40fb424638fde48"), "fine_label_names", 100),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Allows numpy arrays and plain containers; refuses every other global."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # how protocol-2 pickles written by Python 3 carry bytes; harmless

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


MAX_BATCH_BYTES = 512 * 2**20  # CIFAR-100's train batch, the largest, is 155 MiB


def _unpickle(raw: bytes, path: Path) -> dict:
    import io

    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except MemoryError:  # a record claiming more bytes than any machine holds (the file holds at most the bound)
        raise BadInput(f"{path} is not a valid CIFAR batch: a record claims more bytes than the file holds") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise BadInput(f"{path} is not a valid CIFAR batch: {e}") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{path} is not a valid CIFAR batch")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


class _Stale(Exception):
    """A file the dataset needs is absent, or is not the published one: extract it again from the archive."""


def _read_verified(folder: Path, files) -> dict[str, dict]:
    """Each file's dict, its md5 taken on the very bytes that are unpickled: every file is read once, and cannot
    change between its check and its use. _Stale(name) when one is absent or differs from its published md5."""
    out = {}
    for name, md5 in files:
        path = folder / name
        if not os.path.lexists(path) or (path.is_file() and path.stat().st_size > MAX_BATCH_BYTES):
            raise _Stale(name)  # absent, or too large to be the published file: extracted again over it
        raw = gate.read_file(path, gate.Limits().at_most(MAX_BATCH_BYTES, "the bound on a CIFAR batch"),
                             "CIFAR batch")  # a FIFO, a folder or a dangling link there: refused, one line
        if hashlib.md5(raw).hexdigest() != md5:
            raise _Stale(name)
        out[name] = _unpickle(raw, path)
    return out


def identify(root: Path) -> str | None:
    """cifar10 or cifar100 when `root` holds its archive or extracted folder; None otherwise."""
    found = [name for name, spec in SPECS.items() if (root / spec.folder).is_dir() or (root / spec.archive).is_file()]
    if len(found) > 1:
        raise BadInput(f"{root} holds both CIFAR-10 and CIFAR-100: say which with --dataset cifar10 or cifar100")
    return found[0] if found else None


def _extract(dataset: str, root: Path, download_ok: bool, url: str, limits) -> None:
    """Put the archive's files under `root` again: from the archive there when it is the published one, else
    downloaded (verified before it is kept)."""
    spec = SPECS[dataset]
    archive = root / spec.archive
    if not (archive.is_file() and md5_file(archive) == spec.md5):
        if archive.is_file() and not download_ok:
            raise BadInput(f"{archive} fails its checksum (expected md5 {spec.md5}): a partial or corrupt copy; "
                           "delete it or replace it")
        if not download_ok:
            raise BadInput(_missing(dataset, root, "downloads are off (data.download: false)"))
        try:
            download(url or spec.url, archive, spec.md5, limits)
        except DownloadError as e:
            raise BadInput(_missing(dataset, root, str(e))) from None
    safe_extract(archive, root)


def _missing(dataset: str, root: Path, reason: str) -> str:
    spec = SPECS[dataset]
    return (f"{dataset} is not available ({reason}); put {spec.archive} (md5 {spec.md5}) or its extracted "
            f"{spec.folder}/ folder into {root}")


def load(dataset: str, root: Path, download_ok: bool = True, url: str = "", limits=None):
    """Return (train_x, train_y, test_x, test_y, class_names); images are uint8 N x 3 x 32 x 32."""
    import numpy as np
    import torch

    spec = SPECS[dataset]
    folder = root / spec.folder
    needed = spec.train + spec.test + (spec.meta,)
    try:
        batches = _read_verified(folder, needed)  # valid files present: no network
    except _Stale:
        _extract(dataset, root, download_ok, url, limits)
        try:
            batches = _read_verified(folder, needed)
        except _Stale as e:
            raise BadInput(f"{dataset}: {e} in {folder} fails its checksum after extraction") from None

    def read(files):
        xs, ys = [], []
        for name, _ in files:
            batch = batches.pop(name)
            try:
                data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                labels = np.asarray(batch[spec.label_key], dtype=np.int64)
            except (KeyError, ValueError) as e:
                raise BadInput(f"{folder / name} is not a valid CIFAR batch: {e}") from None
            if len(labels) != len(data):
                raise BadInput(f"{folder / name}: {len(data)} images but {len(labels)} labels")
            xs.append(data)
            ys.append(labels)
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    train_x, train_y = read(spec.train)
    test_x, test_y = read(spec.test)
    meta = batches.pop(spec.meta[0])
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(spec.names_key, [])]
    return train_x, train_y, test_x, test_y, names or [str(i) for i in range(spec.classes)]
