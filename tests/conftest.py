"""Shared fixtures: the CLI in-process and as a subprocess, tiny training runs, checkpoint readers, real data.

Markers: `slow` (subprocesses, torchrun, real compilation, long runs; `pytest -m "not slow"` is the quick
loop), `cuda` (needs a CUDA device; skipped elsewhere) and `default_device` (trains or evaluates on the default
device: CUDA on a GPU machine, where `benchmarks/gpu_check.sh` runs them with the `cuda` ones).
"""

from __future__ import annotations

import csv
import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resnet_cli.cli import app

ROOT = Path(__file__).resolve().parent.parent
FASHION_DIRS = [ROOT.parent / "shared" / "data" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist")]
# pytest-xdist's workers (gpu_check.sh runs them) start with COLUMNS=80 and LINES=24 in their environment, and a
# developer may export COLUMNS: either made the tests of output shape depend on how pytest was started (five failed
# under -n 2). A test sets the width it tests (env={"COLUMNS": ...}); every other command runs as on a pipe.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)
# Subprocesses run with one CPU thread: every side of a bit-exact comparison must use the same number of
# threads, since the kernels' summation order depends on it.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _find_fashion() -> Path | None:
    for d in FASHION_DIRS:
        if (d / "train-images-idx3-ubyte.gz").exists() or (d / "train-images-idx3-ubyte").exists():
            return d
    return None


def last_json(stdout: str):
    """A command's JSON output: the document, or under `train --json` (JSON Lines) its last line, the result."""
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        return json.loads(stdout.strip().splitlines()[-1])


class Cli:
    """Run `resnet ARGS...` in-process through Typer's CliRunner."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict | None = None):
        return self.runner.invoke(app, [str(a) for a in args], env=env)

    def json(self, *args: str):
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return last_json(result.stdout)


class Proc:
    """`resnet ARGS...` as a separate process (signals, kills, torchrun), with ENV. Processes it started are
    stopped, and their pipes closed, at the end of the session (`close`)."""

    env = ENV

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    @staticmethod
    def cmd(*args) -> list[str]:
        return [sys.executable, "-m", "resnet_cli", *map(str, args)]

    def run(self, *args, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*args), env=ENV, capture_output=True, text=True, timeout=timeout)

    def start(self, *args, stdout=subprocess.PIPE) -> subprocess.Popen:
        started = subprocess.Popen(self.cmd(*args), env=ENV, stdout=stdout, stderr=subprocess.PIPE, text=True)
        self.started.append(started)
        return started

    def close(self) -> None:
        for p in self.started:
            if p.poll() is None:
                p.kill()
                p.wait()
            for pipe in (p.stdout, p.stderr):
                if pipe is not None:
                    pipe.close()


class Checkpoints:
    """Read what runs wrote: whole checkpoints, their weights, metrics rows."""

    @staticmethod
    def load(path) -> dict:
        import torch

        return torch.load(path, weights_only=True)

    def weights(self, path) -> dict:
        return self.load(path)["model"]

    def assert_same_weights(self, a, b) -> None:
        import torch

        wa, wb = self.weights(a), self.weights(b)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), k

    @staticmethod
    def rows(run_dir) -> list[dict]:
        """metrics.csv as read by csv (values are strings)."""
        with open(Path(run_dir) / "metrics.csv", newline="") as f:
            return list(csv.DictReader(f))


class NanOnSteps:
    """A loss (cross-entropy) that turns NaN on chosen (1-based) calls."""

    def __init__(self, bad: set[int]) -> None:
        self.bad, self.calls = bad, 0

    def __call__(self, logits, y):
        import torch

        self.calls += 1
        loss = torch.nn.functional.cross_entropy(logits, y)
        return loss * float("nan") if self.calls in self.bad else loss


def smoke(device: str = "cpu", train: int = 256, test: int = 64, *sets: str) -> list[str]:
    """The smoke preset on `train`/`test` synthetic images (8 steps per epoch at 256), plus `--set` items."""
    args = ["--preset", "smoke", "--device", device, "--set", f"data.synthetic_train={train}",
            "--set", f"data.synthetic_test={test}"]
    for item in sets:
        args += ["--set", item]
    return args


@pytest.fixture
def cli() -> Cli:
    return Cli()


@pytest.fixture(scope="session")
def proc():
    started = Proc()
    yield started
    started.close()


@pytest.fixture(scope="session")
def ckpts() -> Checkpoints:
    return Checkpoints()


@pytest.fixture(scope="session")
def smoke_args():
    """smoke_args(device="cpu", train=256, test=64, *sets): a tiny smoke-preset run's arguments."""
    return smoke


@pytest.fixture
def make_trainer(tmp_path):
    """make_trainer(progress=None, open_dir=True, **flags): a Trainer on tiny synthetic data (smoke preset, CPU,
    64 training images in batches of 16, one epoch, runs under tmp_path), `flags` overriding. Each trainer made
    is closed at teardown (its run folder's lock let go, as `resnet train` does at the end)."""
    made = []

    def make(progress=None, open_dir: bool = True, **flags):
        from resnet_cli import config as C
        from resnet_cli.train.loop import Trainer

        flags = {"data.synthetic_train": 64, "data.synthetic_test": 16, "train.batch_size": 16, "train.epochs": 1,
                 "run.run_dir": str(tmp_path / "runs"), "run.device": "cpu", **flags}
        trainer = Trainer.for_config(C.resolve("smoke", flags=flags), progress)
        made.append(trainer)
        if open_dir:
            trainer.open_run_dir()
        return trainer

    yield make
    for trainer in made:
        trainer.close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server over a folder; counts requests. Stops by itself at teardown."""
    root = tmp_path / "www"
    root.mkdir()
    hits = []

    class Handler(QuietHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def fashion_dir() -> Path:
    d = _find_fashion()
    if d is None:
        pytest.skip("real Fashion-MNIST not found in ../shared/data or /usr/share/datasets")
    return d


@pytest.fixture
def dry_run_env(tmp_path) -> dict:
    """The environment in which a GPU script dry-runs on the CPU (DRY=1): $PYTHON is this interpreter, and the
    python3 on PATH one that fails, so that a command the script runs with a bare python3 (not $PYTHON, as an
    unactivated venv would) fails the test."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").write_text("#!/bin/sh\necho 'the python3 on PATH ran' >&2\nexit 3\n")
    (shim / "python3").chmod(0o755)
    return {**os.environ, "DRY": "1", "PYTHON": sys.executable, "PATH": f"{shim}:{os.environ['PATH']}"}


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache_home(tmp_path_factory):
    # The user's cache folder (resnet-cli's record of exported files, torch hub's, matplotlib's) is one of the
    # session's own: a file one test exports, another may load; none is written to the user's.
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = saved


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch, _isolated_cache_home):
    # Never touch the user's cache; never let a test reach the network by accident.
    monkeypatch.setenv("RESNET_CLI_DATA", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("RESNET_CLI_DEBUG", raising=False)
    os.environ.setdefault("COLUMNS", "200")


def pytest_addoption(parser):
    parser.addoption("--shard", default="", metavar="I/N",
                     help="run the I-th of N shards of the selected tests (0 <= I < N), for N processes side by side")


def shard_key(item) -> str:
    """Tests sharing a module- or session-scoped fixture stay in one shard (the fixture is built once)."""
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    shared = sorted(name for name, fds in defs.items() if fds and fds[-1].scope in ("module", "package")
                    and name not in ("proc", "ckpts", "smoke_args"))
    return f"{item.module.__name__}::{shared[0]}" if shared else item.nodeid


GROUPS_VAR = "RESNET_CLI_TEST_GROUPS"  # a folder where pytest-xdist's workers leave their tests' groups


def pytest_configure(config):
    """Under pytest-xdist's `--dist loadgroup` (gpu_check.sh), the controller gives its workers a folder for the
    groups they collect (pytest_collection_finish) and schedules by them (pytest_xdist_make_scheduler)."""
    if getattr(config.option, "dist", "no") == "loadgroup" and not hasattr(config, "workerinput"):
        import tempfile

        os.environ[GROUPS_VAR] = tempfile.mkdtemp(prefix="resnet-cli-test-groups-")


@pytest.hookimpl(tryfirst=True)  # written before xdist's own hook tells the controller that collection is done
def pytest_collection_finish(session):
    folder = os.environ.get(GROUPS_VAR)
    if folder and hasattr(session.config, "workerinput"):
        groups = {item.nodeid: shard_key(item) for item in session.items}
        worker = session.config.workerinput["workerid"]
        (Path(folder) / f"{worker}.json").write_text(json.dumps(groups))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` as this suite means it: the tests of one shared module-scoped fixture (shard_key) go to
    one worker, so that it is built once, and every other test to whichever worker is free. Built on xdist's
    public scheduler hook and the groups the workers wrote, not on xdist_group marks: pytest 9.2 keeps node ids
    where pytest-xdist 3.8 can no longer add a mark's group to them, and loadgroup then groups nothing."""
    folder = os.environ.get(GROUPS_VAR)
    if config.getoption("dist") != "loadgroup" or not folder:
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # read once, when scheduling starts: every worker has collected by then
                self.groups = {}
                for path in Path(folder).glob("*.json"):
                    self.groups.update(json.loads(path.read_text()))
            return self.groups.get(nodeid, nodeid)

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """`--shard I/N` keeps one of N shards (groups of tests dealt round-robin, in collection order); tests marked
    `cuda` are skipped without a CUDA device."""
    import torch

    if config.getoption("--shard"):
        try:
            index, count = map(int, config.getoption("--shard").split("/"))
            assert 0 <= index < count
        except (ValueError, AssertionError):
            raise pytest.UsageError(f"--shard takes I/N with 0 <= I < N, got {config.getoption('--shard')!r}")
        groups: dict[str, int] = {}
        for item in items:
            groups.setdefault(shard_key(item), len(groups))
        kept = [item for item in items if groups[shard_key(item)] % count == index]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
