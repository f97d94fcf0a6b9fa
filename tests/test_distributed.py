"""Distributed training under torchrun (gloo on CPU), and ImageNet-style image folders."""

from __future__ import annotations

import json

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet_cli import config as C
from resnet_cli.data import load_data, make_loader
from resnet_cli.speed import default_channels_last
from resnet_cli.models import build_model
from resnet_cli.train import tensorboard
from resnet_cli.train.schedule import LRSchedule

# gloo on CPU: two processes, whatever GPUs the machine has (NCCL with two ranks would need two GPUs)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


@pytest.fixture(scope="module")
def smoke2(smoke_args) -> list[str]:
    """Two epochs of 8 steps, 65 test images (not a multiple of 2: evaluation shards unevenly)."""
    return [*smoke_args("cpu", 256, 65), "--epochs", "2"]


def torchrun(proc, *args) -> subprocess.CompletedProcess:
    cmd = [*TORCHRUN, "-m", "resnet_cli", "train", *map(str, args)]
    return subprocess.run(cmd, env=proc.env, capture_output=True, text=True, timeout=300)


def params(ckpts, path):
    return {k: v for k, v in ckpts.weights(path).items() if "running" not in k and "num_batches" not in k}


def emulate_two_ranks(cfg: C.Config) -> dict[str, torch.Tensor]:
    """What DDP computes, in one process: each rank's shard through the model on its own (BatchNorm
    statistics per shard), gradients averaged over the two, one SGD step."""
    data = load_data(cfg.data)
    cfg = C.build_config({**C.flatten(cfg.to_dict(), "cfg"), "model.num_classes": 10, "model.in_channels": 3})
    torch.manual_seed(cfg.run.seed)
    model = build_model(**cfg.model.architecture())
    nhwc = default_channels_last(torch.device("cpu"))  # as the trainer's CPU default
    model.to(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    t = cfg.train
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                          foreach=True)
    shards = [make_loader(data, cfg.data, "train", t.batch_size // 2, torch.device("cpu"), training=True,
                          seed=cfg.run.seed, channels_last=nhwc, rank=r, world=2) for r in range(2)]
    steps_per_epoch = len(shards[0])
    schedule = LRSchedule(t, t.epochs * steps_per_epoch, steps_per_epoch, 20, "cifar")
    step = 0
    for epoch in range(1, t.epochs + 1):
        model.train()
        for (x0, y0), (x1, y1) in zip(shards[0].batches(epoch), shards[1].batches(epoch)):
            for g in opt.param_groups:
                g["lr"] = schedule(step)
            opt.zero_grad()
            for x, y in ((x0, y0), (x1, y1)):
                (torch.nn.functional.cross_entropy(model(x), y) / 2).backward()
            opt.step()
            step += 1
    return {k: v for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}


def torchrun_until_sigterm(env, args, run_dir, name: str, marker: str) -> subprocess.CompletedProcess:
    """A two-process run that gets SIGTERM (sent to torchrun, as SLURM or Kubernetes would) at a progress line."""
    import signal

    cmd = [*TORCHRUN, "-m", "resnet_cli", "train", *args, "--run-dir", str(run_dir), "--name", name,
           "--set", "train.log_interval=2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if marker in line:
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, proc, ckpts, smoke2):
    """An uninterrupted two-process run, and one stopped by SIGTERM mid-epoch 2 and resumed."""
    runs = tmp_path_factory.mktemp("ddp")
    full = torchrun(proc, *smoke2, "--run-dir", runs, "--name", "full", "--logger", "jsonl")
    part = torchrun_until_sigterm(proc.env, smoke2, runs, "part", "epoch 2/2 step 2/8")
    stopped = ckpts.load(runs / "part" / "last.pt") if (runs / "part" / "last.pt").exists() else None
    resumed = torchrun(proc, "--resume", runs / "part")
    return runs, full, (part, stopped), resumed


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_at_one_step(ddp_runs):
    """torchrun forwards SIGTERM to its workers; they agree on a stop step (the next log interval), rank 0
    writes last.pt there, nobody hangs in a collective, and all exit (the resume is test_ddp_resume_is_exact)."""
    runs, _, (part, stopped), _ = ddp_runs
    assert part.returncode != 0
    assert part.stderr.count(f"(SIGTERM); resume with: resnet train --resume {runs / 'part'}") == 1, \
        part.stderr[-3000:]
    assert stopped["epoch"] == 1 and stopped["step"] in (10, 12) and stopped["partial"]["batch"] == stopped["step"] - 8


