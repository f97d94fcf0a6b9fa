"""The one gate for bytes from outside: every read of a file, a shard, an index, an http body or the output of a
`pipe:` command goes through here, and every size read from a config, an index or a checkpoint is bounded here
before anything is allocated.

The rules (docs/failures.md):
- regular files only: a FIFO, a device, a folder, or a symlink to one of those is refused before a byte is read
  (the file is opened non-blocking and checked with fstat, so not even the open can block);
- a byte bound enforced while reading: at most `limit + 1` bytes are ever held, whatever the source sends;
- a deadline for the whole transfer, not per read: a server that trickles, or a command that sleeps, is stopped;
- a transfer another library makes (huggingface_hub's, into its cache) has its declared size checked before it
  starts and runs under the same deadline; its bytes are then read from disk through `read_file`;
- a name read from an index reaches a shell only when it is one of the names `resnet data convert` writes, and
  then quoted; the user's own command line stays theirs.
Every refusal is one `BadInput` line naming the source and, where a setting decides it, the setting.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator, TypeVar

from .errors import BadInput

CHUNK = 1 << 20
T = TypeVar("T")

# Sizes that decide an allocation, bounded before it: far above any real dataset or model, far below what would
# take the machine down. One table, so that a config, an index and a checkpoint meet the same bounds.
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841
MAX_CHANNELS = 64
MAX_IMAGE_SIZE = 4096  # a training crop's side, in pixels
MAX_IMAGES_IN_MEMORY = 50_000_000  # synthetic datasets are made in memory (and on the device)
MAX_IN_MEMORY_BYTES = 64 * 2**30
MAX_JSON_DEPTH = 64  # an index is three levels deep

# The names `resnet data convert` writes; the only names from an index that are ever read (or put in a command).
SHARD_NAME = re.compile(r"(train|val)-[0-9]{6,9}\.tar")
INDEX_NAME = "index.json"


@dataclass(frozen=True)
class Limits:
    """How much one transfer may bring and how long it may take. The defaults are data.max_read_mb and
    data.read_timeout's; `keys` name the settings in errors."""

    max_bytes: int = 4096 * 2**20
    seconds: float = 900.0
    keys: tuple[str, str] = ("data.max_read_mb", "data.read_timeout")

    @classmethod
    def of(cls, data_cfg: Any) -> "Limits":
        return cls(int(data_cfg.max_read_mb) * 2**20, float(data_cfg.read_timeout))

    def at_most(self, max_bytes: int, key: str) -> "Limits":
        """These limits with a smaller byte bound (an index's, a shard's recorded size) named by `key`."""
        if max_bytes >= self.max_bytes:
            return self
        return Limits(max_bytes, self.seconds, (key, self.keys[1]))

    def too_large(self, where: str) -> BadInput:
        return BadInput(f"{where} is larger than {_size(self.max_bytes)} ({self.keys[0]}): refused")

    def too_slow(self, where: str) -> BadInput:
        return BadInput(f"{where} took longer than {self.seconds:g} s to read ({self.keys[1]}): stopped")


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n:,} bytes"


# ---------------------------------------------------------------- files

