"""Shared fixtures: a CliRunner wrapper and the real Fashion-MNIST location."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resnet_cli.cli import app

ROOT = Path(__file__).resolve().parent.parent
FASHION_DIRS = [ROOT.parent / "shared" / "data" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist")]


def _find_fashion() -> Path | None:
    for d in FASHION_DIRS:
        if (d / "train-images-idx3-ubyte.gz").exists() or (d / "train-images-idx3-ubyte").exists():
            return d
    return None


class Cli:
    """Run `resnet ARGS...` in-process through Typer's CliRunner."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict | None = None):
        return self.runner.invoke(app, [str(a) for a in args], env=env)

    def json(self, *args: str):
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def cli() -> Cli:
    return Cli()


@pytest.fixture
def fashion_dir() -> Path:
    d = _find_fashion()
    if d is None:
        pytest.skip("real Fashion-MNIST not found in ../shared/data or /usr/share/datasets")
    return d


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Never touch the user's cache; never let a test reach the network by accident.
    monkeypatch.setenv("RESNET_CLI_DATA", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("RESNET_CLI_DEBUG", raising=False)
    os.environ.setdefault("COLUMNS", "200")
