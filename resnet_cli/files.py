"""Files written atomically, and folders checked for writing: the ground floor every writer stands on.

`atomic_write` writes beside the target and renames into place, so a crash at any moment leaves
either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import errno
import io  # noqa: F401 (annotations)
import os
from pathlib import Path
from typing import Callable

from .errors import BadInput


RUN_CHECKPOINTS = ("last.pt", "best.pt")


def output_path(path: str | os.PathLike, force: bool = False, flag: str = "-o") -> Path:
    """The one rule for a file a command is asked to write: never a folder; an existing file only with
    --force; a run's own checkpoint (last.pt, best.pt beside its config.yaml) never, since --resume and
    eval need it. Checked before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{flag} {path} is a folder; give a file name")
    if path.name in RUN_CHECKPOINTS and (path.parent / "config.yaml").is_file():
        raise BadInput(f"{flag} {path} is a checkpoint of the run {path.parent}; it is never replaced: write "
                       "somewhere else")
    if (path.exists() or path.is_symlink()) and not force:
        raise BadInput(f"{flag} {path} exists; pass --force to replace it")
    ensure_writable_dir(path.parent)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], sync: bool = True) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, fsync it, then rename it into place.

    A crash at any moment leaves either the old file or the new one, never a torn one. `write` may stream (a
    download) and may raise to keep nothing (a checksum that does not match): the temporary file is removed.
    `sync=False`, for a bulk write of many files (a dataset's images), renames without the fsyncs: a process
    stopped at any moment leaves no torn file, but after a power cut one may be short, which its writer must
    look for when it runs again (data/imagenet.py compares sizes).
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp = _new_beside(path)
    try:
        write(tmp)
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        _fsync_dir(path.parent)
    return path


def _new_beside(path: Path) -> Path:
    """A new empty file beside `path` for atomic_write, keeping its suffix (some writers, torch.export, check
    it): created exclusively and never through a link, with mode 0666 less the umask like any new file. The
    kernel applies the umask: reading it in Python means setting it, and for that moment every file another
    thread (a DataLoader's, a tracker's) created would be world-writable."""
    import secrets

    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.stem}.tmp.{secrets.token_hex(4)}{path.suffix}")
        try:
            os.close(os.open(tmp, flags, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as e:  # name the file asked for, not the temporary one
            raise OSError(e.errno, e.strerror, str(path)) from None
    raise OSError(errno.EEXIST, "no free temporary name beside it", str(path))


def atomic_write_bytes(path: str | os.PathLike, serialize: Callable[["io.BytesIO"], None]) -> Path:
    """`serialize(buffer)` into memory, then the bytes written by Python through `atomic_write`: a full disk is then
    an OSError (ENOSPC, one line, the temporary file removed), where a C++ writer (torch.save, torch.export.save)
    fails with an internal message or leaves its file behind."""
    import io

    buffer = io.BytesIO()
    serialize(buffer)
    # getvalue() hands over the buffer's bytes without a copy. Never getbuffer(): its view, kept alive by a failed
    # write's traceback, crashes Python 3.12.0 and 3.12.1 when the garbage collector frees it (CPython gh-111211):
    # a full disk was a segfault there.
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def open_own_file(path: str | os.PathLike, what: str, append: bool = False) -> "io.TextIOWrapper":
    """Open (creating it if needed) a file the tool keeps for itself in a folder of its own, such as a run's lock
    (read and written) or a log (`append`): never through a symlink (O_NOFOLLOW), and only a regular file (a FIFO
    or a device in its place is refused, without blocking on it). One BadInput line otherwise."""
    import stat

    flags = (os.O_WRONLY | os.O_APPEND if append else os.O_RDWR) | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) \
        | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        import errno

        if e.errno == errno.ELOOP:
            raise BadInput(f"{what} {path} is a symbolic link: refused (it would write through it); remove it")
        raise BadInput(f"cannot open {what} {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BadInput(f"{what} {path} is not a regular file (a FIFO, a device or a folder): refused; remove it")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a" if append else "r+")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def cache_home() -> Path:
    """resnet-cli's own folder in the user's cache: $XDG_CACHE_HOME/resnet-cli, else ~/.cache/resnet-cli (datasets
    by default, the record of exported files)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resnet-cli"


def ensure_writable_dir(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed; raise BadInput naming it when it cannot be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise BadInput(f"cannot write to {folder}: a file is in the way") from None
    except OSError as e:
        raise BadInput(f"cannot write to {folder}: {e.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"cannot write to {folder}: permission denied")
    return folder
