"""The one checkpoint format, written atomically and read with `weights_only=True`.

A checkpoint is a plain dict: `{"model": state_dict, "config": {...}, "version": N}`,
where `config["model"]` rebuilds the network with `build_model(**config["model"])`.
Training adds optimizer, scheduler, scaler and RNG state under more keys. Only
tensors and plain containers go in, so nothing in a checkpoint can run code.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

from .errors import BadInput

FORMAT_VERSION = 1


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, fsync it, then rename it into place.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    # The temp name keeps the suffix: some writers (torch.export) check it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.tmp.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should look like any new file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    import torch

    payload = {"version": FORMAT_VERSION, **state}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint (or a bare state_dict) safely; every failure is one BadInput line."""
    import torch

    path = Path(path)
    if not path.exists():
        raise BadInput(f"checkpoint not found: {path}")
    if path.is_dir():
        raise BadInput(f"{path} is a folder, not a checkpoint file")
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since PyTorch 1.6
        raise BadInput(f"cannot read checkpoint {path}: truncated or not a checkpoint (not a PyTorch file)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"it would call {found.group(1)}" if found else "it holds objects other than tensors"
        raise BadInput(f"refusing to load {path}: {what}; only plain-tensor checkpoints are loaded "
                       "(weights_only=True)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"cannot read checkpoint {path}: truncated or not a checkpoint ({first[:160]})") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{path} does not hold a checkpoint dict (found {type(obj).__name__})")
    return obj


def is_full_checkpoint(obj: dict[str, Any]) -> bool:
    return isinstance(obj.get("model"), dict) and isinstance(obj.get("config"), dict) \
        and isinstance(obj["config"].get("model"), dict)
