"""Preemption: SIGTERM and SIGUSR1 save at the step they land on and exit 128+signal; step checkpoints bound what
a SIGKILL loses; every resume ends with exactly the weights of a run that was never stopped (CPU, fixed threads)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from resnet_cli import config as C
from resnet_cli.errors import BadInput

# 8 steps per epoch of 8x8 images (fast), a progress line per step, a step checkpoint every 3 steps, and a
# test set large enough that evaluation takes a moment (a signal sent when an epoch's last step is printed
# lands in it).
SETS = ("data.image_size=8", "train.log_interval=1", "train.checkpoint_every=3")


def strike_at_line(started: subprocess.Popen, marker: str, sig: int) -> tuple[int, str, int]:
    """Send `sig` to a started run when a progress line contains `marker`; (exit code, stderr, global step struck)."""
    proc = started
    for line in proc.stdout:
        if marker in line:
            proc.send_signal(sig)
            break
    else:
        raise AssertionError(f"never saw {marker!r}: {proc.communicate()[1]}")
    _, err = proc.communicate(timeout=120)
    epoch, step = marker.split(" step ")
    struck = (int(epoch.split()[1].split("/")[0]) - 1) * 8 + int(step.split("/")[0])
    return proc.returncode, err, struck


def strike_in_write(proc: subprocess.Popen, run_dir: Path, sig: int) -> tuple[int, str]:
    """Send `sig` to a started run while last.pt is being written (its temporary file exists)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(run_dir.glob(".last.tmp.*")):
            proc.send_signal(sig)
            break
        time.sleep(0.0005)
    else:
        raise AssertionError("never caught a checkpoint write")
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.slow
def test_signals_and_kills_anywhere_then_resume_exactly(tmp_path, proc, ckpts, smoke_args):
    """One run struck five times (SIGTERM and SIGKILL; mid-epoch, in evaluation, in a checkpoint write),
    resumed after each, against an uninterrupted run with the same seed."""
    # 8 steps per epoch of 8x8 images (fast), a progress line per step, a step checkpoint every 3 steps, and a
    # test set large enough that evaluation takes a moment (a signal sent when an epoch's last step is printed
    # lands in it).
    args = [*smoke_args("cpu", 256, 1024, *SETS), "--epochs", 3]
    runs = tmp_path / "runs"
    ref = proc.start("train", *args, "--run-dir", runs, "--name", "ref")
    seen = []  # the step last.pt holds at each progress line: step checkpoints roll inside the epoch
    for line in ref.stdout:
        if " step " in line and (runs / "ref" / "last.pt").exists():
            seen.append(ckpts.load(runs / "ref" / "last.pt")["step"])
    assert ref.wait(timeout=120) == 0, ref.stderr.read()
    assert {3, 6} <= set(seen)
    # bounded: one rolling last.pt and best.pt
    assert {p.name for p in (runs / "ref").iterdir() if not p.name.startswith("events.out.tfevents.")} == {
        "config.yaml", "metrics.csv", "last.pt", "best.pt"}
    victim = runs / "victim"
    resume = ("train", "--resume", victim)

    # SIGTERM mid-epoch: the current step finishes, last.pt is written at it, exit 143 with the resume line.
    code, err, struck = strike_at_line(proc.start("train", *args, "--run-dir", runs, "--name", "victim"),
                                       "epoch 1/3 step 2/8", signal.SIGTERM)
    assert code == 143, err
    assert f"(SIGTERM); resume with: resnet train --resume {victim}" in err
    ckpt = ckpts.load(victim / "last.pt")
    assert ckpt["epoch"] == 0 and ckpt["step"] in (struck, struck + 1) and ckpt["partial"]["batch"] == ckpt["step"]

    # SIGKILL after a step checkpoint: at most checkpoint_every (3) steps are lost.
    code, _, struck = strike_at_line(proc.start(*resume), "epoch 1/3 step 7/8", signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert struck - 3 <= ckpts.load(victim / "last.pt")["step"] <= struck

    # SIGTERM during evaluation: the epoch's checkpoint is written after it, then the run stops.
    code, err, _ = strike_at_line(proc.start(*resume), "epoch 1/3 step 8/8", signal.SIGTERM)
    assert code == 143 and "at the end of epoch 1 (SIGTERM)" in err, err
    assert ckpts.load(victim / "last.pt")["epoch"] == 1 and not ckpts.load(victim / "last.pt")["partial"]


    # SIGTERM while last.pt is being written: the write completes, then the run stops.
    code, err = strike_in_write(proc.start(*resume, stdout=subprocess.DEVNULL), victim, signal.SIGTERM)
    assert code == 143, err
    step = ckpts.load(victim / "last.pt")["step"]

    # SIGKILL while last.pt is being written: the previous file stays whole.
    code, _ = strike_in_write(proc.start(*resume, stdout=subprocess.DEVNULL), victim, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert ckpts.load(victim / "last.pt")["step"] >= step  # loads whole (a stale temporary file may be left beside it)
    done = proc.run("train", "--resume", victim)
    assert done.returncode == 0, done.stderr
    assert not list(victim.glob(".*tmp*"))  # the resume cleared what the kill left
    ckpts.assert_same_weights(runs / "ref" / "last.pt", victim / "last.pt")
    ref_ckpt, got = ckpts.load(runs / "ref" / "last.pt"), ckpts.load(victim / "last.pt")
    assert got["step"] == ref_ckpt["step"] == 24 and got["epoch"] == 3
    assert [r["epoch"] for r in got["metrics"]] == [1, 2, 3]
    for a, b in zip(ref_ckpt["metrics"], got["metrics"]):
        assert a["test_top1"] == b["test_top1"] and a["test_loss"] == b["test_loss"]


def test_checkpoint_every_accepts_steps_and_times():
    assert C.parse_interval("500") == (500, 0.0)
    assert C.parse_interval("30m") == (0, 1800.0)
    assert C.parse_interval("90s") == (0, 90.0)
    assert C.parse_interval("2h") == (0, 7200.0)
    assert C.parse_interval("0") == (0, 0.0)
    assert C.resolve(sets=["train.checkpoint_every=500"]).train.checkpoint_every == "500"  # YAML int -> str
    for bad in ("soon", "5d", "-3", "1.5"):
        with pytest.raises(BadInput, match="train.checkpoint_every: expected"):
            C.resolve(sets=[f"train.checkpoint_every={bad}"])


class SignalOnStep(torch.nn.Module):
    """A loss that sends this process `sig` on its `at`-th call, as a scheduler would mid-step."""

    def __init__(self, sig: int, at: int) -> None:
        super().__init__()
        self.sig, self.at, self.calls = sig, at, 0

    def forward(self, logits, y):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.sig)
        return torch.nn.functional.cross_entropy(logits, y)


def test_the_resume_command_is_quoted_for_a_shell(make_trainer, tmp_path):
    import shlex

    trainer = make_trainer(**{"run.run_dir": str(tmp_path / "my runs"), "run.name": "r$HOME 1"})
    typed = trainer.resume_command()
    assert typed == f"resnet train --resume '{tmp_path / 'my runs' / 'r$HOME 1'}'"
    assert shlex.split(typed) == ["resnet", "train", "--resume", str(tmp_path / "my runs" / "r$HOME 1")]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGUSR1, 138), (signal.SIGTERM, 143)])
def test_each_stop_signal_saves_at_its_step_and_exits_128_plus_it(make_trainer, ckpts, sig, code):
    from resnet_cli.errors import Interrupted

    trainer = make_trainer(**{"data.synthetic_train": 128, "data.synthetic_test": 32, "data.image_size": 8,
                              "train.epochs": 2, "train.log_interval": 1})
    trainer.run.step.criterion = SignalOnStep(sig, at=11)  # epoch 2, its 3rd step (8 per epoch)
    previous = signal.getsignal(sig)
    with pytest.raises(Interrupted) as stop:
        trainer.fit()
    assert stop.value.exit_code == code
    name = signal.Signals(sig).name
    assert str(stop.value).endswith(f"at epoch 2, step 11{'' if name == 'SIGINT' else f' ({name})'}; resume with: "
                                    f"resnet train --resume {trainer.run_dir}")
    ckpt = ckpts.load(trainer.run_dir / "last.pt")
    assert ckpt["step"] == 11 and ckpt["epoch"] == 1 and ckpt["partial"]["batch"] == 3
    assert signal.getsignal(sig) is previous  # the run's handlers are gone when it ends
