"""Every bad invocation: exit status 2, one line on stderr naming the problem, never a traceback.

One table across all commands (issue: at least 40 distinct cases). Placeholders in braces name
files that the `files` fixture makes: broken checkpoints, YAML, data folders.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from fakedata import idx_bytes, write_idx_set
from resnet_cli import build_model

NO_GPU = not torch.cuda.is_available()

CASES = [
    # unknown models, depths, presets, commands
    (["summary", "resnt50"], "did you mean 'resnet50'"),
    (["summary", "--depth", "19"], "no ResNet of depth 19"),
    (["flops", "--depth", "19"], "no ResNet of depth 19"),
    (["train", "--model", "resnet19", "--print-config"], "unknown model 'resnet19'"),
    (["train", "--depth", "21", "--print-config"], "no ResNet of depth 21"),
    (["train", "--preset", "cifr"], "unknown preset 'cifr'; did you mean 'cifar'?"),
    (["list", "--bogus"], "No such option: --bogus"),
    (["nonsense"], "No such command 'nonsense'"),
    (["summary"], "name a model"),
    (["summary", "resnet50", "--depth", "50"], "not both"),
    (["train", "--plain", "--print-config"], "--plain needs --model or --depth"),
    # wrong types, zero or negative sizes
    (["summary", "resnet50", "--input-size", "0"], "--input-size must be 1..4096 pixels a side"),
    (["flops", "--input-size", "-4"], "--input-size must be 1..4096 pixels a side"),
    (["summary", "resnet50", "--input-size", "abc"], "--input-size: expected S or HxW, e.g. 224 or 160x224"),
    (["build", "resnet20", "--num-classes", "0", "-o", "{tmp}/x.pt"], "--num-classes must be positive"),
    (["build", "resnet20", "--num-classes", "-3", "-o", "{tmp}/x.pt"], "--num-classes must be positive"),
    (["build", "resnet20", "--in-channels", "0", "-o", "{tmp}/x.pt"], "--in-channels must be positive"),
    (["build", "plain20", "--zero-init-residual", "-o", "{tmp}/x.pt"], "no shortcuts"),
    (["build", "resnet20"], "Missing option '--output'"),
    (["train", "--lr", "0", "--print-config"], "train.lr must be positive"),
    (["train", "--lr", "-0.1", "--print-config"], "train.lr must be positive"),
    (["train", "--epochs", "0", "--print-config"], "train.epochs must be positive"),
    (["train", "--epochs", "abc"], "Invalid value for '--epochs'"),
    (["train", "--batch-size", "0", "--print-config"], "train.batch_size must be positive"),
    (["train", "--batch-size", "-8", "--print-config"], "train.batch_size must be positive"),
    (["train", "--set", "model.num_classes=-1", "--print-config"], "model.num_classes must not be negative"),
    (["flops", "--batch-size", "0"], "--batch-size must be positive"),
    (["flops", "--tolerance", "2"], "--tolerance must be in"),
    (["eval", "{ckpt}", "--batch-size", "0"], "--batch-size must be positive"),
    # config keys, values and files
    (["train", "--set", "train.lrr=0.1"], "unknown key 'train.lrr'; did you mean 'train.lr'?"),
    (["train", "--set", "trian.lr=0.1"], "did you mean"),
    (["train", "--set", "train.lr=fast"], "train.lr: expected a number, got 'fast'"),
    (["train", "--set", "train.epochs=1.5"], "train.epochs: expected an integer"),
    (["train", "--set", "train.nesterov=maybe"], "expected true or false"),
    (["train", "--set", "train.schedule=cosin"], "did you mean 'cosine'"),
    (["train", "--set", "train.lr"], "expected KEY=VALUE"),
    (["train", "--set", "train.momentum=1.5"], "train.momentum must be in [0, 1)"),
    (["train", "--set", "train.milestones=[30,10]"], "increasing"),
    (["train", "--config", "{bad_yaml}"], "not valid YAML at line"),
    (["train", "--config", "{unknown_yaml}"], "unknown section 'trainer'; did you mean 'train'?"),
    (["train", "--config", "{tmp}/missing.yaml"], "config file not found"),
    # data
    (["train", "--preset", "fashion-mnist", "--data-dir", "{empty}", "--set", "data.download=false"],
     "fashion-mnist is not available"),
    (["train", "--set", "data.dataset=mnist", "--data-dir", "{truncated_idx}", "--set", "data.download=false"],
     "is truncated"),
    (["train", "--set", "data.dataset=fashion-mnist", "--data-dir", "{fake_fashion}", "--set", "data.download=false"],
     "checksum mismatch"),
    (["train", "--preset", "cifar", "--data-dir", "{bad_cifar}", "--set", "data.download=false"],
     "fails its checksum"),
    (["train", "--set", "data.dataset=imagenet"], "is not one of"),
    # checkpoints
    (["eval", "{truncated_ckpt}", "--model", "resnet20"], "truncated or not a checkpoint"),
    (["eval", "{text_file}"], "truncated or not a checkpoint"),
    (["eval", "{tmp}/none.pt"], "checkpoint not found"),
    (["eval", "{empty}"], "holds no best.pt or last.pt"),
    (["eval", "{bare_sd}"], "bare state_dict; say which model"),
    (["eval", "{bare_sd}", "--model", "resnet32", "--dataset", "synthetic"], "does not fit resnet32"),
    (["eval", "{five_classes}"], "holds untrained weights (resnet build): say which dataset"),  # never guessed
    (["eval", "{five_classes}", "--dataset", "synthetic"], "has 5 outputs but synthetic has 10 classes"),
    (["eval", "{gray}", "--dataset", "synthetic"], "expects 1-channel images"),
    (["eval", "{ckpt}", "--model", "resnet56"], "holds a resnet20, not a resnet56"),
    (["train", "--resume", "{empty}"], "no last.pt in that folder"),
    (["train", "--resume", "{five_classes}"], "not a training checkpoint"),
    (["train", "--resume", "{run}", "--lr", "0.5"], "cannot change train.lr when resuming"),
    (["train", "--resume", "{run}", "--preset", "smoke"], "drop --preset/--config"),
    # outputs that cannot be written, devices that are not there
    (["build", "resnet20", "-o", "{text_file}/x.pt"], "cannot write to"),
    (["build", "resnet20", "-o", "{tmp}"], "is a folder"),
    (["train", "--preset", "smoke", "--run-dir", "{text_file}/runs"], "cannot write to"),
    (["train", "--preset", "smoke", "--name", "../escape", "--run-dir", "{tmp}/r"], "must be a plain folder name"),
    (["flops", "resnet20", "--device", "tpu"], "unknown device 'tpu'"),
    pytest.param(["train", "--preset", "smoke", "--device", "cuda"], "no CUDA GPU is available",
                 marks=pytest.mark.skipif(not NO_GPU, reason="a GPU is present")),
    pytest.param(["train", "--preset", "smoke", "--set", "train.precision=fp16"], "fp16 needs a CUDA device",
                 marks=pytest.mark.skipif(not NO_GPU, reason="a GPU is present")),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    f = {"tmp": d}
    (d / "empty").mkdir()
    f["empty"] = d / "empty"
    f["text_file"] = d / "notes.txt"
    f["text_file"].write_text("not a checkpoint\n")
    f["bad_yaml"] = d / "bad.yaml"
    f["bad_yaml"].write_text("train:\n  lr: [1,\n")
    f["unknown_yaml"] = d / "unknown.yaml"
    f["unknown_yaml"].write_text("trainer:\n  lr: 0.1\n")
    f["truncated_idx"] = d / "idx"
    write_idx_set(d / "idx" / "mnist", gz=False)
    raw = idx_bytes(np.zeros((64, 28, 28)))
    (d / "idx" / "mnist" / "train-images-idx3-ubyte").write_bytes(raw[:-100])
    f["fake_fashion"] = d / "fashion"
    write_idx_set(d / "fashion" / "fashion-mnist")
    f["bad_cifar"] = d / "cifar"
    (d / "cifar").mkdir()
    (d / "cifar" / "cifar-10-python.tar.gz").write_bytes(gzip.compress(b"cut short"))
    torch.manual_seed(0)
    model = build_model("resnet20")
    f["bare_sd"] = d / "bare.pt"
    torch.save(model.state_dict(), f["bare_sd"])
    from resnet_cli.checkpoint import save_checkpoint

    for key, nc, ic in (("five_classes", 5, 3), ("gray", 10, 1)):
        f[key] = d / f"{key}.pt"
        save_checkpoint(f[key], {"model": build_model("resnet20", num_classes=nc, in_channels=ic).state_dict(),
                                 "config": {"model": {"name": "resnet20", "num_classes": nc, "in_channels": ic,
                                                      "zero_init_residual": False}}})
    from resnet_cli import config as C
    from resnet_cli.train.session import train_run

    cfg = C.resolve("smoke", flags={"train.epochs": 1, "data.synthetic_train": 64, "run.device": "cpu",
                                    "data.synthetic_test": 32, "run.run_dir": str(d / "runs")})
    f["run"] = Path(train_run(cfg, quiet=True).run_dir)
    f["ckpt"] = f["run"] / "last.pt"
    f["truncated_ckpt"] = d / "truncated.pt"
    f["truncated_ckpt"].write_bytes(f["ckpt"].read_bytes()[:5000])
    return f


def _args(case):
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(_args(c)) for c in CASES])
def test_bad_input(cli, files, args, message):
    result = cli(*[a.format(**files) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_the_table_is_big_enough():
    assert len(CASES) >= 40
    assert {_args(c)[0] for c in CASES} >= {"summary", "flops", "build", "train", "eval", "list"}
