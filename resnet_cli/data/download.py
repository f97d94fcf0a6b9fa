"""Downloads and archive extraction that never trust what comes over the wire.

- Through the gate (gate.stream_url): HTTPS only, plain http for loopback hosts alone (a local mirror or a
  test server), bounded in bytes and in the whole transfer's time.
- A download goes to a temporary file (files.atomic_write), is verified, and only then renamed into place:
  a partial or corrupt download is never used.
- Extraction refuses absolute paths, `..` members, links that leave the folder and
  device files, and also applies tarfile's `data` filter where Python has it; it never writes through a
  symbolic link already on a member's path (that would overwrite the file the link names).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

from ..errors import BadInput
from ..files import atomic_write
from ..gate import Limits, Unreachable, check_url, digest, stream_url

MAX_DOWNLOAD_BYTES = 2 * 2**30  # CIFAR-100's archive is 161 MiB, a ResNet-152's weights 230 MiB

DownloadError = Unreachable  # the network could not deliver the file (offline, 404, timeout)


def md5_file(path: str | os.PathLike) -> str:
    return digest(path, "md5")


def download(url: str, dest: Path, md5: str | None, limits: Limits | None = None,
             sha256_prefix: str | None = None) -> Path:
    """Fetch `url` to `dest` through a verified temporary file (its md5, or the start of its sha256 as
    torchvision's file names carry it). `limits`: data.max_read_mb and data.read_timeout (default 1 hour), never
    more than MAX_DOWNLOAD_BYTES."""
    limits = (limits or Limits(seconds=3600.0)).at_most(MAX_DOWNLOAD_BYTES, "the bound on a download")
    check_url(url)

    def fetch(tmp: Path) -> None:
        md5_sum, sha = hashlib.md5(), hashlib.sha256()
        with open(tmp, "wb") as out:
            for block in stream_url(url, limits, "download"):
                md5_sum.update(block)
                sha.update(block)
                out.write(block)
        if md5 is not None and md5_sum.hexdigest() != md5:
            raise BadInput(f"checksum mismatch for {url}: expected md5 {md5}, got {md5_sum.hexdigest()}; "
                           "the file was not kept")
        if sha256_prefix is not None and not sha.hexdigest().startswith(sha256_prefix):
            raise BadInput(f"checksum mismatch for {url}: its sha256 should start with {sha256_prefix}, got "
                           f"{sha.hexdigest()[:16]}...; the file was not kept")

    return atomic_write(dest, fetch)


def _check_member(member: tarfile.TarInfo, root: Path) -> None:
    name = member.name
    if name.startswith(("/", "\\")) or os.path.isabs(name):
        raise BadInput(f"refusing archive member with an absolute path: {name}")
    if ".." in Path(name).parts:
        raise BadInput(f"refusing archive member outside the folder: {name}")
    if member.isdev() or member.ischr() or member.isblk() or member.isfifo():
        raise BadInput(f"refusing archive member that is a device or fifo: {name}")
    if member.issym() or member.islnk():
        target = Path(member.linkname)
        resolved = (root / Path(name).parent / target) if member.issym() else (root / target)
        if target.is_absolute() or not os.path.realpath(resolved).startswith(os.path.realpath(root) + os.sep):
            raise BadInput(f"refusing archive link that points outside the folder: {name} -> {member.linkname}")


def _check_target(member: tarfile.TarInfo, root: Path) -> None:
    """Extraction opens a member's path and writes: through a symbolic link there (or in a folder on its way) it
    would overwrite the file the link names, a file of the user's (tarfile's `data` filter stops links that
    leave `root`, not those inside it). Such a path is refused, as is a FIFO or a device there (it would block).
    A link member replaces a link at its own path (tarfile removes it first)."""
    parts = Path(member.name).parts
    path = root
    for i, part in enumerate(parts):
        path = path / part
        last = i == len(parts) - 1
        if last and (member.issym() or member.islnk()):
            return
        if path.is_symlink():
            raise BadInput(f"{path} is a symbolic link: extracting {member.name} would write through it, over the "
                           "file it names; remove the link and run again")
        if not path.exists():
            return
        folder = member.isdir() or not last
        if not (path.is_dir() if folder else path.is_file()):
            raise BadInput(f"{path} is in the way of extracting {member.name} (it is not a "
                           f"{'folder' if folder else 'regular file'}); remove it and run again")


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive into `dest`, refusing anything that could land outside it, or write through a link."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                _check_member(m, dest)
                _check_target(m, dest)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.10.12 / 3.11.4
                tar.extractall(dest, members=members)
    except tarfile.TarError as e:
        raise BadInput(f"cannot extract {archive}: {e}") from None
    except OSError as e:  # a full disk, a read-only folder
        raise BadInput(f"cannot extract {archive} into {dest}: {e.strerror or e}") from None
