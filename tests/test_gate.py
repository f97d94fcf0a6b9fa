"""The hostile table (issue 36): every input path crossed with the hostile kinds that apply to it, each row run as
a user would run it. A row asserts the exit code, exactly one line on stderr and no traceback, a bounded time, and
that no file outside the run or output folder changed. The table checks its own completeness: every input path
and every hostile kind has rows, and no module reads outside bytes except through the gate (gate.py)."""

from __future__ import annotations

import ast
import hashlib
import http.server
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from test_shards import colour_folder

pytest.importorskip("PIL")
pytest.importorskip("webdataset")

PACKAGE = Path(__file__).resolve().parent.parent / "resnet_cli"

INPUT_PATHS = ("config", "preset", "checkpoint", "image", "image folder", "idx", "cifar archive", "shard", "index",
               "http", "pipe", "run folder", "lock", "output path", "worker")
KINDS = ("fifo", "dev-zero link", "endless", "trickle", "truncated", "oversized", "deep nesting", "traversal name",
         "shell metacharacters", "symlink to user file", "full disk", "killed worker", "error in worker",
         "crafted record", "redirect")
USER_TEXT = b"the user's own file: never written by resnet\n"


@dataclass
class Row:
    path: str
    kind: str
    args: Callable[["Ctx"], list]  # the command line; may prepare files in ctx.tmp first
    message: str  # in the one line on stderr ("" with code 0)
    code: int = 2
    seconds: float = 30.0
    patch: Callable[[pytest.MonkeyPatch, "Ctx"], None] | None = None
    absent: tuple[str, ...] = ()  # files (under ctx.tmp) that must not exist afterwards: a command ran
    id: str = field(default="")

    @property
    def slow(self) -> bool:
        """Rows that wait out a deadline, or train, or leave a failed DataLoader behind (its worker never gets the
        end marker and is joined for 5 s when the iterator is collected): run by the whole suite, not the quick
        loop."""
        return self.kind in ("trickle",) or "read_timeout" in str(self.message) or self.patch is _full_disk \
            and self.path == "checkpoint" or self.path == "worker"


@dataclass
class Ctx:
    tmp: Path
    home: Path  # the user's own files
    shards: Path
    run: Path
    url: str  # a loopback server: /endless, /trickle, /missing, and the shards under /wds

    def copy_shards(self, name: str, change: Callable[[Path], None] | None = None) -> Path:
        import shutil

        target = self.tmp / name
        shutil.copytree(self.shards, target)
        if change is not None:
            change(target)
        return target

    def index_of(self, folder: Path) -> dict:
        return json.loads((folder / "index.json").read_text())

    def write_index(self, folder: Path, index: dict) -> None:
        (folder / "index.json").write_text(json.dumps(index))


def train_shards(data_dir, *more) -> list:
    return ["train", "--dataset", "shards", "--data-dir", data_dir, "--model", "resnet20", "--image-size", "16",
            "--workers", "0", "--batch-size", "8", "--set", "train.steps=1", "--device", "cpu", "--run-dir",
            "{tmp}/runs", *more]


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def link(path: Path, target) -> Path:
    path.symlink_to(target)
    return path


def renamed_shard(name: str) -> Callable[[Ctx], list]:
    """A pipe: source whose index names the first training shard `name`."""

    def args(c: Ctx) -> list:
        def change(t):
            index = c.index_of(t)
            index["splits"]["train"]["shards"][0]["name"] = name
            c.write_index(t, index)

        folder = c.copy_shards("named", change)
        return train_shards(f"pipe:cat {folder}/{{}}")
    return args


def _with_shard(change: Callable[[Path, dict], None]) -> Callable[[Ctx], list]:
    """Shards whose first training shard (and its index entry) `change(path, entry)` alters."""

    def args(c: Ctx) -> list:
        def apply(t):
            index = c.index_of(t)
            entry = index["splits"]["train"]["shards"][0]
            change(t / entry["name"], entry)
            c.write_index(t, index)

        return train_shards(c.copy_shards("altered", apply))
    return args


