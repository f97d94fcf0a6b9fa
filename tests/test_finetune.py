"""Fine-tuning and the recipe keys through `resnet train`: model.init, train.freeze, EMA, the validation
split, early stopping, resume with every key on, extending a finished run, TensorBoard."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from resnet_cli.models import build_model
from resnet_cli.train import tensorboard
from resnet_cli.train.evaluations import SPEED_FIELDS

pytest.importorskip("PIL")

from test_after_training import make_folder  # noqa: E402
from test_train import SMALL, train  # noqa: E402


@pytest.mark.slow  # a few seconds: the quick loop keeps under 90 s
def test_finetune_a_torchvision_state_dict_with_frozen_stages(cli, tmp_path):
    """The acceptance case: a 1000-class resnet18 saved as a bare torchvision-format state_dict, fine-tuned on a
    3-class image folder with conv1..conv3_x frozen."""
    torch.manual_seed(5)
    start = build_model("resnet18").state_dict()  # 1000 classes, torchvision's names
    torch.save(start, tmp_path / "resnet18-tv.pth")
    make_folder(tmp_path / "images", per_class=16, size=(40, 40))
    result = cli("train", "--preset", "finetune", "--init", tmp_path / "resnet18-tv.pth", "--data-dir",
                 tmp_path / "images", "--freeze", "conv1,conv2_x,conv3_x", "--device", "cpu", "--run-dir",
                 tmp_path / "runs", "--set", "data.image_size=32", "--set", "data.workers=0", "--batch-size", "12",
                 "--epochs", "4", "--set", "train.warmup_length=2")
    assert result.exit_code == 0, result.output
    assert "model.init: loaded 120 of 122 tensors from" in result.stdout
    assert "new head fc (1000 -> 3 classes)" in result.stdout
    frozen = sum(v.numel() for k, v in build_model("resnet18", num_classes=3).named_parameters()
                 if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2"))
    assert f"frozen: conv1, conv2_x, conv3_x ({frozen:,} parameters;" in result.stdout
    run = tmp_path / "runs" / "resnet18-imagefolder"
    after = torch.load(run / "last.pt", weights_only=True)
    for k, v in start.items():
        if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2"):  # weights and BatchNorm statistics
            assert torch.equal(after["model"][k], v), k
    assert not torch.equal(after["model"]["layer3.0.conv1.weight"], start["layer3.0.conv1.weight"])
    assert after["model"]["fc.weight"].shape == (3, 512)
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    assert float(rows[-1]["test_top1"]) >= 0.8  # chance: 1/3
    assert after["config"]["model"]["init"] == str(tmp_path / "resnet18-tv.pth")
    assert cli.json("summary", run)["params"]["frozen"] == frozen  # summary shows the run as it trained


@pytest.mark.slow  # 1.0 s in the quick loop (CONTRIBUTING: a second or more goes to slow)
def test_model_init_refuses_what_does_not_fit(cli, tmp_path):
    torch.save(build_model("resnet34").state_dict(), tmp_path / "r34.pth")
    out = cli("train", *SMALL, "--model", "resnet18", "--init", tmp_path / "r34.pth", "--run-dir", tmp_path / "r")
    assert out.exit_code == 2 and "does not fit resnet18" in out.stderr and "another architecture" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    wide = build_model("resnet20").state_dict()
    wide["layer2.0.conv1.weight"] = torch.zeros(32, 16, 5, 5)
    torch.save(wide, tmp_path / "odd.pth")
    out = cli("train", *SMALL, "--init", tmp_path / "odd.pth", "--run-dir", tmp_path / "r")
    assert out.exit_code == 2 and "layer2.0.conv1.weight is [32, 16, 5, 5], the model's is [32, 16, 3, 3]" in out.stderr
    out = cli("train", *SMALL, "--init", tmp_path / "resnet50-0676ba61.pth", "--run-dir", tmp_path / "r")
    assert out.exit_code == 2
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in out.stderr
    out = cli("train", *SMALL, "--freeze", "conv5_x", "--run-dir", tmp_path / "r")
    assert out.exit_code == 2 and "train.freeze: unknown stage 'conv5_x'" in out.stderr


@pytest.mark.slow  # 2 s: the quick loop keeps under 90 s
def test_init_from_our_own_run_keeps_the_weights_and_may_change_channels(cli, tmp_path):
    first = train(cli, tmp_path, "--epochs", "1", "--name", "a", "--set", "train.ema=0.9")
    result = cli("train", *SMALL, "--init", first["run_dir"], "--epochs", "1", "--set", "data.channels=1",
                 "--run-dir", tmp_path / "runs", "--name", "b", "--set", "train.lr=1e-9")
    assert result.exit_code == 0, result.output
    assert "new stem conv1 (3 -> 1 input channels)" in result.stdout
    ema = torch.load(f"{first['run_dir']}/best.pt", weights_only=True)["ema"]["weights"]
    b = torch.load(tmp_path / "runs" / "b" / "last.pt", weights_only=True)["model"]
    assert torch.allclose(b["layer3.2.conv2.weight"], ema["layer3.2.conv2.weight"], atol=1e-6)  # EMA weights


@pytest.mark.slow  # several short runs with every recipe key
def test_resume_is_bit_identical_with_every_recipe_key_on(cli, tmp_path):
    keys = ["train.ema=0.9", "data.val_split=64", "data.mixup=0.4", "data.cutmix=1.0", "data.random_erasing=0.5",
            "data.randaugment=2,9", "train.accum_steps=2", "train.optimizer=adamw", "train.warmup=linear",
            "train.warmup_length=0.5ep", "train.freeze=[conv1]", "train.patience=5"]
    sets = [a for k in keys for a in ("--set", k)]
    full = train(cli, tmp_path, "--epochs", "3", "--name", "full", *sets)
    part = train(cli, tmp_path, "--epochs", "3", "--name", "part", *sets, "--set", "run.stop_after_epochs=1")
    resumed = cli("train", "--resume", part["run_dir"], "--set", "run.stop_after_epochs=0", "--json")
    assert resumed.exit_code == 0, resumed.output
    a = torch.load(f"{full['run_dir']}/last.pt", weights_only=True)
    b = torch.load(f"{part['run_dir']}/last.pt", weights_only=True)
    assert a["step"] == b["step"] == 18 and a["ema"]["updates"] == b["ema"]["updates"] == 18
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
        assert torch.equal(a["ema"]["weights"][k], b["ema"]["weights"][k]), k
    assert a["metrics"] == [{**r, **{k: a["metrics"][i][k] for k in SPEED_FIELDS}}  # all but the timings
                            for i, r in enumerate(b["metrics"])]
    cfg = a["config"]
    assert cfg["train"]["optimizer"] == "adamw" and cfg["train"]["lr"] == 1e-3 and cfg["train"]["weight_decay"] == 0.05
    assert full["selected_by"] == "ema_val_top1"
    assert full["best"] == max(a["metrics"], key=lambda r: r["ema_val_top1"])
    # eval uses the EMA weights, on the test set by default
    best = torch.load(f"{full['run_dir']}/best.pt", weights_only=True)
    ev = json.loads(cli("eval", full["run_dir"], "--device", "cpu", "--json").stdout)
    assert ev["top1"] == pytest.approx(best["metrics"][-1]["ema_test_top1"])
    raw = json.loads(cli("eval", full["run_dir"], "--device", "cpu", "--weights", "raw", "--json").stdout)
    assert raw["top1"] == pytest.approx(best["metrics"][-1]["test_top1"])
    val = json.loads(cli("eval", full["run_dir"], "--device", "cpu", "--split", "val", "--json").stdout)
    assert val["count"] == 64 and val["top1"] == pytest.approx(best["metrics"][-1]["ema_val_top1"])


def test_patience_stops_early_and_the_run_stays_finished(cli, tmp_path):
    out = train(cli, tmp_path, "--epochs", "6", "--set", "train.patience=2", "--set", "train.lr=1e-9",
                "--set", "train.freeze=[conv1,conv2_x,conv3_x,conv4_x]")
    assert out["stopped_early"] and out["epochs"] == 3 and out["best"]["epoch"] == 1
    again = cli("train", "--resume", out["run_dir"])
    assert again.exit_code == 0 and "stopped early: no better test_top1 for 2 epochs" in again.stdout


@pytest.mark.slow  # a few seconds: the quick loop keeps under 90 s
def test_extending_a_finished_cosine_run_restarts_it_and_says_so(cli, tmp_path):
    out = train(cli, tmp_path, "--epochs", "2", "--name", "c")
    result = cli("train", "--resume", out["run_dir"], "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stdout and "(step 16), lr" in result.stdout
    assert "run length 16 -> 24 steps: cosine schedule had finished" in result.stdout
    assert "warm restart (SGDR), a new cosine from lr 0.05 to 0 over steps 17-24; lr now 0.05" in result.stdout
    ckpt = torch.load(f"{out['run_dir']}/last.pt", weights_only=True)
    assert ckpt["scheduler"]["plan"] == {"total": 16, "warmup_steps": 0, "segments": [[16, 24, 0.05]]}
    part = train(cli, tmp_path, "--epochs", "4", "--name", "d", "--set", "run.stop_after_epochs=1")
    result = cli("train", "--resume", part["run_dir"], "--epochs", "2", "--set", "run.stop_after_epochs=0")
    assert "cosine schedule re-fitted: from the current lr" in result.stdout


def test_tensorboard_on_without_the_package_is_bad_input(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(tensorboard, "available", lambda: False)
    out = cli("train", *SMALL, "--set", "run.tensorboard=on", "--run-dir", tmp_path / "r")
    assert out.exit_code == 2 and 'pip install "resnet-cli[tensorboard]"' in out.stderr
    out = train(cli, tmp_path, "--epochs", "1")  # auto: quietly none
    assert not [p for p in (tmp_path / "runs" / "resnet20-synthetic").iterdir() if p.name.startswith("events")]
