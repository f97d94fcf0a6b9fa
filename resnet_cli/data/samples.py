"""An image folder's (path, label) pairs, held compactly: one buffer of file names, their offsets and the labels.

ImageNet's 1.28M training files as a list of (Path, int) took 475 MB, and every DataLoader worker got its own
copy: pickled to it (workers start from a fork server) and unpickled there in 17 s, or, when forked, copied
page by page as reading each tuple touched its reference count. Here they are three objects whatever their
number (bytes and two numpy arrays): about 60 MB, pickled in milliseconds, read without writing to them.
A path comes out as a str, `root/name`, built when it is asked for.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator, Sequence

import numpy as np


class Samples(Sequence):
    """(path, label) pairs under `root`: `samples[i]` is (f"{root}/{name}", label); a slice, or `take(indices)`,
    is another Samples."""

    def __init__(self, root: str, blob: bytes, offsets: np.ndarray, labels: np.ndarray) -> None:
        self.root, self.blob, self.offsets, self.labels = root, blob, offsets, labels

    @classmethod
    def of(cls, root: str | os.PathLike, names: Iterable[str], labels: Iterable[int]) -> "Samples":
        """From file names relative to `root` (as the OS gives them: os.fsencode keeps undecodable bytes)."""
        encoded = [os.fsencode(n) for n in names]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
        found = np.fromiter(labels, dtype=np.int64)
        if len(found) != len(encoded):
            raise ValueError(f"{len(encoded)} names but {len(found)} labels")
        return cls(os.fspath(root), b"".join(encoded), offsets, found)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(range(len(self))[i])
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} of {len(self)}")
        i = int(i) % len(self)
        name = os.fsdecode(self.blob[self.offsets[i]:self.offsets[i + 1]])
        return f"{self.root}/{name}", int(self.labels[i])

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return (self[i] for i in range(len(self)))

    def take(self, indices: Sequence[int] | np.ndarray) -> "Samples":
        """These samples, in this order (a held-out split, a shuffle, a limit)."""
        picked = np.asarray(indices, dtype=np.int64).reshape(-1)
        starts, ends = self.offsets[picked], self.offsets[picked + 1]
        blob = b"".join(self.blob[s:e] for s, e in zip(starts.tolist(), ends.tolist()))
        offsets = np.zeros(len(picked) + 1, dtype=np.int64)
        np.cumsum(ends - starts, out=offsets[1:])
        return Samples(self.root, blob, offsets, self.labels[picked])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Samples):
            return self.root == other.root and self.blob == other.blob and np.array_equal(self.offsets, other.offsets) \
                and np.array_equal(self.labels, other.labels)
        return isinstance(other, (list, tuple)) and list(self) == list(other)

    __hash__ = None  # compared by content, as a list is: not hashable either

    def __repr__(self) -> str:
        return f"Samples({len(self)} under {self.root!r})"
