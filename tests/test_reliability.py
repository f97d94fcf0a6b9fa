"""Reliability: hostile files, NaN loss, disk full, concurrent runs (signals and kills: test_preemption.py)."""

from __future__ import annotations

import csv
import errno
from pathlib import Path

import pytest
import torch
from conftest import NanOnSteps

from resnet_cli.checkpoint import load_checkpoint
from resnet_cli.errors import RunFailed
from resnet_cli.train.rundir import create_run_dir


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


TRAINER = {"data.synthetic_train": 128, "data.synthetic_test": 32, "train.batch_size": 32, "train.epochs": 2,
           "train.log_interval": 4}  # 4 steps per epoch


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_last_good_checkpoint(make_trainer, ckpts):
    trainer = make_trainer(**TRAINER)
    trainer.run.step.criterion = NanOnSteps({7})  # epoch 2, step 7 overall (4 steps per epoch)
    with pytest.raises(RunFailed, match=r"loss became nan at epoch 2, step 7"):
        trainer.fit()
    ckpt = ckpts.load(trainer.run_dir / "last.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


@pytest.mark.slow  # 2.4 s on 2026-12-06's machine: the quick loop keeps under 90 s
def test_bounded_skipping_of_bad_steps(make_trainer):
    trainer = make_trainer(**TRAINER, **{"train.skip_nonfinite": 2})
    trainer.run.step.criterion = NanOnSteps({2, 5})
    trainer.fit()
    assert trainer.state.skipped == 2 and trainer.state.epoch == 2
    trainer = make_trainer(**TRAINER, **{"train.skip_nonfinite": 1})
    trainer.run.step.criterion = NanOnSteps({2, 5})
    with pytest.raises(RunFailed, match="epoch 2"):
        trainer.fit()


def test_nan_exits_nonzero_on_the_command_line(cli, tmp_path, smoke_args):
    result = cli("train", *smoke_args("cpu", 256, 64, "train.log_interval=1"), "--lr", "1e12", "--run-dir", tmp_path)
    assert result.exit_code == 1
    assert "loss became nan at epoch 1, step" in result.stderr


def test_disk_full_while_saving_keeps_the_previous_checkpoint(make_trainer, monkeypatch):
    trainer = make_trainer(**{**TRAINER, "train.epochs": 3})
    real_write = Path.write_bytes
    calls = {"n": 0}

    def filling_write(path, data):  # checkpoints are serialized in memory, then written by Python
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 1 wrote last.pt and best.pt; then the disk fills up
            real_write(path, bytes(data)[:100])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", filling_write)
    with pytest.raises(RunFailed, match="no space left on device.*previous last.pt is intact: make room, then resume "
                                        "with: resnet train --resume "):
        trainer.fit()
    monkeypatch.setattr(Path, "write_bytes", real_write)
    assert load_checkpoint(trainer.run_dir / "last.pt")["epoch"] == 1
    assert not list(trainer.run_dir.glob(".*.tmp.*"))  # no temp files left


def test_a_failed_write_leaves_no_view_of_the_serialized_bytes_in_its_traceback(tmp_path, monkeypatch):
    """A full disk's traceback keeps the frames of the write alive until the garbage collector frees them; a
    memoryview of the io.BytesIO among their locals (BytesIO.getbuffer(), as atomic_write_bytes passed before)
    crashed Python 3.12.0 and 3.12.1 at that moment (CPython gh-111211: seen as a segfault of the test suite under
    3.12.1, after the gate table's full-disk row). What the write gets is the bytes themselves."""
    from resnet_cli.files import atomic_write_bytes

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError) as failed:
        atomic_write_bytes(tmp_path / "x.pt", lambda buffer: torch.save({"w": torch.ones(1000)}, buffer))
    views, error = [], failed.value
    while error is not None:
        tb = error.__traceback__
        while tb is not None:
            views += [v for v in tb.tb_frame.f_locals.values() if isinstance(v, memoryview)]
            tb = tb.tb_next
        error = error.__context__
    assert [v for v in views if not isinstance(v.obj, (bytes, bytearray))] == [], [type(v.obj) for v in views]
    assert failed.value.errno == errno.ENOSPC and not list(tmp_path.iterdir())  # and no temporary file left


@pytest.mark.slow
def test_same_name_at_the_same_moment_gets_two_folders(tmp_path, proc, smoke_args):
    procs = [proc.start("train", *smoke_args("cpu", 256, 64, "train.log_interval=1"), "--epochs", 1, "--run-dir", tmp_path, "--name", "twin")
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(d.name for d in tmp_path.iterdir()) == ["twin", "twin-2"]
    for d in tmp_path.iterdir():
        assert len(list(csv.DictReader((d / "metrics.csv").read_text().splitlines()))) == 1


def test_create_run_dir_is_atomic_under_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: create_run_dir(tmp_path, "x"), range(16)))
    assert len({d.name for d in dirs}) == 16


@pytest.mark.slow  # 3 s, 2 of them waiting: the quick loop keeps under 90 s
def test_a_held_lock_is_waited_for_up_to_run_lock_wait(tmp_path, make_trainer):
    """#34 item 9: on NFS a dead node's lock outlives it for about 90 s; a restart waits for it (run.lock_wait,
    120 s under --resume auto) instead of failing every attempt at once. A child holds the lock for 2 s."""
    import subprocess
    import sys
    import time

    from resnet_cli.errors import BadInput
    from resnet_cli.train.rundir import RunLock

    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(2)",
                               str(folder / ".lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(BadInput, match="is in use: "):
        RunLock(folder)  # wait 0: refused at once
    started = time.monotonic()
    lock = RunLock(folder, wait=10)
    assert 0.5 < time.monotonic() - started < 8 and lock.file is not None  # taken once the holder let go
    lock.release()
    holder.wait()
    holder.stdout.close()
    trainer = make_trainer(**{"run.resume": "auto"})
    assert trainer.cfg.run.lock_wait == -1 and trainer.lock is not None


def test_a_file_system_without_locks_is_said_in_one_line(tmp_path, monkeypatch):
    import errno
    import fcntl

    from resnet_cli.train.rundir import RunLock

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    said = []
    lock = RunLock(tmp_path, on_unlocked=said.append)
    assert lock.file is None
    assert said == [f"note: run folder {tmp_path} cannot be locked on this file system (No locks available): "
                    "nothing stops a second process from writing to it"]