def open_regular(path: str | os.PathLike, what: str = "") -> BinaryIO:
    """`path` opened for reading, refused (one line) unless it is a regular file: opened non-blocking so that a
    FIFO cannot block the open, then checked on the descriptor (no gap for the file to be swapped)."""
    label = f"{what} {path}".strip()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise BadInput(f"{label}: not found") from None
    except IsADirectoryError:
        raise BadInput(f"{label} is a folder, not a file") from None
    except OSError as e:
        raise BadInput(f"cannot read {label}: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
            raise BadInput(f"{label} is {kind}, not a regular file: refused")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_file(path: str | os.PathLike, limits: Limits = Limits(), what: str = "") -> bytes:
    """The bytes of a regular file, at most `limits.max_bytes` (its size checked before reading, the bound kept
    while reading, should it grow); a read that fails midway (EIO, a file cut short on a network file system) is
    one line naming the file, as a failed open is."""
    label = f"{what} {path}".strip()
    with open_regular(path, what) as f:
        if os.fstat(f.fileno()).st_size > limits.max_bytes:
            raise limits.too_large(label)
        try:
            return _bounded(f.read, limits, label, time.monotonic() + limits.seconds)
        except OSError as e:
            raise BadInput(f"cannot read {label}: {e.strerror or e}") from None


def digest(path: str | os.PathLike, algorithm: str = "sha256", what: str = "") -> str:
    """The hex digest of a regular file, read in blocks (a file of any size, in constant memory)."""
    import hashlib

    h = hashlib.new(algorithm)
    with open_regular(path, what) as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def read_gzip(path: str | os.PathLike, limits: Limits = Limits(), what: str = "") -> bytes:
    """A gzip file's decompressed bytes, at most `limits.max_bytes` of them (a small bomb stays small)."""
    import gzip
    import zlib

    label = f"{what} {path}".strip()
    with open_regular(path, what) as raw:
        try:
            with gzip.GzipFile(fileobj=raw) as f:
                return _bounded(f.read, limits, label, time.monotonic() + limits.seconds)
        except (OSError, EOFError, zlib.error) as e:
            raise BadInput(f"cannot read {label}: {str(e)[:200]}") from None


def _bounded(read, limits: Limits, where: str, deadline: float) -> bytes:
    parts, held = [], 0
    while True:
        block = read(min(CHUNK, limits.max_bytes + 1 - held))
        if not block:
            return b"".join(parts)
        parts.append(block)
        held += len(block)
        if held > limits.max_bytes:
            raise limits.too_large(where)
        if time.monotonic() > deadline:
            raise limits.too_slow(where)


# ---------------------------------------------------------------- http

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ONLY_HTTPS = "only https URLs are allowed (http on loopback only)"  # why a URL, or a redirect to it, is refused


def is_url(text: object) -> bool:
    """Whether `text` names an http(s) URL (to be fetched through `stream_url`, which checks it), not a path."""
    return isinstance(text, str) and text.startswith(("http://", "https://"))


def allowed(url: str) -> bool:
    """Whether `url` may be fetched: https, or http to a loopback host."""
    import urllib.parse

    parts = urllib.parse.urlparse(url)
    return parts.scheme == "https" or parts.scheme == "http" and (parts.hostname or "") in LOOPBACK


def check_url(url: str) -> None:
    """Only https is fetched; plain http on loopback alone (a local mirror or a test server), which nothing off
    this machine can intercept."""
    if not allowed(url):
        raise BadInput(f"refusing to download {url}: {ONLY_HTTPS}")


class Unreachable(BadInput):
    """The network could not deliver (offline, refused, HTTP error, no answer): a caller may offer another way."""


def read_url(url: str, limits: Limits = Limits()) -> bytes:
    """An http(s) body, whole: `stream_url`'s blocks joined (at most `limits.max_bytes` of them)."""
    return b"".join(stream_url(url, limits))


def stream_url(url: str, limits: Limits = Limits(), verb: str = "read") -> Iterator[bytes]:
    """An http(s) body (https, or http on loopback; each redirect checked before it is followed) in blocks, bounded in
    bytes and in the whole transfer's time. Each read waits at most the time left, so a server that sends a byte
    now and then is stopped at the deadline, not after a timeout per read."""
    import http.client
    import urllib.error
    import urllib.request

    check_url(url)
    deadline = time.monotonic() + limits.seconds
    opener = urllib.request.build_opener(_checked_redirects())
    try:
        with opener.open(url, timeout=max(0.1, min(60.0, limits.seconds))) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_bytes:
                raise limits.too_large(url)
            sock = getattr(getattr(response.fp, "raw", None), "_sock", None)
            held = 0
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise limits.too_slow(url)
                if sock is not None:
                    sock.settimeout(max(0.05, min(60.0, left)))
                block = response.read1(min(CHUNK, limits.max_bytes + 1 - held))
                if not block:
                    return
                held += len(block)
                if held > limits.max_bytes:
                    raise limits.too_large(url)
                yield block
    except BadInput:
        raise
    except urllib.error.HTTPError as e:
        e.close()  # the error carries the response: its socket is let go here, not by the garbage collector
        reason = (str(e.reason).splitlines() or [""])[0][:200]  # urllib's own reasons can run to several lines
        raise Unreachable(f"cannot {verb} {url}: HTTP {e.code} {reason}".rstrip()) from None
    except TimeoutError:
        if time.monotonic() >= deadline - 0.1:
            raise limits.too_slow(url) from None
        raise Unreachable(f"cannot {verb} {url}: no answer within 60 s") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise Unreachable(f"cannot {verb} {url}: {str(reason)[:200] or type(e).__name__}") from None


def declared_size(size: int | None, limits: Limits, where: str) -> int:
    """The size a server declares for a transfer another library will make (huggingface_hub's, into its cache),
    checked before a byte of it is fetched: unknown or above the bound is one line."""
    if size is None:
        raise BadInput(f"{where}: the server did not say how large it is: refused (its size is checked before it "
                       "is fetched)")
    if size > limits.max_bytes:
        raise limits.too_large(where)
    return size


def within_deadline(transfer: Callable[[], T], limits: Limits, where: str) -> T:
    """`transfer()`, a transfer another library makes (huggingface_hub's download into its cache), under this
    gate's deadline for the whole of it. It runs in a daemon thread; past the deadline the caller gets the one
    line, and the thread, left behind, ends with the process (the library resumes its partial file next time).
    Its size is checked before (`declared_size`) and its bytes when read (`read_file`)."""
    import threading

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = transfer()
        except BaseException as e:  # handed to the caller's thread, which raises it
            outcome["error"] = e

    worker = threading.Thread(target=run, name="resnet-transfer", daemon=True)
    worker.start()
    worker.join(limits.seconds)
    if worker.is_alive():
        raise limits.too_slow(where)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _checked_redirects():
    """A redirect handler that checks each hop before it is followed: the new URL is `allowed` and keeps the
    first URL's scheme, so a loopback mirror cannot send the transfer off this machine over plain http, and https
    is never downgraded. At most 5 hops."""
    import urllib.request

    class CheckedRedirects(urllib.request.HTTPRedirectHandler):
        max_redirections = 5

        def redirect_request(self, req, fp, code, msg, headers, newurl):
            import urllib.parse

            scheme, new = urllib.parse.urlparse(req.full_url).scheme, urllib.parse.urlparse(newurl)
            why = f"it leaves {scheme}" if new.scheme != scheme else None if allowed(newurl) else ONLY_HTTPS
            if why:
                fp.close()
                raise BadInput(f"refusing redirect from {req.full_url} to {newurl[:200]}: {why}")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return CheckedRedirects


# ---------------------------------------------------------------- pipe: commands

def quoted_name(name: str) -> str:
    """A file name from an index, ready for a command line: only names `resnet data convert` writes, quoted."""
    check_name(name)
    return shlex.quote(name)


def check_name(name: Any, where: str = "the index") -> str:
    """`name` if it is the index or a shard name `resnet data convert` writes; one line otherwise. Nothing else
    from an index is ever opened, fetched or put in a command (no paths, no shell characters)."""
    if not isinstance(name, str) or not (name == INDEX_NAME or SHARD_NAME.fullmatch(name)):
        raise BadInput(f"shard name {str(name)[:80]!r} in {where} is not one resnet data convert writes "
                       "(train-NNNNNN.tar, val-NNNNNN.tar): refused")
    return name


def run_command(command: str, limits: Limits = Limits()) -> bytes:
    """The standard output of a shell command line, bounded: stdout held to `limits.max_bytes`, stderr to its
    last 4 KiB, and the whole run to `limits.seconds`; past either, the command's process group is killed."""
    import selectors
    import signal
    import subprocess

    deadline = time.monotonic() + limits.seconds
    try:
        proc = subprocess.Popen(command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,  # noqa: S602
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        raise BadInput(f"cannot run {command!r}: {e.strerror or e}") from None
    out, err, held = [], b"", 0
    failure: BadInput | None = None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        while sel.get_map() and failure is None:
            left = deadline - time.monotonic()
            if left <= 0:
                failure = limits.too_slow(repr(command))
                break
            for key, _ in sel.select(timeout=left):
                block = os.read(key.fileobj.fileno(), CHUNK)
                if not block:
                    sel.unregister(key.fileobj)
                elif key.data == "out":
                    out.append(block)
                    held += len(block)
                    if held > limits.max_bytes:
                        failure = limits.too_large(f"the output of {command!r}")
                        break
                else:
                    err = (err + block)[-4096:]
    if failure is not None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        code = proc.wait(timeout=max(0.1, deadline - time.monotonic()) if failure is None else 5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        failure = failure or limits.too_slow(repr(command))
        code = proc.returncode
    finally:
        proc.stdout.close()
        proc.stderr.close()
    if failure is not None:
        raise failure
    if code != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise BadInput(f"{command!r} exited with {code}" + (f": {lines[-1][:200]}" if lines else ""))
    return b"".join(out)


# ---------------------------------------------------------------- parsed bytes and sizes

def json_bytes(raw: bytes, where: str) -> Any:
    """JSON from outside: not UTF-8, not JSON or nested deeper than an index ever is: one line."""
    import json

    depth = max_nesting(raw)
    if depth > MAX_JSON_DEPTH:
        raise BadInput(f"{where} is nested {depth} levels deep: not an index of ours")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise BadInput(f"{where} is not JSON ({str(e)[:120]})") from None


def max_nesting(raw: bytes) -> int:
    """How deeply brackets nest in `raw` (brackets inside strings counted too: an upper bound)."""
    depth = deepest = 0
    for byte in raw.translate(None, delete=bytes(set(range(256)) - set(b"[]{}"))):
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def check_count(key: str, value: int, bound: int, why: str = "") -> None:
    """A size from a config, an index or a checkpoint, checked before it decides an allocation."""
    if value > bound:
        raise BadInput(f"{key} is {value:,}: at most {bound:,}" + (f" ({why})" if why else ""))