@pytest.mark.slow
def test_two_process_gloo_run_writes_one_run_folder(ddp_runs):
    runs, full, _, _ = ddp_runs
    assert full.returncode == 0, full.stderr[-3000:]
    assert sorted(p.name for p in runs.iterdir()) == ["full", "part"]  # rank 1 wrote nothing of its own
    names = {p.name for p in (runs / "full").iterdir()}
    events = {n for n in names if n.startswith("events.out.tfevents.")}
    assert names - events == {"config.yaml", "metrics.csv", "last.pt", "best.pt", "metrics.jsonl"}
    assert len(events) == (1 if tensorboard.available() else 0)  # rank 0 alone logs
    logged = [json.loads(ln)["event"] for ln in (runs / "full" / "metrics.jsonl").read_text().splitlines()]
    assert logged == ["start", "epoch", "epoch", "end"]  # once: rank 1 logs to no tracker
    assert full.stdout.count("run folder:") == 2  # start and end, from rank 0 only
    ckpt = torch.load(runs / "full" / "last.pt", weights_only=True)
    assert ckpt["step"] == 16  # 256 images / global batch 32 = 8 steps per epoch, as on one process


@pytest.mark.slow
def test_ddp_weights_match_the_exact_two_shard_computation(ddp_runs, ckpts):
    runs, full, _, _ = ddp_runs
    assert full.returncode == 0
    cfg = C.resolve("smoke", flags={"data.synthetic_train": 256, "data.synthetic_test": 65, "train.epochs": 2,
                                    "run.device": "cpu"})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun workers (ENV): kernels sum in a thread-dependent order
    try:
        expected = emulate_two_ranks(cfg)
    finally:
        torch.set_num_threads(threads)
    got = params(ckpts, runs / "full" / "last.pt")
    for k in expected:  # float summation order differs (all-reduce vs accumulation): rounding only
        assert torch.allclose(got[k], expected[k], rtol=1e-4, atol=1e-5), k


@pytest.mark.slow
def test_ddp_vs_single_process_differs_only_by_batchnorm_statistics(ddp_runs, cli, tmp_path, ckpts, smoke2):
    """Same global batch on one process: BatchNorm normalises 32 images instead of 2 x 16, so the
    weights drift apart a little; we allow 10% relative L2 (measured: about 2.6%)."""
    runs, full, _, _ = ddp_runs
    single = cli("train", *smoke2, "--run-dir", tmp_path, "--name", "single", "--json")
    assert single.exit_code == 0
    a, b = params(ckpts, runs / "full" / "last.pt"), params(ckpts, tmp_path / "single" / "last.pt")
    va, vb = torch.cat([a[k].flatten() for k in a]), torch.cat([b[k].flatten() for k in a])
    assert (va - vb).norm() / vb.norm() < 0.10


