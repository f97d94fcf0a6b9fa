"""`bench` on CPU, out-of-memory back-off, and the fast-path switches leaving results unchanged."""

from __future__ import annotations

import re

import pytest
import torch

from resnet_cli import config as C
from resnet_cli.bench import BenchConfig, make_step, run_with_backoff
from resnet_cli.models import ArchSpec
from resnet_cli.models.resnet import ResNet
from resnet_cli.errors import RunFailed
from resnet_cli.speed import Speed
from resnet_cli.train.progress import Progress

FIELDS = {"model", "family", "mode", "batch_size", "input_size", "precision", "channels_last", "compile",
          "ms_per_step", "ms_min", "ms_max", "spread_pct", "images_per_s", "tflops", "peak_memory_bytes",
          "repeats", "iters", "pct_of_matmul_peak", "compile_mode", "cuda_graphs", "cuda_graphs_fell_back",
          "cuda_graph_pool_bytes",
          "cuda_graphs_note", "warmup_s"}


def test_bench_cpu_figures_and_json_fields(cli):
    out = cli.json("bench", "resnet20", "-b", "8", "--warmup", "1", "--iters", "1", "--repeats", "2", "--detail")
    assert set(out) == {"model", "device", "torch", "cuda", "fwd_gmacs", "matmul_peak", "results", "notes",
                        "flops_rule", "detail"}
    assert [r["mode"] for r in out["results"]] == ["train", "infer"]
    for r in out["results"]:
        assert set(r) == FIELDS
        assert r["images_per_s"] > 0 and r["ms_per_step"] > 0 and r["tflops"] > 0
        assert r["ms_min"] <= r["ms_per_step"] <= r["ms_max"]
        assert r["images_per_s"] == pytest.approx(r["batch_size"] / (r["ms_per_step"] / 1000))
    train, infer = out["results"]
    # training counts 3 x the forward FLOPs
    assert train["tflops"] == pytest.approx(6 * out["fwd_gmacs"] * 1e9 * train["images_per_s"] / 1e12)
    assert out["matmul_peak"]["tflops"] > 0
    assert set(out["detail"]["stages_ms"]) == {"stem", "conv2_x", "conv3_x", "conv4_x", "head"}
    assert set(out["detail"]["phases_ms"]) == {"forward", "backward", "optimizer"}


def test_bench_table_and_bad_precision(cli):
    result = cli("bench", "--depth", "20", "--mode", "infer", "-b", "4", "--warmup", "0", "--iters", "1",
                 "--repeats", "1")
    assert result.exit_code == 0 and "Peak reference" in result.stdout and "img/s" in result.stdout
    if not torch.cuda.is_available():
        bad = cli("bench", "resnet20", "--precision", "fp16")
        assert bad.exit_code == 2 and "needs a CUDA device" in bad.stderr


def test_out_of_memory_halves_the_batch_and_says_so():
    tried, notes = [], []

    def run(bs):
        tried.append(bs)
        if bs > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"batch": bs}

    result, used = run_with_backoff(run, 256, lambda old, new: notes.append((old, new)))
    assert result == {"batch": 64} and used == 64 and tried == [256, 128, 64]
    assert notes == [(256, 128), (128, 64)]
    with pytest.raises(RuntimeError, match="not memory"):
        run_with_backoff(lambda bs: (_ for _ in ()).throw(RuntimeError("not memory")), 8, lambda *a: None)


def _one_epoch(make_trainer, **sets) -> dict[str, torch.Tensor]:
    trainer = make_trainer(open_dir=False, **sets)
    trainer.train_epoch()
    return {k: v.float() for k, v in trainer.run.model.state_dict().items()}


def _rel_diff(a, b) -> float:
    """Relative L2 distance between two whole parameter sets (BatchNorm statistics included)."""
    va = torch.cat([a[k].flatten() for k in a])
    vb = torch.cat([b[k].flatten() for k in a])
    return ((va - vb).norm() / vb.norm()).item()


