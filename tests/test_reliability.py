"""Reliability: hostile files, NaN loss, disk full, concurrent runs (signals and kills: test_preemption.py)."""

from __future__ import annotations

import csv
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet_cli import config as C
from resnet_cli.checkpoint import load_checkpoint
from resnet_cli.errors import RunFailed
from resnet_cli.train.loop import Trainer
from resnet_cli.train.progress import Progress
from resnet_cli.train.rundir import create_run_dir

# 8 steps per epoch on 256 synthetic images: long enough to interrupt, short enough for CI.
# CPU: the bit-exact comparisons below hold for CPU kernels with a fixed thread count
SMOKE = ["--preset", "smoke", "--device", "cpu", "--set", "data.synthetic_train=256", "--set", "data.synthetic_test=64",
         "--set", "train.log_interval=1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def resnet(*args) -> list[str]:
    return [sys.executable, "-m", "resnet_cli", *map(str, args)]


def run(*args) -> subprocess.CompletedProcess:
    """`resnet ARGS` in a subprocess with ENV: every side of a bit-exact comparison must use the same
    number of CPU threads, since the kernels' summation order depends on it."""
    return subprocess.run(resnet(*args), env=ENV, capture_output=True, text=True, timeout=300)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_pickle_is_refused_and_never_runs(cli, tmp_path):
    marker = tmp_path / "marker"
    bad = tmp_path / "evil.pt"
    torch.save({"model": Evil(marker), "config": {}}, bad)
    assert not marker.exists()
    for args in (["eval", bad, "--model", "resnet20"], ["train", "--resume", bad]):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert "refusing to load" in result.stderr and "Traceback" not in result.output
        assert not marker.exists()


def _trainer(tmp_path, **sets) -> Trainer:
    flags = {"data.synthetic_train": 128, "data.synthetic_test": 32, "train.batch_size": 32, "train.epochs": 2,
             "run.run_dir": str(tmp_path / "runs"), "train.log_interval": 4, "run.device": "cpu", **sets}
    trainer = Trainer(C.resolve("smoke", flags=flags), Progress(enabled=False))
    trainer.open_run_dir()
    return trainer


class NanOnSteps(torch.nn.Module):
    """A loss that turns NaN on chosen (1-based) calls."""

    def __init__(self, bad: set[int]) -> None:
        super().__init__()
        self.bad, self.calls = bad, 0

    def forward(self, logits, y):
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(logits, y)
        return loss * float("nan") if self.calls in self.bad else loss


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_last_good_checkpoint(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.train_step.criterion = NanOnSteps({7})  # epoch 2, step 7 overall (4 steps per epoch)
    with pytest.raises(RunFailed, match=r"loss became nan at epoch 2, step 7"):
        trainer.run()
    ckpt = torch.load(trainer.run_dir / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_bounded_skipping_of_bad_steps(tmp_path):
    trainer = _trainer(tmp_path, **{"train.skip_nonfinite": 2})
    trainer.train_step.criterion = NanOnSteps({2, 5})
    trainer.run()
    assert trainer.skipped == 2 and trainer.epoch == 2
    trainer = _trainer(tmp_path, **{"train.skip_nonfinite": 1})
    trainer.train_step.criterion = NanOnSteps({2, 5})
    with pytest.raises(RunFailed, match="epoch 2"):
        trainer.run()


def test_nan_exits_nonzero_on_the_command_line(cli, tmp_path):
    result = cli("train", *SMOKE, "--lr", "1e12", "--run-dir", tmp_path)
    assert result.exit_code == 1
    assert "loss became nan at epoch 1, step" in result.stderr


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, **{"train.epochs": 3})
    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 1 wrote last.pt and best.pt; then the disk fills up
            Path(f).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(RunFailed, match="no space left on device.*previous last.pt is intact"):
        trainer.run()
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(trainer.run_dir / "last.pt")["epoch"] == 1
    assert not list(trainer.run_dir.glob(".*"))  # no temp files left


def test_same_name_at_the_same_moment_gets_two_folders(tmp_path):
    cmd = resnet("train", *SMOKE, "--epochs", 1, "--run-dir", tmp_path, "--name", "twin")
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(d.name for d in tmp_path.iterdir()) == ["twin", "twin-2"]
    for d in tmp_path.iterdir():
        assert len(list(csv.DictReader(open(d / "metrics.csv")))) == 1


def test_create_run_dir_is_atomic_under_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: create_run_dir(tmp_path, "x"), range(16)))
    assert len({d.name for d in dirs}) == 16
