"""Where shards are read from (a folder, an http(s) base URL, or a `pipe:` command), and their index.

The layout `resnet data convert` writes (data/shard_convert.py): `train-000000.tar`, ... and `val-000000.tar`, ...,
and `index.json`: the classes, and per shard its sample count, size and sha256. Every byte comes through the gate
(gate.py): a shard is read to at most the size its index records, an index to 64 MiB, each within
data.read_timeout; only names `data convert` writes are read, and a name reaches a `pipe:` command quoted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import gate
from ..errors import BadInput
from .inputs import valid_descriptions

INDEX = gate.INDEX_NAME
FORMAT = "resnet-cli-shards"
VERSION = 1
MAX_INDEX_BYTES = 64 * 2**20  # an index lists shards, not images: far below this
SHARD_SPLIT = {"train": "train", "test": "val"}  # our split -> the shards' (an image folder's val/ is its test)


@dataclass(frozen=True)
class Source:
    """A place shards are read from: a folder, an http(s) base URL, or `pipe:COMMAND` with `{}` standing for
    the file name (`pipe:aws s3 cp s3://bucket/imagenet/{} -`)."""

    location: str
    limits: gate.Limits = field(default_factory=gate.Limits)

    @property
    def kind(self) -> str:
        if self.location.startswith("pipe:"):
            return "pipe"
        if gate.is_url(self.location):
            return "http"
        return "local"

    @staticmethod
    def recognises(location: str) -> bool:
        """A URL or a pipe, or a folder holding our index."""
        if location.startswith("pipe:") or gate.is_url(location):
            return True
        return is_our_index(Path(location).expanduser() / INDEX)

    def read(self, name: str, limits: gate.Limits | None = None) -> bytes:
        """The bytes of file `name` (the index or a shard name `data convert` writes), through the gate."""
        gate.check_name(name)
        limits = limits or self.limits
        where = self.where(name)
        if self.kind == "local":
            return gate.read_file(where, limits)
        if self.kind == "http":
            return gate.read_url(where, limits)
        return gate.run_command(where, limits)

    def where(self, name: str) -> str:
        """Where `name` is read from: a path, a URL, or the command line that prints it (the name quoted)."""
        if self.kind == "pipe":
            command = self.location[len("pipe:"):]
            name = gate.quoted_name(name)
            return command.replace("{}", name) if "{}" in command else f"{command} {name}"
        if self.kind == "http":
            return self.location.rstrip("/") + "/" + name
        return str(Path(self.location).expanduser() / name)


def refuse_saved_command(saved_dir: str, given: str | None, where: str) -> None:
    """A `pipe:` data_dir read from a checkpoint is never run: a run folder from elsewhere could name any
    command. The user gives it again (--data-dir) to run it."""
    if str(saved_dir).startswith("pipe:") and not given:
        raise BadInput(f"{where} reads its data through a command ({str(saved_dir)[:80]}); a command from a "
                       "checkpoint is never run: give --data-dir (the same one, if you trust it)")


def is_our_index(path: Path) -> bool:
    """Whether `path` is a regular file that starts like our index (a FIFO or a device is not)."""
    try:
        with gate.open_regular(path) as f:
            head = f.read(4096)
    except BadInput:
        return False
    return FORMAT.encode() in head


def read_index(source: Source) -> dict[str, Any]:
    """The index, checked: our format and version, classes, and each shard's name, count, bytes and sha256."""
    where = source.where(INDEX)
    index = gate.json_bytes(source.read(INDEX, source.limits.at_most(MAX_INDEX_BYTES, "the bound on an index")), where)
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise BadInput(f"{where} is not a shard index written by resnet data convert")
    if index.get("version") != VERSION:
        raise BadInput(f"{where} has version {index.get('version')!r}; this resnet-cli reads version {VERSION}")
    classes = index.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise BadInput(f"{where}: classes must be a non-empty list of names")
    gate.check_count(f"{where}: the number of classes", len(classes), gate.MAX_CLASSES)
    if not valid_descriptions(index.get("descriptions", []), len(classes)):  # optional: what each class is
        raise BadInput(f"{where}: descriptions must be a list of one text per class")
    splits = index.get("splits")
    if not isinstance(splits, dict) or "train" not in splits and "val" not in splits:
        raise BadInput(f"{where}: no train or val split")
    for split, entry in splits.items():
        shards = entry.get("shards") if isinstance(entry, dict) else None
        if split not in SHARD_SPLIT.values() or not isinstance(shards, list) or not shards:
            raise BadInput(f"{where}: split {split!r} must be train or val, with a list of shards")
        for s in shards:
            ok = isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("sha256"), str) \
                and isinstance(s.get("count"), int) and s["count"] > 0 and isinstance(s.get("bytes"), int) \
                and s["bytes"] > 0
            if not ok:
                raise BadInput(f"{where}: a {split} shard entry lacks name, count, bytes or sha256: {str(s)[:120]}")
            gate.check_name(s["name"], where)
        if entry.get("count") != sum(s["count"] for s in shards):
            raise BadInput(f"{where}: the {split} count is not the sum of its shards' counts")
    return index