@pytest.mark.slow
def test_ddp_resume_is_exact(ddp_runs, ckpts):
    """Resumed from the mid-epoch checkpoint SIGTERM left, the run ends with the uninterrupted run's weights."""
    runs, full, _, resumed = ddp_runs
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = params(ckpts, runs / "full" / "last.pt"), params(ckpts, runs / "part" / "last.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _eval_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from resnet_cli.train.distributed import TorchrunProcess
    from resnet_cli.train.evaluate import evaluate

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    ctx = TorchrunProcess(rank, world, rank, torch.device("cpu"))
    cfg = C.resolve("smoke", flags={"data.synthetic_test": 65})
    data = load_data(cfg.data)
    torch.manual_seed(0)
    model = build_model("resnet20")
    loader = make_loader(data, cfg.data, "test", 16, torch.device("cpu"), training=False, rank=rank, world=world)
    res = evaluate(model, loader, 10, torch.device("cpu"), all_reduce=ctx.all_reduce)
    if rank == 0:
        torch.save({"count": res.count, "top1": res.top1, "loss": res.loss, "class_counts": res.class_counts}, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_eval_across_two_ranks_counts_every_sample_once(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "eval.pt"
    mp.spawn(_eval_worker, args=(2, f"file://{tmp_path / 'store'}", str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    cfg = C.resolve("smoke", flags={"data.synthetic_test": 65})
    data = load_data(cfg.data)
    torch.manual_seed(0)
    from resnet_cli.train.evaluate import evaluate

    single = evaluate(build_model("resnet20"), make_loader(data, cfg.data, "test", 16, torch.device("cpu"),
                                                           training=False), 10, torch.device("cpu"))
    assert got["count"] == single.count == 65
    assert got["top1"] == single.top1 and got["class_counts"] == single.class_counts
    assert got["loss"] == pytest.approx(single.loss, rel=1e-6)


@pytest.mark.slow
def test_global_batch_must_divide_over_processes(tmp_path, proc):
    result = torchrun(proc, "--preset", "smoke", "--device", "cpu", "--batch-size", "33", "--run-dir", tmp_path)
    assert result.returncode != 0
    assert "must divide evenly over 2 processes" in result.stderr


# ---------------------------------------------------------------- image folders

def make_tree(root, classes=("cat", "dog", "emu"), per_class=3, size=(40, 30)):
    from PIL import Image

    for split in ("train", "val"):
        for ci, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                color = (ci * 100, i * 60, 200)
                Image.new("RGB", size, color).save(root / split / c / f"{i}.png")


def test_imagefolder_shapes_labels_and_class_order(tmp_path):
    pytest.importorskip("PIL")
    make_tree(tmp_path)
    cfg = C.resolve(flags={"data.dataset": "imagefolder", "data.data_dir": str(tmp_path), "data.image_size": 24,
                           "data.workers": 0})
    data = load_data(cfg.data)
    assert data.classes == ["cat", "dog", "emu"] and data.num_classes == 3 and data.channels == 3
    train = make_loader(data, cfg.data, "train", 4, torch.device("cpu"), training=True, seed=1)
    batches = list(train.batches(1))
    assert len(train) == 2 and all(x.shape == (4, 3, 24, 24) and x.dtype == torch.float32 for x, _ in batches)
    val = make_loader(data, cfg.data, "test", 4, torch.device("cpu"), training=False)
    labels = torch.cat([y for _, y in val.batches()])
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    x, _ = next(val.batches())
    # a flat-colour image stays flat through resize + center crop: red channel = class colour
    red = x[:, 0] * data.input.std[0] + data.input.mean[0]
    assert torch.allclose(red[0], torch.zeros(24, 24), atol=1e-6)


def test_imagefolder_bad_data_is_named(cli, tmp_path):
    pytest.importorskip("PIL")
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "cat").mkdir(parents=True)
    result = cli("train", "--set", "data.dataset=imagefolder", "--data-dir", tmp_path / "empty")
    assert result.exit_code == 2 and "holds no images" in result.stderr
    make_tree(tmp_path / "bad")
    (tmp_path / "bad" / "val" / "dog" / "1.png").write_bytes(b"not a png")
    cfg = C.resolve(flags={"data.dataset": "imagefolder", "data.data_dir": str(tmp_path / "bad"),
                           "data.image_size": 24, "data.workers": 0})
    data = load_data(cfg.data)
    from resnet_cli.errors import BadInput

    val = make_loader(data, cfg.data, "test", 4, torch.device("cpu"), training=False)
    with pytest.raises(BadInput, match=r"cannot decode image .*val/dog/1.png"):
        list(val.batches())


@pytest.mark.default_device
def test_imagefolder_training_run(cli, tmp_path):
    pytest.importorskip("PIL")
    make_tree(tmp_path, per_class=4)
    result = cli("train", "--set", "data.dataset=imagefolder", "--data-dir", tmp_path, "--set", "data.image_size=32",
                 "--set", "data.workers=0", "--batch-size", "4", "--epochs", "1", "--run-dir", tmp_path / "runs",
                 "--json")
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_torchrun_runs_the_console_script(tmp_path, proc):
    script = os.path.join(os.path.dirname(sys.executable), "resnet")
    first_line = Path(script).read_bytes().split(b"\n", 1)[0] if os.path.isfile(script) else b""
    if not first_line.startswith(b"#!") or b"python" not in first_line:
        pytest.skip("no Python console script next to the interpreter")
    cmd = [*TORCHRUN, script,
           "train", "--preset", "smoke", "--device", "cpu", "--epochs", "1", "--set", "data.synthetic_train=128",
           "--run-dir", str(tmp_path)]
    result = subprocess.run(cmd, env=proc.env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["resnet20-synthetic"]


def test_no_train_option_is_taken_by_torchrun():
    """`torchrun ... -m resnet_cli train OPTIONS`: torchrun's argparse reads an option that abbreviates one of its own
    (`--log` would match `--log-dir`, `--logs-specs`) as its own and fails, so none of ours may be such a prefix."""
    import typer.main
    from torch.distributed.run import get_args_parser

    from resnet_cli.cli import app

    theirs = [o for a in get_args_parser()._actions for o in a.option_strings if o.startswith("--")]
    command = typer.main.get_command(app).commands["train"]
    ours = [o for p in command.params if p.param_type_name == "option" for o in p.opts if o.startswith("--")]
    assert "--preset" in ours and len(ours) > 30  # typer's own click (vendored): a click.Option test saw none
    taken = sorted(o for o in ours if any(t.startswith(o) for t in theirs))
    assert not taken, f"torchrun would take these as its own options: {taken}"
