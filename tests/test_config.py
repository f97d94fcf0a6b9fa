"""Config: precedence of the layers whatever the argument order, and errors with suggestions."""

from __future__ import annotations

import pytest
import yaml

from resnet_cli import config as C
from resnet_cli.errors import BadInput


def printed(cli, *args):
    result = cli("train", *args, "--print-config")
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.stdout)


def test_defaults_are_typed_dataclasses():
    cfg = C.Config()
    assert cfg.train.lr == 0.1 and cfg.train.momentum == 0.9 and cfg.train.weight_decay == 1e-4
    assert set(cfg.to_dict()) == {"model", "data", "train", "run"}


def test_cifar_preset_is_the_paper_recipe(cli):
    cfg = printed(cli, "--preset", "cifar")
    t = cfg["train"]
    assert (t["batch_size"], t["lr"], t["momentum"], t["weight_decay"]) == (128, 0.1, 0.9, 1e-4)
    assert (t["milestones"], t["milestone_unit"], t["steps"], t["gamma"]) == ([32000, 48000], "steps", 64000, 0.1)
    assert cfg["data"]["crop_padding"] == 4 and cfg["data"]["flip"] and cfg["model"]["name"] == "resnet20"
    assert printed(cli, "--preset", "cifar", "--depth", "110")["model"]["name"] == "resnet110"
    assert cfg["data"]["val_split"] == 5000  # the paper's 45k/5k split selects; the test set is only reported


def test_adamw_brings_its_own_defaults_unless_the_same_layer_or_above_sets_them(cli):
    t = printed(cli, "--preset", "fashion-mnist", "--set", "train.optimizer=adamw")["train"]
    assert (t["lr"], t["weight_decay"], t["no_wd_bn_bias"]) == (1e-3, 0.05, True)  # not the preset's SGD 0.1
    t = printed(cli, "--preset", "fashion-mnist", "--lr", "3e-4", "--set", "train.optimizer=adamw")["train"]
    assert (t["lr"], t["weight_decay"]) == (3e-4, 0.05)
    assert printed(cli, "--preset", "fashion-mnist")["train"]["optimizer"] == "sgd"


def test_recipe_keys_parse_and_refuse_bad_values(cli):
    t = printed(cli, "--preset", "smoke", "--set", "train.warmup_steps=40")["train"]  # the old name still reads
    assert t["warmup_length"] == "40"
    assert printed(cli, "--preset", "fashion-mnist")["train"]["warmup_length"] == "0.5ep"
    bad = {"train.warmup_length=3weeks": "train.warmup_length: expected steps (400), epochs (2ep, 0.5ep) or a "
                                         "fraction of the run (5%)",
           "data.randaugment=2": "data.randaugment: expected N,M",
           "data.randaugment=2,40": "magnitude 0-30",
           "train.ema=1.5": "train.ema is a decay in [0, 1)",
           "train.accum_steps=0": "train.accum_steps must be at least 1",
           "data.random_erasing=2": "data.random_erasing is a probability",
           "data.mixup=-1": "data.mixup must not be negative",
           "train.freeze=[conv1,conv1]": "train.freeze names a stage twice",
           "train.optimizer=adam": "did you mean 'adamw'?"}
    for item, message in bad.items():
        result = cli("train", "--preset", "smoke", "--set", item, "--print-config")
        assert result.exit_code == 2 and message in result.stderr, (item, result.stderr)
    result = cli("train", "--preset", "smoke", "--batch-size", "32", "--set", "train.accum_steps=3", "--device", "cpu")
    assert result.exit_code == 2 and "must divide into train.accum_steps 3 equal micro-batches" in result.stderr


def test_precedence_holds_in_any_argument_order(cli, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 0.3\n  epochs: 7\n  batch_size: 64\ndata:\n  flip: false\n")
    orders = [
        ["--preset", "smoke", "--config", f, "--lr", "0.2", "--set", "train.epochs=9"],
        ["--set", "train.epochs=9", "--lr", "0.2", "--config", f, "--preset", "smoke"],
    ]
    for args in orders:
        cfg = printed(cli, *args)
        assert cfg["train"]["epochs"] == 9  # --set beats the config file
        assert cfg["train"]["lr"] == 0.2  # a flag beats the config file
        assert cfg["train"]["batch_size"] == 64  # the config file beats the preset (32)
        assert cfg["data"]["dataset"] == "synthetic"  # the preset beats the defaults
        assert cfg["data"]["flip"] is False
    # --set beats a flag for the same key
    assert printed(cli, "--lr", "0.2", "--set", "train.lr=0.01")["train"]["lr"] == 0.01


def test_bad_config_files(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1,\n")
    result = cli("train", "--config", bad, "--print-config")
    assert result.exit_code == 2 and "not valid YAML at line" in result.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("trainer:\n  lr: 0.1\n")
    result = cli("train", "--config", unknown, "--print-config")
    assert result.exit_code == 2 and "unknown section 'trainer'; did you mean 'train'?" in result.stderr
    result = cli("train", "--config", tmp_path / "missing.yaml", "--print-config")
    assert result.exit_code == 2 and "config file not found" in result.stderr


def test_yaml_is_safe_loaded(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("train: !!python/object/apply:os.system ['touch " + str(tmp_path / "pwned") + "']\n")
    with pytest.raises(BadInput, match="not valid YAML"):
        C.resolve(config_file=evil)
    assert not (tmp_path / "pwned").exists()


def test_every_preset_resolves():
    for name in C.list_presets():
        cfg = C.resolve(preset=name)
        assert cfg.model.name
    assert {"cifar", "cifar100", "fashion-mnist", "imagenet", "smoke"} <= set(C.list_presets())


def test_on_off_switches_survive_yaml(cli, tmp_path):
    """YAML 1.1 reads on/off as booleans; the auto/on/off switches must still take them, from --set and files."""
    cfg = printed(cli, "--set", "train.channels_last=on", "--set", "train.compile=off")
    assert (cfg["train"]["channels_last"], cfg["train"]["compile"]) == ("on", "off")
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  channels_last: off\n  compile: true\n")
    cfg = printed(cli, "--config", f)
    assert (cfg["train"]["channels_last"], cfg["train"]["compile"]) == ("off", "on")
    result = cli("train", "--set", "train.precision=true", "--print-config")
    assert result.exit_code == 2 and "train.precision: True is not one of" in result.stderr