@pytest.mark.slow  # 3.8 s on 2026-12-06's machine: the quick loop keeps under 90 s
def test_channels_last_and_precision_switches_keep_results(make_trainer):
    base = _one_epoch(make_trainer, **{"train.channels_last": "off"})
    nhwc = _one_epoch(make_trainer, **{"train.channels_last": "on"})
    assert _rel_diff(nhwc, base) < 1e-3  # the same arithmetic, float sums reordered
    bf16 = _one_epoch(make_trainer, **{"train.precision": "bf16"})
    assert 1e-6 < _rel_diff(bf16, base) < 5e-2  # bf16 keeps 8 mantissa bits; it really ran in bf16


def _tiny_pair():
    spec = ArchSpec("basic", (1, 1), (8, 16), "cifar", "A")
    torch.manual_seed(0)
    a = ResNet(spec, num_classes=4)
    b = ResNet(spec, num_classes=4)
    b.load_state_dict(a.state_dict())
    return a, b


def test_the_one_training_step_is_bit_identical_to_the_plain_pytorch_step():
    """TrainStep (used by train, bench and the benchmarks) computes exactly the step the loop wrote by hand:
    forward, loss, zero_grad, backward, clip, foreach SGD with the lr set per step."""
    from resnet_cli.config import TrainConfig
    from resnet_cli.train.step import TrainStep, make_optimizer

    cpu = torch.device("cpu")
    ours_model, ref_model = _tiny_pair()
    t = TrainConfig(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, no_wd_bn_bias=True, grad_clip=1.0)
    step = TrainStep(ours_model, make_optimizer(ours_model, t, cpu), Speed("fp32", False, False), cpu,
                     torch.nn.CrossEntropyLoss(label_smoothing=0.1), t.grad_clip)
    decay = [p for p in ref_model.parameters() if p.ndim > 1]
    no_decay = [p for p in ref_model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9, nesterov=True, foreach=True)
    g = torch.Generator().manual_seed(1)
    for i in range(4):
        x, y = torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)
        lr = 0.1 / (i + 1)
        loss, logits, updated = step(x, y, lr)
        for group in opt.param_groups:
            group["lr"] = lr
        ref_loss = torch.nn.functional.cross_entropy(ref_model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        ref_loss.backward()
        torch.nn.utils.clip_grad_norm_(ref_model.parameters(), 1.0)
        opt.step()
        assert updated and torch.equal(loss, ref_loss.detach()) and logits.shape == (8, 4)
    for (k, a), b in zip(ours_model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.equal(a, b), k
    # check_finite: a NaN loss is reported and changes nothing
    before = {k: v.detach().clone() for k, v in ours_model.named_parameters()}
    step.criterion = lambda logits, y: logits.sum() * float("nan")
    loss, _, updated = step(x, y, 0.1, check_finite=True)
    assert not updated and torch.isnan(loss)
    assert all(torch.equal(before[k], v) for k, v in ours_model.named_parameters())


def test_bench_times_trains_own_step():
    """`bench`'s training step is TrainStep: it updates the weights as training does."""
    model, _ = _tiny_pair()
    before = model.fc.weight.detach().clone()
    run_step = make_step(model, BenchConfig("train", 4, 8, Speed("fp32", False, False)), torch.device("cpu"))
    run_step()
    assert not torch.equal(before, model.fc.weight) and model.training
    infer = make_step(model, BenchConfig("infer", 4, 8, Speed("fp32", True, False)), torch.device("cpu"))
    out = infer()
    assert out.shape == (4, 4) and not model.training and model.conv1.weight.is_contiguous(
        memory_format=torch.channels_last)


def test_cpu_auto_switches_follow_the_measurements(monkeypatch):
    import resnet_cli.speed as speed_module
    from resnet_cli.errors import BadInput

    cpu = torch.device("cpu")
    threshold = C.COMPILE_MIN_STEPS["cpu"]
    speed = Speed.for_train(C.resolve("smoke").train, cpu, planned_steps=threshold - 1)
    assert (speed.precision, speed.compile) == ("fp32", False)
    assert speed.channels_last == torch.backends.mkldnn.is_available()
    monkeypatch.setattr(speed_module, "cpp_compiler", lambda: "g++")
    assert Speed.for_train(C.resolve("smoke").train, cpu, planned_steps=threshold).compile
    lowered = C.resolve("smoke", sets=["train.compile_min_steps=10"]).train
    assert Speed.for_train(lowered, cpu, planned_steps=10).compile
    monkeypatch.setattr(speed_module, "cpp_compiler", lambda: None)
    assert not Speed.for_train(C.resolve("smoke").train, cpu, planned_steps=10 ** 6).compile
    with pytest.raises(BadInput, match="needs a C\\+\\+ compiler"):
        Speed.for_train(C.resolve("smoke", sets=["train.compile=on"]).train, cpu, planned_steps=10)
    off = Speed.for_train(C.resolve("smoke", sets=["train.channels_last=off"]).train, cpu, planned_steps=10)
    assert off.channels_last is False


def test_compile_waits_for_long_runs_on_cuda_too():
    """On CUDA `auto` compiles runs of 20,000 steps or more only (about where resnet20's compile time was earned
    back on the H100): the fashion-mnist preset's 7,020 steps start eagerly, a paper-length CIFAR run compiles;
    train.compile_min_steps sets the bar for every device, and train.compile=on compiles whatever the length."""
    from resnet_cli.errors import BadInput

    cuda, t = torch.device("cuda"), C.resolve("smoke").train  # resolving touches no CUDA API
    assert t.compile_min_steps == -1 and C.COMPILE_MIN_STEPS == {"cpu": 2000, "cuda": 20000}
    fashion = C.resolve("fashion-mnist").train
    steps = fashion.epochs * (60000 // fashion.batch_size)  # the last partial batch is dropped
    assert steps == 7020 and not Speed.for_train(fashion, cuda, planned_steps=steps).compile
    assert Speed.for_train(t, cuda, planned_steps=64000).compile  # the paper's CIFAR length
    assert not Speed.for_train(t, cuda, planned_steps=19999).compile and Speed.for_train(t, cuda, 20000).compile
    speed = Speed.for_train(t, cuda, planned_steps=100)
    assert (speed.precision, speed.channels_last, speed.compile) == ("bf16", True, False)
    assert Speed.resolve(cuda).compile  # a run of unknown length (no planned steps) compiles
    assert Speed.for_train(C.resolve("smoke", sets=["train.compile_min_steps=0"]).train, cuda, 1).compile
    assert Speed.for_train(C.resolve("smoke", sets=["train.compile=on"]).train, cuda, 1).compile
    assert C.min_compile_steps("mps") == C.COMPILE_MIN_STEPS["cpu"] and C.min_compile_steps("cuda", 5) == 5
    with pytest.raises(BadInput, match="train.compile_min_steps must be 0 or more .-1: by device., got -2"):
        C.resolve("smoke", sets=["train.compile_min_steps=-2"])


@pytest.mark.slow  # a few seconds: the quick loop keeps under 90 s
def test_auto_compile_falls_back_to_eager_when_compiling_fails(make_trainer, monkeypatch, capsys):
    """`train.compile: auto` must not kill a run when Inductor cannot build (no headers, broken toolchain)."""
    import resnet_cli.speed as speed_module

    torch._dynamo.reset()
    monkeypatch.setattr(speed_module, "cpp_compiler", lambda: "g++")
    real_compile = torch.compile

    def broken_backend(gm, example_inputs):
        raise RuntimeError("simulated: C++ compile failed")

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: real_compile(fn, backend=broken_backend))
    eager = _one_epoch(make_trainer, **{"train.compile": "off"})
    trainer = make_trainer(Progress(enabled=True, force_plain=True), open_dir=False, **{"train.compile_min_steps": 1})
    assert trainer.run.speed.compile
    trainer.train_epoch()
    assert not trainer.run.speed.compile
    assert "torch.compile failed (RuntimeError: simulated: C++ compile failed)" in capsys.readouterr().out
    for k, v in trainer.run.model.state_dict().items():
        assert torch.equal(v.float(), eager[k]), k  # the failed attempt changed nothing
    with pytest.raises(RunFailed, match="torch.compile failed .RuntimeError: simulated"):  # asked for: an error
        _one_epoch(make_trainer, **{"train.compile": "on"})
    torch._dynamo.reset()


def test_bench_table_fits_80_columns_without_cutting(cli):
    result = cli("bench", "resnet20", "--device", "cpu", "-b", "4", "--warmup", "0", "--iters", "1", "--repeats", "1",
                 env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    table = [ln for ln in result.stdout.splitlines() if ln[:1] in "┏┃┡│└"]
    assert table and all(len(ln) <= 80 for ln in table) and "…" not in result.stdout
    assert "train: fp32, channels_last" in result.stdout and "compile off" in result.stdout


@pytest.mark.slow  # about 60 s: the quick loop keeps under 90 s
def test_the_gpu_check_script_dry_runs_on_the_cpu(tmp_path, fashion_dir, dry_run_env):
    """benchmarks/gpu_check.sh is the first call of every GPU lease; DRY=1 runs its every command on the CPU (the
    CUDA tests skip, tiny sizes), so that a flag or its summary cannot waste that call: all six steps pass and
    every row of the summary carries its figure."""
    import subprocess
    from pathlib import Path

    logs, work = tmp_path / "logs", tmp_path / "work"
    (work / "runs" / "fashion").mkdir(parents=True)  # an earlier call's run folder: removed, never read
    script = str(Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh")
    done = subprocess.run(["bash", script, str(fashion_dir), str(logs)], capture_output=True, text=True,
                          timeout=400, env={**dry_run_env, "WORK": str(work)})
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert out.splitlines()[-1].startswith("gpu_check: dry run done, every command ran (6 passed; "), out
    assert (logs / "machine.txt").read_text().startswith("device: no CUDA device (dry run)")
    rows = {line.split()[0]: line.split(None, 3)[1:] for line in (logs / "summary.txt").read_text().splitlines()
            if line and not line.startswith(("step ", "wall "))}
    assert list(rows) == ["pytest_cuda", "fashion_to_93", "bench_r20", "bench_r50v15_train", "bench_r50_infer",
                          "flops_cuda"], rows
    assert all(status == "ok" for status, _, _ in rows.values()), rows
    figures = {name: figure for name, (_, _, figure) in rows.items()}
    assert re.fullmatch(r"\d+ passed, \d+ skipped in [\d.]+s", figures["pytest_cuda"]), figures
    assert re.fullmatch(r"0\.1% in [\d.]+ s, epoch 1; final [\d.]+%", figures["fashion_to_93"]), figures
    assert [p.name for p in (work / "runs").iterdir()] == ["fashion"]  # the old folder went; not "fashion-2"
    assert re.fullmatch(r"train [\d,]+ img/s; infer [\d,]+ img/s", figures["bench_r20"]), figures
    assert re.fullmatch(r"train [\d,]+ img/s", figures["bench_r50v15_train"]), figures
    assert re.fullmatch(r"infer [\d,]+ img/s", figures["bench_r50_infer"]), figures
    assert re.fullmatch(r"check ok; resnet18 forward [\d.]+ TFLOP/s; resnet152 forward [\d.]+ TFLOP/s",
                        figures["flops_cuda"]), figures


@pytest.mark.slow  # about 65 s: the quick loop keeps under 90 s
def test_the_gpu_speed_script_dry_runs_on_the_cpu(tmp_path, fashion_dir, dry_run_env):
    """benchmarks/gpu_speed.sh has never run on a GPU; DRY=1 runs its every command on the CPU at a few steps, so
    that a flag it passes, a script it calls or its summary cannot waste a GPU call. Every figure of the summary
    is there, ResNet-50's beside the hand-written step it is held to."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    logs = tmp_path / "logs"
    env = {**dry_run_env, "WORK": str(tmp_path / "work")}
    script = str(root / "benchmarks" / "gpu_speed.sh")
    bad = subprocess.run(["bash", script, str(fashion_dir), str(logs), "r50,nope"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert bad.returncode == 2 and "PARTS are fashion, r20, r50, folder or all; got 'nope'" in bad.stdout
    done = subprocess.run(["bash", script, str(fashion_dir), str(logs)], capture_output=True, text=True,
                          timeout=600, env=env)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "dry run on the CPU" in out and ": exit" not in out, out
    summary = (logs / "summary.txt").read_text().splitlines()
    assert (logs / "machine.txt").read_text().startswith("device: no CUDA device (dry run)")

    def figure(label: str) -> str:
        line = next((x for x in summary if x.startswith(label)), None)
        assert line is not None, f"{label!r} not in\n" + "\n".join(summary)
        return line[46:].split()[0]

    for label in ("fashion-mnist to 94.0%", "  batch 256, lr 0.2", "  the preset, compile on"):
        assert figure(label) == "-"  # 4 steps reach no 94%, and the row says so
    assert sum("NOT reached in" in x for x in summary) == 3
    for label in ("resnet20 b512 train, eager", "resnet20 b512 train, reduce_overhead",
                  "resnet20 b512 train, compile_graph_nchw", "resnet20 b128 bare step",
                  "resnet20 b128 loop: ours", "resnet20 b128 loop: tuned", "resnet20 b128 loop: reference",
                  "resnet50-v1.5 b256 bf16 train: ours", "resnet50-v1.5 b256 bf16 infer: ours",
                  "resnet50-v1.5 b256 bf16 train, compile only", "data bench: torchvision folder"):
        assert float(figure(label).replace(",", "")) > 0, label
    hand = [x for x in summary if x.startswith("  hand-written")]
    assert len(hand) == 2 and all("target >= 1.10x:" in x for x in hand), summary
    assert any(x.startswith("  eager step, where the time goes") and "backward" in x for x in summary), summary
    assert sum(x.startswith("  profile ") and "CPU: operators' own time" in x for x in summary) == 2, summary
    assert any("loop / bare step" in x for x in summary), summary
    assert any(x.startswith("resnet20 b512 train, compile_graph ") and "target >= 150,000: MISSED by" in x
               for x in summary), summary  # a CPU's few hundred img/s


@pytest.mark.slow  # about 35 s: the quick loop keeps under 90 s
def test_the_imagenet_path_script_runs_end_to_end_on_the_cpu(tmp_path):
    """benchmarks/imagenet_path.py (#35 step 3, a GPU call of its own) at tiny settings on the CPU: the generated
    folder and its shards, a `train --preset torchvision` on each, `bench` and `data bench` beside, one row each."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = str(Path(__file__).resolve().parent.parent / "benchmarks" / "imagenet_path.py")
    args = [sys.executable, script, "--device", "cpu", "--images", "32", "--classes", "2", "--val-per-class", "2",
            "--models", "resnet18", "--batch-size", "8", "--image-size", "48", "--epochs", "1", "--workers", "1",
            "--data-batches", "1", "--dir", str(tmp_path), "--timeout", "120"]
    bad = subprocess.run(args[:6] + ["--classes", "33"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--classes must be 1..--images (32)" in bad.stderr, bad.stderr
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("device: cpu; torch ") and "32 JPEGs and their shards ready" in lines[0]
    rows = [json.loads(x) for x in lines if x.startswith("{")]
    assert [(r["source"], r["model"]) for r in rows] == [("folder", "resnet18"), ("shards", "resnet18")]
    for r in rows:
        assert r["img_per_s"] > 0 and r["model_only_img_per_s"] > 0 and r["cores_used"] > 0, r
        assert r["data_bench_bound"] in ("input", "model") and 0 <= r["test_top1"] <= 1, r
    assert len(list((tmp_path / "folder-32x2-val2" / "train").rglob("*.JPEG"))) == 32
    assert (tmp_path / "shards-folder-32x2-val2" / "index.json").exists()
    assert any(x.startswith("resnet18        shards") for x in lines), lines


@pytest.mark.slow  # about 30 s: the quick loop keeps under 90 s
def test_the_gpu_pipeline_script_dry_runs_on_the_cpu(tmp_path, dry_run_env):
    """benchmarks/gpu_pipeline.sh (#34's one GPU call) with DRY=1: its seven CUDA tests are found (and skip on a
    CPU: a renamed test would leave six and fail the run), and each measuring script runs at tiny sizes."""
    import subprocess
    from pathlib import Path

    logs = tmp_path / "logs"
    script = str(Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_pipeline.sh")
    done = subprocess.run(["bash", script, str(logs)], capture_output=True, text=True, timeout=400,
                          env={**dry_run_env, "WORK": str(tmp_path / "work")})
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert out.splitlines()[-1] == "gpu_pipeline: dry run done, every command ran (nothing measured, no GPU test run)"
    assert (logs / "tests.txt").read_text().splitlines()[-1].startswith("7 skipped, ")
    assert (logs / "machine.txt").read_text().startswith("device: no CUDA device (dry run)")
    uploads = (logs / "uploads.txt").read_text()
    assert "prefetch off" in uploads and "prefetch on" in uploads and "on/off" in uploads, uploads
    made = [d.name for d in (tmp_path / "work" / "jpegs").iterdir()]
    assert made == ["64x2-64px-val32"], made  # one folder per shape: another size is never mixed in
    assert len(list((tmp_path / "work" / "jpegs" / made[0] / "train").rglob("*.JPEG"))) == 64
    assert "randaugment_2_9_ms" in (logs / "randaugment.txt").read_text()
    assert "interpolate antialias, per image:" in (logs / "antialias.txt").read_text()


def test_a_gpu_script_step_is_cut_to_the_budget_left_and_skipped_below_ten_seconds():
    """gpu_common.sh's `capped`: a step's limit is what is left of $BUDGET less 15 s for the summary, so that a
    device call (600 s at most) always ends with its summary; under 10 s left, 0 (the step is skipped)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    probe = ("source benchmarks/gpu_common.sh; BUDGET=100; "
             "for at in 0 25 50 74 75 76 200; do SECONDS=$at; capped 60; done; unset BUDGET; "
             "source benchmarks/gpu_common.sh; SECONDS=0; capped 600")
    done = subprocess.run(["bash", "-c", probe], cwd=root, capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == ["60", "60", "35", "11", "10", "0", "0", "555"], done.stdout + done.stderr


@pytest.mark.slow  # 3 s: the quick loop keeps under 90 s
def test_gpu_check_whose_budget_is_spent_skips_its_steps_and_still_prints_the_summary(tmp_path, fashion_dir,
                                                                                     dry_run_env):
    import subprocess
    from pathlib import Path

    script = str(Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh")
    done = subprocess.run(["bash", script, str(fashion_dir), str(tmp_path / "logs")], capture_output=True, text=True,
                          timeout=120, env={**dry_run_env, "WORK": str(tmp_path / "work"), "BUDGET": "20"})
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    names = ["pytest_cuda", "fashion_to_93", "bench_r20", "bench_r50v15_train", "bench_r50_infer", "flops_cuda"]
    assert [f"== {n}: skipped (BUDGET=20 s is spent)" for n in names] == [x for x in out.splitlines()
                                                                         if x.startswith("== ")], out
    summary = (tmp_path / "logs" / "summary.txt").read_text()
    assert all(f"{n:<20} skipped    0  (the budget was spent)" in summary for n in names), summary
    assert out.splitlines()[-1].startswith("gpu_check: dry run FAILED (6 failed: pytest_cuda(budget) "), out


def test_gpu_prepare_makes_the_folder_a_gpu_call_carries(tmp_path, fashion_dir):
    """benchmarks/gpu_prepare.sh, in a copy of the repository's layout: the Fashion-MNIST files copied into .gpu/,
    .gpu/ ignored by git once however often it runs, wheels already there kept (no pip call), no data refused."""
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / ".git" / "info").mkdir(parents=True)
    for name in ("gpu_prepare.sh", "gpu_common.sh"):
        shutil.copy(root / "benchmarks" / name, repo / "benchmarks" / name)
    (repo / ".gpu" / "whl").mkdir(parents=True)
    for name in ("fvcore-0.1.5-py3-none-any.whl", "webdataset-1.0.2-py3-none-any.whl"):
        (repo / ".gpu" / "whl" / name).write_bytes(b"kept")
    script = ["bash", str(repo / "benchmarks" / "gpu_prepare.sh")]
    missing = subprocess.run(script + [str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no Fashion-MNIST folder" in missing.stdout
    for _ in range(2):
        done = subprocess.run(script + [str(fashion_dir)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "2 wheels in .gpu/whl, Fashion-MNIST in .gpu/data/fashion-mnist; 30 MiB to carry" in done.stdout
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert (repo / ".gpu/data/fashion-mnist" / name).read_bytes() == (fashion_dir / name).read_bytes()
    assert (repo / ".git/info/exclude").read_text() == "/.gpu/\n"
    assert (repo / ".gpu/whl/fvcore-0.1.5-py3-none-any.whl").read_bytes() == b"kept"


@pytest.mark.slow  # about 3 s: the quick loop keeps under 90 s
def test_the_profile_counts_every_convolution_of_the_step_and_keeps_the_output_clean(cli, capfd):
    """`bench --profile` on CPU: resnet20's 19 convolutions, each once a step forward and once backward, the
    operators ranked by their own time, and none of the profiler's native start/stop lines on stderr."""
    out = cli.json("bench", "resnet20", "-b", "4", "--device", "cpu", "--warmup", "0", "--iters", "2",
                   "--repeats", "1", "--mode", "both", "--profile")
    train, infer = (r["profile"] for r in out["results"])
    assert train["kind"] == infer["kind"] == "cpu operators (self time)" and train["steps"] == 2
    calls = {k["name"]: k["calls_per_step"] for k in train["top"]}
    assert calls["aten::convolution_backward"] == 19 and calls["aten::mkldnn_convolution"] == 19, calls
    assert "aten::convolution_backward" not in {k["name"] for k in infer["top"]}
    for p in (train, infer):
        shares = [k["share"] for k in p["top"]]
        assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
        assert 0 < p["op_ms_per_step"] and p["ms_per_step"] > 0
    assert "profiler_st" not in capfd.readouterr().err


def test_busy_time_is_the_union_of_overlapping_kernels():
    from resnet_cli.step_profile import busy_us

    assert busy_us([]) == 0
    assert busy_us([(0, 10), (5, 15), (20, 30), (21, 22), (30, 31)]) == 26  # 0-15, 20-31


@pytest.mark.slow  # a bench at batch 256 on the CPU, 5-15 s
def test_a_cpu_step_that_cannot_fit_is_refused_or_halved_before_it_is_tried(cli, monkeypatch, tmp_path):
    """On the CPU an allocation past the memory left is no exception: the kernel kills the process (a gradflow at
    batch 99,999 was killed at 23 GB on a 24 GB machine). The step's memory is estimated first (`summary`'s
    training estimate): gradflow and train refuse in one line, bench halves its batch as it does on a GPU."""
    from resnet_cli import analysis
    from resnet_cli.models import build_model

    left = analysis.cpu_memory_left()
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    assert 0 < left <= int(meminfo["MemAvailable"].split()[0]) * 1024  # this machine's own figure, or its cgroup's
    per_image = analysis.memory(build_model("resnet20"), 32, 1, analysis.output_shapes(build_model("resnet20"), 32))
    monkeypatch.setattr(analysis, "cpu_memory_left", lambda: 512 * 2**20)  # a machine with 512 MiB left
    assert analysis.cpu_shortfall(build_model("resnet20"), 32, 64) is None
    why = analysis.cpu_shortfall(build_model("resnet20"), 32, 4096)
    need = per_image["training_estimate"] + 4095 * per_image["forward_activations"]
    assert why == f"one training step at batch 4,096 and 32x32 needs about {need / 2**30:.1f} GiB and 512 MiB are left"
    flow = cli("gradflow", "resnet20", "--batch-size", "4096")
    assert flow.exit_code == 2 and flow.stderr == f"error: --batch-size 4096: resnet20's {why} on this machine; use " \
                                                  "a smaller batch\n"
    train = cli("train", "--preset", "smoke", "--device", "cpu", "--batch-size", "4096", "--set",
                "data.synthetic_train=4096", "--run-dir", tmp_path / "runs")
    assert train.exit_code == 2 and f"train.batch_size 4096: resnet20's {why} on this machine" in train.stderr
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made
    out = cli.json("bench", "resnet20", "--mode", "train", "-b", "4096", "--warmup", "0", "--iters", "1",
                   "--repeats", "1", "--device", "cpu")
    (res,) = out["results"]
    assert res["batch_size"] == 256 and out["notes"] == [
        f"train: out of memory at batch {b}; retried at {b // 2}" for b in (4096, 2048, 1024, 512)]
    forward = analysis.inference_floor(build_model("resnet20"), 32, 4096)
    assert 512 * 2**20 < forward < 1024 * 2**20  # a forward pass at 4,096 does not fit either; at 2,048 it does
    out = cli.json("bench", "resnet20", "--mode", "infer", "-b", "4096", "--warmup", "0", "--iters", "1",
                   "--repeats", "1", "--device", "cpu")
    assert out["results"][0]["batch_size"] == 2048
    assert out["notes"] == ["infer: out of memory at batch 4096; retried at 2048"]
