"""What only runs on a GPU: the CUDA defaults of `train` (bf16, channels_last, compile) through evaluation and
resume, `bench`, `flops --device`, `eval` and a one-process NCCL run under torchrun. Skipped without CUDA;
`benchmarks/gpu_check.sh` runs them on a GPU machine."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import last_json

pytestmark = pytest.mark.cuda  # skipped without a CUDA device (conftest)


@pytest.fixture
def gpu_smoke(smoke_args) -> list[str]:
    return smoke_args("cuda", 512, 256, "train.log_interval=4")


def test_cuda_defaults_train_evaluate_and_resume(cli, tmp_path, gpu_smoke, ckpts):
    part = cli("train", *gpu_smoke, "--epochs", "3", "--run-dir", tmp_path, "--name", "g",
               "--set", "run.stop_after_epochs=2")
    assert part.exit_code == 0, part.output
    assert "cuda: bf16, channels_last on, compile on" in part.stdout  # the CUDA defaults, resolved
    assert "torch.compile failed" not in part.stdout
    assert [r["epoch"] for r in ckpts.rows(tmp_path / "g")] == ["1", "2"]
    resumed = cli("train", "--resume", tmp_path / "g", "--set", "run.stop_after_epochs=0", "--json")
    assert resumed.exit_code == 0, resumed.output
    out = last_json(resumed.stdout)
    assert out["device"].startswith("cuda") and out["precision"] == "bf16" and out["compile"] is True
    assert out["epochs"] == 3 and [r["epoch"] for r in ckpts.rows(tmp_path / "g")] == ["1", "2", "3"]
    assert out["final"]["test_top1"] > 0.3  # learnable synthetic classes: far above chance (0.1)
    ev = cli("eval", tmp_path / "g", "--device", "cuda", "--json")
    assert ev.exit_code == 0, ev.output
    got = last_json(ev.stdout)
    assert got["device"].startswith("cuda") and got["count"] == 256
    assert got["top1"] == pytest.approx(out["best"]["test_top1"], abs=0.02)  # bf16: eager vs compiled kernels


def test_cuda_recipe_keys_train_under_the_defaults(cli, tmp_path, gpu_smoke):
    """The recipe pieces on the GPU path (bf16, channels_last, compile): batched augmentations with device
    generators, soft targets, EMA updates and evaluation, accumulation, AdamW (fused), the validation split."""
    keys = ["train.ema=0.99", "data.val_split=128", "data.mixup=0.2", "data.cutmix=1.0", "data.random_erasing=0.25",
            "data.randaugment=2,9", "train.accum_steps=2", "train.optimizer=adamw", "train.freeze=[conv1]"]
    run = cli("train", *gpu_smoke, "--epochs", "3", "--run-dir", tmp_path, "--name", "r", "--json",
              *(a for k in keys for a in ("--set", k)))
    assert run.exit_code == 0, run.output
    out = last_json(run.stdout)
    assert out["selected_by"] == "ema_val_top1" and out["compile"] is True
    assert out["best"]["ema_val_top1"] > 0.3  # far above chance (0.1)
    ev = last_json(cli("eval", tmp_path / "r", "--device", "cuda", "--split", "val", "--json").stdout)
    assert ev["weights"] == "ema" and ev["top1"] == pytest.approx(out["best"]["ema_val_top1"], abs=0.02)


def test_cuda_resume_is_exact_in_fp32_eager(cli, tmp_path, gpu_smoke):
    """With bf16 and compile off, a resumed CUDA run matches an uninterrupted one to float tolerance."""
    fp32 = ["--set", "train.precision=fp32", "--set", "train.compile=off"]
    full = cli("train", *gpu_smoke, *fp32, "--epochs", "2", "--run-dir", tmp_path, "--name", "full")
    part = cli("train", *gpu_smoke, *fp32, "--epochs", "2", "--run-dir", tmp_path, "--name", "part",
               "--set", "run.stop_after_epochs=1")
    assert full.exit_code == 0 and part.exit_code == 0, full.output + part.output
    resumed = cli("train", "--resume", tmp_path / "part", "--set", "run.stop_after_epochs=0")
    assert resumed.exit_code == 0, resumed.output
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-4), k


def test_bench_on_cuda_reports_memory_and_compile_time(cli):
    out = cli.json("bench", "resnet20", "--device", "cuda", "-b", "256", "--warmup", "3", "--iters", "5",
                   "--repeats", "3", "--detail")
    assert "cuda" not in out["device"].lower() or out["cuda"]
    for r in out["results"]:
        assert r["precision"] == "bf16" and r["channels_last"] is True and r["compile"] is True
        assert r["peak_memory_bytes"] > 0 and r["images_per_s"] > 0 and r["warmup_s"] > 0
    assert out["matmul_peak"]["dtype"] == "bfloat16" and out["matmul_peak"]["tflops"] > 10
    assert set(out["detail"]["phases_ms"]) == {"forward", "backward", "optimizer"}


def test_flops_device_cuda_times_the_forward(cli):
    out = cli.json("flops", "resnet50", "--device", "cuda", "-b", "32")
    t = out["models"][0]["timing"]
    assert t["images_per_s"] > 0 and t["batch_size"] == 32 and out["failed"] == []


def test_one_process_nccl_run_under_torchrun(tmp_path, gpu_smoke, ckpts):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
           "-m", "resnet_cli", "train", *gpu_smoke, "--epochs", "1", "--run-dir", str(tmp_path), "--name", "nccl",
           "--set", "train.compile=off"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "torchrun: 1 process(es), nccl" in result.stdout  # it really joined an NCCL group
    assert [r["epoch"] for r in ckpts.rows(tmp_path / "nccl")] == ["1"]