def _duplicate_key(path: Path, entry: dict) -> None:
    import io
    import tarfile

    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as out:
        for m, data in members + members[:2]:  # the first sample's members again
            out.addfile(m, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    entry["sha256"], entry["bytes"] = hashlib.sha256(buffer.getvalue()).hexdigest(), len(buffer.getvalue())


def _grown(path: Path, entry: dict) -> None:
    with open(path, "ab") as f:
        f.write(b"\0" * 4096)


def _checkpoint_asking(c: Ctx, classes: int) -> Path:
    ckpt = torch.load(c.run / "last.pt", weights_only=True)
    ckpt["config"]["model"]["num_classes"] = classes
    ckpt.pop("input", None)
    torch.save(ckpt, c.tmp / "classes.pt")
    return c.tmp / "classes.pt"


def _record_classes(c: Ctx, n: int) -> Path:
    ckpt = torch.load(c.run / "last.pt", weights_only=True)
    ckpt["input"]["classes"] = ckpt["input"]["classes"][:n]
    torch.save(ckpt, c.tmp / "record.pt")
    return c.tmp / "record.pt"


def _deflated(src: Path, dst: Path) -> Path:
    """The run's checkpoint with a first tensor of 64 MiB of zeros, deflated: a 2 MiB file torch.load would inflate
    (and allocate) to 66 MiB."""
    import zipfile

    ckpt = torch.load(src, weights_only=True)
    ckpt = {"bomb": torch.zeros(2**24), **ckpt}  # the first storage, data/0
    torch.save(ckpt, dst)
    with zipfile.ZipFile(dst) as stored:
        records = [(m, stored.read(m)) for m in stored.infolist()]
    with zipfile.ZipFile(dst, "w") as out:
        for m, data in records:
            out.writestr(m, data, compress_type=zipfile.ZIP_DEFLATED)
    assert dst.stat().st_size < 2**22
    return dst


def _png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (32, 32)).save(path)
    return path


def _deep_index(c: Ctx) -> list:
    folder = c.tmp / "deep"
    folder.mkdir()
    (folder / "index.json").write_text('{"format": "resnet-cli-shards", "x": ' + "[" * 200_000 + "]" * 200_000 + "}")
    return train_shards(folder)


def _lock_link(c: Ctx) -> list:
    (c.run / ".lock").unlink(missing_ok=True)
    link(c.run / ".lock", c.home / "notes.txt")
    return ["train", "--resume", c.run, "--epochs", "2"]


def _plotted(c: Ctx, name: str, change: Callable[[Path], None]) -> list:
    """`resnet plot` of a copy of the run whose `change(folder)` made one of its files hostile (a run folder to
    plot may come from anywhere)."""
    import shutil

    folder = c.tmp / "plotted"
    shutil.copytree(c.run, folder)
    (folder / name).unlink()
    change(folder / name)
    return ["plot", folder, "-o", c.tmp / "curves.png"]


def _lock_fifo(c: Ctx) -> list:
    (c.run / ".lock").unlink(missing_ok=True)
    fifo(c.run / ".lock")
    return ["train", "--resume", c.run, "--epochs", "2"]


def _full_disk(monkeypatch: pytest.MonkeyPatch, c: Ctx) -> None:
    import errno

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(Path, "write_bytes", full)


def _idx_folder(c: Ctx, change: Callable[[Path], None]) -> list:
    folder = c.tmp / "idx"
    folder.mkdir()
    change(folder)
    return ["train", "--dataset", "fashion-mnist", "--data-dir", folder, "--set", "data.download=false",
            "--device", "cpu"]


def _user_shard_names(c: Ctx) -> list:
    out = c.tmp / "mine"
    out.mkdir()
    (out / "train-000000.tar").write_bytes(USER_TEXT)
    return ["data", "convert", c.shards.parent.parent / "folder", out, "--shard-images", "8"]


