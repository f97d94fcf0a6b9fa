"""Run folders: created atomically, auto-numbered, never overwritten; metrics written atomically."""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Callable

from ..errors import BadInput
from ..files import atomic_write_text, ensure_writable_dir, open_own_file
from .evaluations import METRIC_FIELDS


def run_name(cfg) -> str:
    """The run folder's name: run.name, else <model>-<dataset> (deterministic, so a restart finds it)."""
    return cfg.run.name or f"{cfg.model.name}-{cfg.data.dataset}"


def check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or not name.isprintable():
        raise BadInput(f"run name {name!r} must be a plain folder name (no slashes, no control characters)")


# The temporary files of this package's atomic writes of a run's own files (files.atomic_write: .<stem>.tmp.*<suffix>)
OWN_TEMPORARIES = (".last.tmp.*.pt", ".best.tmp.*.pt", ".config.tmp.*.yaml", ".metrics.tmp.*.csv")
LOCK = ".lock"  # held while a process trains in the folder (RunLock)
MAX_METRICS_BYTES = 64 * 2**20
# What a run folder holds before its first checkpoint: a start that died that early left only these.
BEFORE_FIRST_CHECKPOINT = ("config.yaml", "events.out.tfevents.*", "trackers.json", "metrics.jsonl", "wandb", LOCK,
                           *OWN_TEMPORARIES)  # trackers.json, metrics.jsonl, wandb/: train/trackers.py


class RunLock:
    """One training process per run folder: an exclusive lock (flock) on RUN/.lock while it trains. A second
    writer (a second --resume of the run, or a --resume auto restart while the first still runs) gets one line
    instead of two processes writing one last.pt. The lock goes with the process: a killed run leaves a .lock
    file that nobody holds, which the next run takes; a run that ends removes it. File systems without flock
    (some network mounts) are not locked, and say so in one line (`on_unlocked`).

    `wait` seconds: how long a lock held by another process is waited for before refusing. On a network file
    system a dead node's lock outlives it (about 90 s on NFSv4), so a restart on a replacement node (`--resume
    auto`) waits for it to lapse; a second interactive `--resume` is refused at once (wait 0)."""

    def __init__(self, folder: Path, wait: float = 0.0, on_unlocked: Callable[[str], None] | None = None) -> None:
        self.file = None
        self.path = folder / LOCK
        try:
            import fcntl
        except ImportError:  # not POSIX
            return
        deadline = time.monotonic() + wait
        while True:
            f = open_own_file(self.path, "the run's lock")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                owner = " ".join(f.read(200).split()) or "another process"
                f.close()
                if time.monotonic() < deadline:
                    time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
                    continue
                waited = f" (waited {wait:g} s, run.lock_wait)" if wait else ""
                raise BadInput(f"run folder {folder} is in use{waited}: {owner} trains in it; two writers would "
                               "overwrite each other's last.pt. Wait for it to stop, or train under another "
                               "--name") from None
            except OSError as e:  # no flock on this file system (Lustre without -o flock, some NFS mounts)
                f.close()
                if on_unlocked is not None:
                    on_unlocked(f"note: run folder {folder} cannot be locked on this file system "
                                f"({e.strerror or e}): nothing stops a second process from writing to it")
                return
            try:  # the file we hold must still be the one at the path (its last holder may have removed it)
                if os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            f.close()
        import socket

        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self.file = f

    def release(self) -> None:
        """Remove the lock file while still holding it, then let go."""
        if self.file is not None and not self.file.closed:
            self.path.unlink(missing_ok=True)
            self.file.close()


def remove_own_temporaries(folder: Path) -> None:
    """What a process killed mid-write left of the run's own files; anything else in the folder is kept."""
    for pattern in OWN_TEMPORARIES:
        for stale in folder.glob(pattern):
            stale.unlink(missing_ok=True)


def claim_run_dir(parent: str | os.PathLike, name: str) -> Path:
    """Make `parent/name` exactly (run.resume: auto, which has no last.pt there). A folder that is already
    there is taken over only when it holds nothing but what a start that died before its first checkpoint
    wrote; anything else is somebody's work, and refused."""
    check_name(name)
    folder = ensure_writable_dir(parent) / name
    if made(folder):
        return folder
    if not folder.is_dir():
        raise BadInput(f"run folder {folder} is a file; choose another --name")
    other = sorted(p.name for p in folder.iterdir() if not any(p.match(g) for g in BEFORE_FIRST_CHECKPOINT))
    if other:
        raise BadInput(f"--resume auto: {folder} has no last.pt to resume but holds {', '.join(other[:3])}"
                       f"{' ...' if len(other) > 3 else ''}; it is not a run this command started: choose another "
                       "--name")
    return folder


def create_run_dir(parent: str | os.PathLike, name: str) -> Path:
    """Make `parent/name`, or `name-2`, `name-3`, ... if taken.

    `mkdir` is atomic, so two runs started at once with the same name get different folders.
    """
    check_name(name)
    parent = ensure_writable_dir(parent)
    for i in range(1, 10_000):
        candidate = parent / (name if i == 1 else f"{name}-{i}")
        if made(candidate):
            return candidate
    raise BadInput(f"too many runs named {name!r} in {parent}")


def made(folder: Path) -> bool:
    """Create `folder` (atomically: of two processes, one makes it); False when it was already there."""
    try:
        folder.mkdir()
        return True
    except FileExistsError:
        return False
    except OSError as e:
        raise BadInput(f"cannot create run folder {folder}: {e.strerror}") from None


def write_metrics(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    """metrics.csv with `fields` (default METRIC_FIELDS), then any other column a row has (grad_norm_*)."""
    fields = list(fields or METRIC_FIELDS)
    fields += sorted({k for r in rows for k in r if k not in fields})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.csv, numbers parsed; through the gate (`plot` reads run folders from anywhere), at most
    MAX_METRICS_BYTES (a row an epoch is about 300 bytes)."""
    from .. import gate

    if not path.exists() and not path.is_symlink():
        raise BadInput(f"no metrics.csv in {path.parent}")
    raw = gate.read_file(path, gate.Limits(MAX_METRICS_BYTES, keys=("the bound on a metrics.csv, 64 MiB", "")),
                         "metrics")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8", errors="replace"), newline="")))
    out = []
    for row in rows:
        parsed = {}
        for k, v in row.items():
            try:
                parsed[k] = int(v) if k in ("epoch", "step") else float(v)
            except (TypeError, ValueError):
                parsed[k] = v
        out.append(parsed)
    return out
