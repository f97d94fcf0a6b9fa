"""Which .pt2 files may be loaded: a .pt2 file runs code when it is loaded (exported.py), so one loads only when
this user's `resnet export` wrote it (its sha256 recorded then, in the cache folder) or with TRUST_FLAG. No torch
here: the CLI's option is spelled from TRUST_FLAG without importing a runtime."""

from __future__ import annotations

import json
from pathlib import Path

from . import gate
from .errors import BadInput

TRUST_FLAG = "--trust-exported"


def trust_record() -> Path:
    """The sha256 of every .pt2 file `resnet export` wrote for this user, a line each, in its cache folder."""
    from .files import cache_home

    return cache_home() / "exported-pt2.sha256"


def remember(path: Path) -> None:
    """Record that `resnet export` wrote the .pt2 file at `path`, so that predict, eval and bench load it without
    --trust-exported. Where the record cannot be written (a read-only home), the file is simply not remembered."""
    from .files import ensure_writable_dir, open_own_file

    digest = gate.digest(path, what="exported model")
    try:
        ensure_writable_dir(trust_record().parent)
        with open_own_file(trust_record(), "the record of exported files", append=True) as f:
            f.write(f"{digest}  {json.dumps(str(path.resolve()))}\n")  # quoted: a name cannot add a line
    except (BadInput, OSError):
        pass


def written_here(raw: bytes) -> bool:
    """Whether these bytes are a .pt2 file `resnet export` wrote for this user (`remember`)."""
    import hashlib

    record = trust_record()
    if not record.is_file():
        return False
    digest = hashlib.sha256(raw).hexdigest()
    lines = gate.read_file(record, gate.Limits(64 * 2**20), "the record of exported files").decode(errors="replace")
    return any(line.split(" ", 1)[0] == digest for line in lines.splitlines())