ROWS = [
    # config files and presets
    Row("config", "fifo", lambda c: ["train", "--config", fifo(c.tmp / "f.yaml")], "is a FIFO, not a regular file"),
    Row("config", "dev-zero link", lambda c: ["train", "--config", link(c.tmp / "z.yaml", "/dev/zero")],
        "is a device, not a regular file"),
    Row("config", "oversized", lambda c: ["train", "--config", _big(c.tmp / "big.yaml", 2 << 20)],
        "is larger than 1 MiB"),
    Row("config", "oversized", lambda c: ["train", "--set", "data.synthetic_train=1000000000"],
        "data.synthetic_train is 1,000,000,000: at most 50,000,000"),
    Row("config", "oversized", lambda c: ["train", "--set", "data.classes=100000000"],
        "data.classes is 100,000,000: at most 100,000"),
    Row("config", "oversized", lambda c: ["train", "--set", "data.synthetic_train=2000000", "--set",
                                          "data.image_size=1024"], "synthetic data (data.synthetic_train"),
    Row("config", "deep nesting", lambda c: ["train", "--config", _text(c.tmp / "d.yaml", "a: " + "[" * 5000)],
        "YAML nested too deeply to be a config"),
    Row("preset", "traversal name", lambda c: ["train", "--preset", "../presets/smoke"],
        "unknown preset '../presets/smoke'"),
    # checkpoints
    Row("checkpoint", "fifo", lambda c: ["summary", fifo(c.tmp / "f.pt")], "is a FIFO, not a regular file"),
    Row("checkpoint", "dev-zero link", lambda c: ["eval", link(c.tmp / "z.pt", "/dev/zero")],
        "is a device, not a regular file"),
    Row("checkpoint", "truncated", lambda c: ["eval", _cut(c.run / "last.pt", c.tmp / "cut.pt", 3000)],
        "truncated or not a checkpoint"),
    Row("checkpoint", "oversized", lambda c: ["summary", _checkpoint_asking(c, 10**12)],
        "num_classes is 1,000,000,000,000: at most 100,000"),
    Row("checkpoint", "oversized", lambda c: ["eval", _deflated(c.run / "last.pt", c.tmp / "inflates.pt")],
        "its record inflates/data/0 is compressed to"),
    Row("checkpoint", "crafted record", lambda c: ["predict", _record_classes(c, 1), _png(c.tmp / "ok.png"),
                                                   "--device", "cpu"],
        "input record names 1 class of 3-channel images for a 10-output"),
    # images and image folders
    Row("image", "fifo", lambda c: ["predict", c.run, fifo(c.tmp / "f.png"), "--device", "cpu"],
        "is a FIFO, not a regular file: refused"),
    Row("image", "dev-zero link", lambda c: ["predict", c.run, link(c.tmp / "z.png", "/dev/zero"), "--device", "cpu"],
        "is a device, not a regular file: refused"),
    Row("image folder", "oversized", lambda c: ["train", "--set", "data.image_size=100000"],
        "data.image_size is 100,000: at most 4,096"),
    Row("image folder", "traversal name", lambda c: ["train", "--dataset", "imagefolder", "--data-dir",
                                                     c.tmp / "nothing" / ".." / "gone"],
        "does not exist (expected train/<class>/* and val/<class>/*)"),
    # IDX (MNIST-like) and CIFAR
    Row("idx", "truncated", lambda c: _idx_folder(c, lambda f: [(f / n).write_bytes(b"\0\0\x08\x03\0") for n in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]),
        "checksum mismatch for"),
    Row("idx", "dev-zero link", lambda c: _idx_folder(c, lambda f: [link(f / n, "/dev/zero") for n in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]),
        "fashion-mnist is not available (downloads are off"),
    Row("cifar archive", "trickle", lambda c: ["train", "--dataset", "cifar10", "--data-dir", _folder(c.tmp / "cifar"),
                                               "--set", f"data.url={c.url}/trickle", "--set", "data.read_timeout=0.8",
                                               "--device", "cpu"],
        "took longer than 0.8 s to read (data.read_timeout)", seconds=8),
    Row("cifar archive", "endless", lambda c: ["train", "--dataset", "cifar10", "--data-dir", _folder(c.tmp / "cifar"),
                                               "--set", f"data.url={c.url}/endless", "--set", "data.max_read_mb=2",
                                               "--device", "cpu"],
        "is larger than 2 MiB (data.max_read_mb)"),
    Row("cifar archive", "error in worker", lambda c: ["train", "--dataset", "cifar10", "--data-dir", _folder(c.tmp / "cifar"),
                                                       "--set", f"data.url={c.url}/missing", "--device", "cpu"],
        "HTTP 404"),
    # shards
    Row("shard", "fifo", _with_shard(lambda p, e: (p.unlink(), fifo(p))), "is a FIFO, not a regular file"),
    Row("shard", "dev-zero link", _with_shard(lambda p, e: (p.unlink(), link(p, "/dev/zero"))),
        "is a device, not a regular file"),
    Row("shard", "truncated", _with_shard(lambda p, e: p.write_bytes(p.read_bytes()[:3000])),
        "its sha256 is not the index's"),
    Row("shard", "oversized", _with_shard(_grown), "bytes (its size in the index): refused"),
    Row("shard", "traversal name", _with_shard(lambda p, e: e.update(name="../../etc/passwd")),
        "is not one resnet data convert writes"),
    Row("shard", "error in worker", _with_shard(_duplicate_key), "appears twice"),
    # the index
    Row("index", "fifo", lambda c: train_shards(c.copy_shards("fi", lambda t: ((t / "index.json").unlink(),
                                                                                fifo(t / "index.json")))),
        "index.json is a FIFO, not a regular file: refused"),
    Row("index", "deep nesting", _deep_index, "is nested 200001 levels deep"),
    Row("index", "oversized", lambda c: train_shards(c.copy_shards("many", lambda t: c.write_index(
        t, {**c.index_of(t), "classes": [str(i) for i in range(200_000)]}))),
        "the number of classes is 200,000: at most 100,000"),
    # http
    Row("http", "endless", lambda c: train_shards(f"{c.url}/endless", "--set", "data.max_read_mb=1"),
        "is larger than 1 MiB"),
    Row("http", "trickle", lambda c: train_shards(f"{c.url}/trickle", "--set", "data.read_timeout=0.8"),
        "took longer than 0.8 s to read (data.read_timeout): stopped", seconds=8),
    Row("http", "truncated", lambda c: train_shards(f"{c.url}/missing"), "HTTP 404"),
    Row("http", "redirect", lambda c: train_shards(f"{c.url}/away"),
        "refusing redirect from http://127.0.0.1:"),
    # pipe: commands
    Row("pipe", "shell metacharacters", renamed_shard("train-000000.tar; touch {tmp}/PWNED; echo "),
        "is not one resnet data convert writes", absent=("PWNED",)),
    Row("pipe", "traversal name", renamed_shard("$(touch {tmp}/PWNED)x.tar"),
        "is not one resnet data convert writes", absent=("PWNED",)),
    Row("pipe", "endless", lambda c: train_shards("pipe:yes", "--set", "data.max_read_mb=1"),
        "is larger than 1 MiB"),
    Row("pipe", "oversized", lambda c: train_shards("pipe:sh -c 'while :; do echo noise; done >&2' #",
                                                    "--set", "data.read_timeout=0.8"),
        "took longer than 0.8 s", seconds=8),
    Row("pipe", "trickle", lambda c: train_shards("pipe:sleep 30 #", "--set", "data.read_timeout=0.8"),
        "took longer than 0.8 s to read", seconds=6),
    # run folders, the lock, outputs
    Row("run folder", "traversal name", lambda c: ["train", "--name", "a\nb", "--device", "cpu"],
        "must be a plain folder name (no slashes, no control characters)"),
    Row("run folder", "fifo", lambda c: _plotted(c, "metrics.csv", fifo), "is a FIFO, not a regular file: refused",
        absent=("curves.png",)),
    Row("run folder", "dev-zero link", lambda c: _plotted(c, "metrics.csv", lambda p: link(p, "/dev/zero")),
        "is a device, not a regular file: refused", absent=("curves.png",)),
    Row("run folder", "deep nesting", lambda c: _plotted(c, "config.yaml", lambda p: p.write_text(
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nmodel: [*b, *b, *b]\n")),
        "YAML aliases (*name) are not read (line 2)", absent=("curves.png",)),
    Row("lock", "symlink to user file", _lock_link, "is a symbolic link: refused"),
    Row("lock", "fifo", _lock_fifo, "is not a regular file (a FIFO, a device or a folder): refused"),
    Row("output path", "symlink to user file", lambda c: ["build", "resnet20", "-o",
                                                          link(c.tmp / "m.pt", c.home / "notes.txt")],
        "exists; pass --force to replace it"),
    Row("output path", "dev-zero link", lambda c: ["reproduce", "table1", "--out", "/dev/null"],
        "cannot write to /dev/null: a file is in the way"),
    Row("output path", "traversal name", lambda c: ["data", "convert", c.shards.parent.parent / "folder",
                                                    c.home / "notes.txt",
                                                    "--shard-images", "8"],
        "a file is in the way"),
    Row("output path", "symlink to user file", _user_shard_names, "but no conversion of ours"),
    Row("output path", "full disk", lambda c: ["build", "resnet20", "-o", c.tmp / "new.pt"],
        "no space left on device writing", code=1, patch=_full_disk),
    Row("checkpoint", "full disk", lambda c: ["train", "--preset", "smoke", "--device", "cpu", "--set",
                                              "data.synthetic_train=32", "--set", "data.synthetic_test=16",
                                              "--epochs", "1", "--run-dir", c.tmp / "runs", "--name", "full"],
        "could not save a checkpoint", code=1, patch=_full_disk),
    Row("worker", "error in worker", lambda c: train_shards(c.copy_shards("w", lambda t: (
        t / "train-000000.tar").write_bytes(b"x" * 100)), "--workers", "1"), "its sha256 is not the index's"),
]


def _folder(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


def _big(path: Path, n: int) -> Path:
    path.write_bytes(b"#" * n)
    return path


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _cut(src: Path, dst: Path, n: int) -> Path:
    dst.write_bytes(src.read_bytes()[:n])
    return dst


for _i, _row in enumerate(ROWS):
    _row.id = f"{_row.path}-{_row.kind}-{_i}".replace(" ", "_")


class Hostile(http.server.BaseHTTPRequestHandler):
    """/endless: bytes without end; /trickle: a byte every 0.3 s; /away: a redirect off this machine, over plain
    http; anything else: 404."""

    shards: Path

    def log_message(self, *args):
        pass

    def do_GET(self):
        try:
            if self.path.endswith("/endless") or "/endless/" in self.path:
                self.send_response(200)
                self.end_headers()
                while True:
                    self.wfile.write(b"\0" * 65536)
            if "/away" in self.path:
                self.send_response(302)
                self.send_header("Location", "http://192.0.2.1/index.json")  # TEST-NET-1: never a real host
                self.end_headers()
                return
            if "/trickle" in self.path:
                self.send_response(200)
                self.end_headers()
                for _ in range(200):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.3)
                return
        except (BrokenPipeError, ConnectionResetError):
            return
        self.send_error(404)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from typer.testing import CliRunner

    from resnet_cli.cli import app

    root = tmp_path_factory.mktemp("gate")
    colour_folder(root / "folder", train=4, val=2, size=(20, 20))
    made = CliRunner().invoke(app, ["data", "convert", str(root / "folder"), str(root / "s" / "shards"),
                                    "--shard-images", "4"])
    assert made.exit_code == 0, made.output
    trained = CliRunner().invoke(app, ["train", "--preset", "smoke", "--device", "cpu", "--epochs", "1", "--set",
                                       "data.synthetic_train=32", "--set", "data.synthetic_test=16", "--run-dir",
                                       str(root / "runs"), "--name", "r"])
    assert trained.exit_code == 0, trained.output
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("row", [pytest.param(r, marks=[pytest.mark.slow] if r.slow else [], id=r.id)
                                 for r in ROWS])
def test_hostile_row(row: Row, world, tmp_path, cli, monkeypatch):
    import shutil

    root, url = world
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_bytes(USER_TEXT)
    run = tmp_path / "run"
    shutil.copytree(root / "runs" / "r", run)
    ctx = Ctx(tmp_path, home, root / "s" / "shards", run, url)
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in row.args(ctx)]
    before, run_before = snapshot(home), snapshot(run)
    if row.patch is not None:
        row.patch(monkeypatch, ctx)
    started = time.monotonic()
    result = cli(*args)
    took = time.monotonic() - started
    monkeypatch.undo()
    assert result.exit_code == row.code, (args, result.output[-800:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and row.message in lines[0], (args, result.stderr[-800:])
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert took < row.seconds, f"{took:.1f} s"
    assert snapshot(home) == before  # nothing of the user's changed
    assert {k: v for k, v in snapshot(run).items() if k.endswith(".pt")} == \
        {k: v for k, v in run_before.items() if k.endswith(".pt")}  # a run's checkpoints neither
    for name in row.absent:
        assert not (tmp_path / name).exists(), f"{name}: a command from the index ran"


def test_the_table_covers_every_input_path_and_every_kind():
    assert {r.path for r in ROWS} == set(INPUT_PATHS)
    assert {r.kind for r in ROWS} == set(KINDS) - {"killed worker"}  # a killed worker: the next test


def test_an_http_error_lets_its_socket_go(server):
    """An HTTP error is one line, and its response is closed there: the error, kept in a cycle with the frame that
    caught it (as a command's error handler keeps it), no longer leaves an open socket to the collector."""
    import gc
    import warnings

    from resnet_cli import gate

    def failed(url):
        try:
            gate.read_url(url)
        except gate.BadInput as e:
            err = e  # the frame holds the error, the error's traceback the frame: only the collector frees them
            return err

    _, url, hits = server
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.disable()
        try:
            assert str(failed(f"{url}/missing.tar")) == f"cannot read {url}/missing.tar: HTTP 404 File not found"
        finally:
            gc.enable()
        gc.collect()
    assert hits == ["/missing.tar"]
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_each_redirect_is_checked_before_it_is_followed():
    """A loopback mirror may redirect within loopback; a redirect to plain http off loopback (127.0.0.2 stands for
    another machine here: it is not one of the loopback names), to another scheme, or in a loop is one line, and
    the refused target never sees a request (urllib followed it before: the scheme was compared afterwards)."""
    from resnet_cli import gate

    elsewhere_hits = []

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            elsewhere_hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"leaked")

    elsewhere = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Elsewhere)
    far = f"http://127.0.0.2:{elsewhere.server_address[1]}"
    routes = {"/hop": "/data", "/away": f"{far}/secret", "/ftp": "ftp://127.0.0.2/x", "/loop": "/loop"}

    class Mirror(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path in routes:
                self.send_response(302)
                self.send_header("Location", routes[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    mirror = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    for s in (elsewhere, mirror):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{mirror.server_address[1]}"

    def refusal(path: str) -> str:
        with pytest.raises(gate.BadInput) as e:
            gate.read_url(url + path, gate.Limits(seconds=5))
        return str(e.value)

    try:
        assert gate.read_url(f"{url}/hop") == b"ok"
        assert refusal("/away") == f"refusing redirect from {url}/away to {far}/secret: only https URLs are " \
            "allowed (http on loopback only)"
        assert refusal("/ftp") == f"refusing redirect from {url}/ftp to ftp://127.0.0.2/x: it leaves http"
        looped = refusal("/loop")
        assert looped.startswith(f"cannot read {url}/loop: HTTP 302 ") and "infinite loop" in looped
        assert "\n" not in looped  # urllib's reason runs to three lines: the first is kept
        assert elsewhere_hits == []
    finally:
        for s in (elsewhere, mirror):
            s.shutdown()
            s.server_close()


@pytest.mark.slow  # 5 s: the quick loop keeps under 90 s
def test_a_killed_worker_is_one_line():
    """A DataLoader worker killed (the kernel's OOM killer, a signal): one line naming it, exit 1."""
    import signal

    from resnet_cli.errors import describe

    class Dies(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(RuntimeError) as raised:
        list(torch.utils.data.DataLoader(Dies(), num_workers=1))
    message, code = describe(raised.value)[:2]
    assert code == 1 and "\n" not in message
    assert message.startswith("a data-loading worker process (pid ") and "died (" in message


# What may open, fetch or run outside bytes without the gate, and why. A new call site fails the test below until it
# goes through gate.py (or is listed here with its reason).
RAW_READS_ALLOWED = {
    ("gate.py", "*"): "the gate itself",
    ("files.py", "open"): "writes (the write gate): fsync of our own temporary file",
    ("files.py", "os.open"): "the folder fsync and open_own_file (O_NOFOLLOW)",
    ("data/download.py", "open"): "writing a download (from the gate's stream) into atomic_write's temporary file",
    ("data/download.py", "tarfile.open"): "the archive after its md5 matched the published one",
    ("data/shards.py", "tarfile.open"): "a shard in memory, read through the gate and its sha256 checked",
    ("data/imagenet.py", "tarfile.open"): "ImageNet's archives: the devkit in memory, read through the gate and its "
                                          "md5 checked; the image tars streamed from a file the gate opened (regular "
                                          "files only), each member's size bounded before it is read, the md5 "
                                          "checked at the end",
    ("data/shard_convert.py", "open"): "writing a shard to our temporary file",
    ("checkpoint.py", "torch.load"): "load_checkpoint: a file object the gate opened, weights_only=True",
    ("reproduce.py", "subprocess.Popen"): "resnet train, our own command line",
    ("pipeline_bench.py", "open"): "/proc/PID/stat of our own workers",
    ("train/progress.py", "os.open"): "os.devnull",
    ("step_profile.py", "os.open"): "os.devnull, written to while the profiler starts and stops",
}
RAW_CALLS = ("open", "os.open", "read_bytes", "read_text", "torch.load", "urlopen", "urllib.request.urlopen",
             "subprocess.run", "subprocess.Popen", "tarfile.open", "gzip.open", "Image.open")


def _call_name(node: ast.Call) -> str:
    f = node.func
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def test_no_module_reads_outside_bytes_but_through_the_gate():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node)
            short = name.split(".")[-1] if name.endswith(("read_bytes", "read_text")) else name
            if short not in RAW_CALLS:
                continue
            if name == "Image.open" and node.args and isinstance(node.args[0], ast.Call) \
                    and _call_name(node.args[0]) in ("gate.open_regular", "io.BytesIO"):
                continue  # an image through the gate, or bytes already read through it
            if name == "tarfile.open" and any(k.arg == "fileobj" for k in node.keywords):
                short = "tarfile.open"
            if (rel, "*") in RAW_READS_ALLOWED or (rel, short) in RAW_READS_ALLOWED:
                continue
            found.append(f"{rel}:{node.lineno} {name}")
    assert not found, "outside bytes read without the gate: " + ", ".join(found)
