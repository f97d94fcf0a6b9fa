"""The default speed path end to end: `train.compile: auto` resolved to on, through evaluations, a
checkpoint and a resume, with the real compiler and with one that fails (issue: every compiled run died
at its first evaluation because evaluation was handed the compile wrapper instead of the module)."""

from __future__ import annotations


import pytest
import torch

import resnet_cli.speed as speed_module
from conftest import last_json

@pytest.fixture
def tiny(smoke_args) -> list[str]:
    """2 steps per epoch; `compile_min_steps=1` makes `auto` compile this short run as it would a long one."""
    return [*smoke_args("cpu", 64, 32, "train.compile_min_steps=1", "train.log_interval=1"), "--batch-size", "32"]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.slow  # real Inductor compilation (about a minute cold on 2 cores)
@pytest.mark.skipif(speed_module.cpp_compiler() is None, reason="Inductor's CPU backend needs a C++ compiler")
def test_default_compile_trains_evaluates_checkpoints_and_resumes(cli, tmp_path, tiny, ckpts):
    """The README's default path on CPU for a long run, shortened: Inductor really compiles (about a minute
    cold on 2 cores; Inductor's on-disk cache makes the resume's compile fast)."""
    first = cli("train", *tiny, "--epochs", "2", "--run-dir", tmp_path, "--name", "c")
    assert first.exit_code == 0, first.output
    assert "cpu: fp32, channels_last" in first.stdout and "compile on" in first.stdout
    assert "torch.compile failed" not in first.stdout  # it compiled; nothing fell back
    run = tmp_path / "c"
    assert [r["epoch"] for r in ckpts.rows(run)] == ["1", "2"]  # two evaluations after compiled training
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 4
    assert not any(k.startswith("_orig_mod") for k in ckpt["model"])  # the module's own names
    resumed = cli("train", "--resume", run, "--epochs", "3", "--json")
    assert resumed.exit_code == 0, resumed.output
    out = last_json(resumed.stdout)
    assert out["compile"] is True and out["epochs"] == 3 and out["steps"] == 6
    assert [r["epoch"] for r in ckpts.rows(run)] == ["1", "2", "3"]
    ev = cli("eval", run, "--device", "cpu", "--json")
    assert ev.exit_code == 0, ev.output
    assert last_json(ev.stdout)["top1"] == pytest.approx(out["best"]["test_top1"])
    # Inductor computes what eager computes: 6 SGD steps later the weights agree but for float rounding
    eager = cli("train", *tiny, "--epochs", "3", "--run-dir", tmp_path, "--name", "e", "--set", "train.compile=off")
    assert eager.exit_code == 0, eager.output
    a, b = ckpts.weights(run / "last.pt"), ckpts.weights(tmp_path / "e" / "last.pt")
    va, vb = (torch.cat([w[k].float().flatten() for k in a]) for w in (a, b))
    assert ((va - vb).norm() / vb.norm()).item() < 1e-2  # measured 1.9e-3: reordered sums, compounded


@pytest.mark.slow  # 3 s: the quick loop keeps under 90 s
def test_a_failing_compiler_falls_back_through_evaluation_and_resume(cli, tmp_path, monkeypatch, tiny, ckpts):
    """Under `auto`, a compiler that fails (no headers, broken toolchain) costs one line and nothing else:
    the run evaluates, checkpoints and resumes, and its weights are exactly the eager run's."""
    monkeypatch.setattr(speed_module, "cpp_compiler", lambda: "g++")
    real_compile = torch.compile

    def broken_backend(gm, example_inputs):
        raise RuntimeError("simulated: C++ compile failed")

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: real_compile(fn, backend=broken_backend))
    eager = cli("train", *tiny, "--epochs", "3", "--run-dir", tmp_path, "--name", "eager",
                "--set", "train.compile=off")
    assert eager.exit_code == 0, eager.output
    part = cli("train", *tiny, "--epochs", "3", "--run-dir", tmp_path, "--name", "fb",
               "--set", "run.stop_after_epochs=2")
    assert part.exit_code == 0, part.output
    assert part.stdout.count("torch.compile failed (RuntimeError: simulated: C++ compile failed)") == 1
    assert [r["epoch"] for r in ckpts.rows(tmp_path / "fb")] == ["1", "2"]
    resumed = cli("train", "--resume", tmp_path / "fb", "--set", "run.stop_after_epochs=0")
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.count("torch.compile failed") == 1  # the resumed process tried once, too
    a, b = ckpts.weights(tmp_path / "eager" / "last.pt"), ckpts.weights(tmp_path / "fb" / "last.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    same = ("train_loss", "test_loss", "test_top1")
    assert [[r[k] for k in same] for r in ckpts.rows(tmp_path / "fb")] == \
        [[r[k] for k in same] for r in ckpts.rows(tmp_path / "eager")]
    strict = cli("train", *tiny, "--epochs", "1", "--run-dir", tmp_path, "--name", "strict",
                 "--set", "train.compile=on")
    assert strict.exit_code == 1, strict.output  # asked for explicitly: an error, one line, no traceback
    assert strict.stderr.startswith("error: torch.compile failed (RuntimeError: simulated: C++ compile failed)")
    assert "internal error" not in strict.stderr and "Traceback" not in strict.output
