"""Training runs through the CLI: loss goes down, run folders, resume bit-identical, eval."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from resnet_cli.train import tensorboard
from resnet_cli.train.evaluations import METRIC_FIELDS
from resnet_cli.train.schedule import LRSchedule
from resnet_cli.config import TrainConfig

# CPU: resume is bit-exact for CPU kernels (GPU runs are checked in test_gpu.py)
from conftest import last_json, smoke

SMALL = smoke()  # 256 training images, 64 test images, CPU


def train(cli, tmp_path, *args):
    result = cli("train", *SMALL, "--run-dir", tmp_path / "runs", *args, "--json")
    assert result.exit_code == 0, result.output
    return last_json(result.stdout)


@pytest.mark.slow  # 4 s: the quick loop keeps under 90 s
def test_smoke_preset_learns_and_writes_a_run_folder(cli, tmp_path):
    result = cli("train", "--preset", "smoke", "--device", "cpu", "--run-dir", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    out = last_json(result.stdout)
    run = tmp_path / "runs" / "resnet20-synthetic"
    assert out["run_dir"] == str(run)
    assert out["final"]["test_top1"] >= 0.5, out["final"]  # chance: 10% (the run takes ~15 s on 2 idle cores)
    events = [p.name for p in run.iterdir() if p.name.startswith("events.out.tfevents.")]
    assert {p.name for p in run.iterdir()} - set(events) == {"config.yaml", "metrics.csv", "last.pt", "best.pt"}
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    assert list(rows[0]) == METRIC_FIELDS
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(0 < float(r["eval_seconds"]) < float(out["wall_seconds"]) for r in rows)  # measured, apart from training
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0] * 0.9, losses
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["config"]["model"] == {"name": "resnet20", "num_classes": 10, "in_channels": 3,
                                       "zero_init_residual": False, "shortcut": "", "drop_path": 0.0, "init": ""}
    assert ckpt["epoch"] == 3 and ckpt["step"] == 48 and ckpt["finished"]
    assert {"optimizer", "scheduler", "scaler", "rng", "metrics"} <= set(ckpt)
    if tensorboard.available():  # the same scalars as metrics.csv, at the same steps
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run))
        acc.Reload()
        assert set(acc.Tags()["scalars"]) == set(METRIC_FIELDS) - {"epoch", "step"}
        got = [(e.step, round(e.value, 4)) for e in acc.Scalars("test_top1")]
        assert got == [(int(r["step"]), round(float(r["test_top1"]), 4)) for r in rows]


def test_run_folders_are_never_overwritten(cli, tmp_path):
    a = train(cli, tmp_path, "--steps", "1", "--name", "same")
    b = train(cli, tmp_path, "--steps", "1", "--name", "same")
    assert a["run_dir"].endswith("same") and b["run_dir"].endswith("same-2")


@pytest.mark.slow  # 4 s: the quick loop keeps under 90 s
def test_resume_is_bit_identical(cli, tmp_path):
    full = train(cli, tmp_path, "--epochs", "3", "--name", "full")
    part = train(cli, tmp_path, "--epochs", "3", "--name", "part", "--set", "run.stop_after_epochs=1")
    assert part["epochs"] == 1
    resumed = cli("train", "--resume", part["run_dir"], "--set", "run.stop_after_epochs=0", "--json")
    assert resumed.exit_code == 0, resumed.output
    a = torch.load(f"{full['run_dir']}/last.pt", weights_only=True)
    b = torch.load(f"{part['run_dir']}/last.pt", weights_only=True)
    assert a["step"] == b["step"] == 24
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows = list(csv.DictReader(Path(part["run_dir"], "metrics.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]


def test_resume_of_a_finished_run_says_so(cli, tmp_path):
    out = train(cli, tmp_path, "--epochs", "1")
    result = cli("train", "--resume", out["run_dir"])
    assert result.exit_code == 0 and "is finished (1 epoch," in result.stdout
    result = cli("train", "--resume", out["run_dir"], "--lr", "0.5")
    assert result.exit_code == 2 and "cannot change train.lr when resuming" in result.stderr


@pytest.mark.slow  # 1.3 s: the quick loop keeps under 90 s
def test_resume_may_change_the_speed_switches(cli, tmp_path):
    part = train(cli, tmp_path, "--epochs", "2", "--set", "train.channels_last=off",
                 "--set", "run.stop_after_epochs=1")
    resumed = cli("train", "--resume", part["run_dir"], "--set", "train.channels_last=on",
                  "--set", "run.stop_after_epochs=0", "--json")
    assert resumed.exit_code == 0, resumed.output
    out = last_json(resumed.stdout)
    assert out["epochs"] == 2 and out["channels_last"] is True


@pytest.mark.slow  # 1.6 s: the quick loop keeps under 90 s
@pytest.mark.default_device
def test_eval_on_the_checkpoint_training_wrote(cli, tmp_path):
    out = train(cli, tmp_path, "--epochs", "2")
    result = cli("eval", out["run_dir"], "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    ev = last_json(result.stdout)
    assert ev["count"] == 64 and ev["top1"] == pytest.approx(out["best"]["test_top1"])
    assert ev["loss"] == pytest.approx(out["best"]["test_loss"], rel=1e-5)
    assert len(ev["per_class"]) == 10 and sum(c["count"] for c in ev["per_class"]) == 64
    assert ev["img_per_s"] > 0 and 0 <= ev["top1"] <= ev["top5"] <= 1
    table = cli("eval", f"{out['run_dir']}/last.pt", "--split", "train")
    assert table.exit_code == 0 and "per-class accuracy" in table.stdout and "class9" in table.stdout


@pytest.mark.slow  # 2 s: the quick loop keeps under 90 s
def test_eval_accepts_a_bare_state_dict_with_model(cli, tmp_path):
    result = cli("train", "--preset", "smoke", "--device", "cpu", "--epochs", "1", "--run-dir", tmp_path / "runs", "--json")
    out = last_json(result.stdout)
    sd = torch.load(f"{out['run_dir']}/last.pt", weights_only=True)["model"]
    torch.save(sd, tmp_path / "bare.pt")
    result = cli("eval", tmp_path / "bare.pt", "--dataset", "synthetic", "--json")
    assert result.exit_code == 2 and "--model" in result.stderr
    ev = json.loads(cli("eval", tmp_path / "bare.pt", "--model", "resnet20", "--dataset", "synthetic", "--device", "cpu",
                        "--json").stdout)
    assert ev["top1"] == pytest.approx(out["final"]["test_top1"])
    wrong = cli("eval", tmp_path / "bare.pt", "--model", "resnet32", "--dataset", "synthetic")
    assert wrong.exit_code == 2 and "does not fit resnet32" in wrong.stderr


def test_plain_progress_lines_when_not_a_terminal(cli, tmp_path):
    result = cli("train", *SMALL, "--run-dir", tmp_path / "runs", "--epochs", "1")
    assert result.exit_code == 0
    assert "epoch 1/1 step 8/8" in result.stdout and "run folder:" in result.stdout
    assert "\x1b[" not in result.stdout


def test_lr_schedules():
    t = TrainConfig(lr=0.1, milestones=[32000, 48000], milestone_unit="steps", warmup="paper")
    paper = LRSchedule(t, 64000, 390, depth=110, family="cifar")
    assert [paper(s) for s in (0, 399, 400, 31999, 32000, 48000)] == pytest.approx(
        [0.01, 0.01, 0.1, 0.1, 0.01, 0.001])
    assert LRSchedule(t, 64000, 390, depth=20, family="cifar")(0) == pytest.approx(0.1)
    cos = LRSchedule(TrainConfig(lr=0.2, schedule="cosine", warmup="linear", warmup_length="10"), 110, 10, 20, "cifar")
    assert cos(0) == pytest.approx(0.02) and cos(10) == pytest.approx(0.2) and cos(110) == pytest.approx(0.0)
    epochs = LRSchedule(TrainConfig(milestones=[2], milestone_unit="epochs"), 100, 10, 20, "cifar")
    assert epochs(19) == pytest.approx(0.1) and epochs(20) == pytest.approx(0.01)


@pytest.mark.slow
def test_fashion_mnist_preset_runs_on_real_data(cli, tmp_path, fashion_dir):
    out = train(cli, tmp_path, "--preset", "fashion-mnist", "--data-dir", fashion_dir, "--epochs", "1",
                "--set", "data.train_limit=4096", "--set", "data.test_limit=500", "--set", "train.warmup_steps=4")
    assert out["dataset"] == "fashion-mnist" and out["steps"] == 32
    assert out["final"]["test_top1"] > 0.25  # well above chance (0.10) after 32 steps


@pytest.mark.slow  # 2 s: the quick loop keeps under 90 s
def test_time_to_target_accuracy_and_stopping_there(cli, tmp_path):
    out = train(cli, tmp_path, "--epochs", "3", "--name", "t", "--set", "train.target_top1=0.01",
                "--set", "train.stop_at_target=true")
    assert out["epochs"] == 1 and out["target"]["epoch"] == 1  # reached at the first evaluation, and stopped
    assert 0 < out["target"]["seconds"] <= out["wall_seconds"]
    again = cli("train", "--resume", out["run_dir"])
    assert again.exit_code == 0 and "is finished" in again.stdout  # a run stopped at its target is done
    table = cli("train", *SMALL, "--run-dir", tmp_path / "runs", "--epochs", "1", "--set", "train.target_top1=1.0")
    assert table.exit_code == 0 and "time to 100.00% test_top1: not reached (best" in table.stdout
    bad = cli("train", *SMALL, "--set", "train.target_top1=94")
    assert bad.exit_code == 2 and "train.target_top1 is a fraction" in bad.stderr
