"""Defects a reading of the CUDA and torchrun paths found, each reproduced where its cause does not need a GPU:
on CPU, with gloo for the ones between ranks. What needs CUDA itself is in test_gpu.py."""

from __future__ import annotations

import datetime
import os
import signal
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from conftest import NanOnSteps, last_json

from resnet_cli import config as C
from resnet_cli import speed as speed_module
from resnet_cli.errors import Interrupted
from resnet_cli.speed import Speed
from resnet_cli.train.distributed import SingleProcess
from resnet_cli.train.step import TrainStep, make_optimizer

SHORT = {"data.synthetic_train": 64, "data.synthetic_test": 16, "train.batch_size": 16, "train.epochs": 2,
         "train.log_interval": 2}  # 4 steps per epoch


class OtherRank(SingleProcess):
    """One process that is not global rank 0: it never writes the run's files."""

    @property
    def is_main(self) -> bool:
        return False


def test_every_rank_restarts_the_checkpoint_every_clock(make_trainer):
    """Ranks other than 0 write nothing, but their clock of the last save must move with rank 0's, or once
    train.checkpoint_every has passed they find a save due (and sync) at every step."""
    trainer = make_trainer(**SHORT, **{"train.checkpoint_every": "3"})
    trainer.run.process = OtherRank(torch.device("cpu"), rank=1)
    trainer.state.step = 5
    assert trainer._checkpoint_due()
    trainer.save()
    assert not trainer._checkpoint_due() and not (trainer.run_dir / "last.pt").exists()
    trainer.state.step = 8
    assert trainer._checkpoint_due()


def test_a_signal_after_the_stop_agreement_waits_for_the_next_one(make_trainer):
    """A signal that lands right after the epoch-end all-reduce must not stop this rank alone (the others
    agreed to go on and would hang at their next collective): it is carried to the next agreement."""
    trainer = make_trainer(**SHORT)
    stats = trainer.train_epoch()

    class LateSignal(SingleProcess):
        def max(self, value: int) -> int:
            agreed = int(value)
            trainer.stop_signal = signal.SIGTERM  # the handler runs between the all-reduce and the decision
            return agreed

    trainer.run.process = LateSignal(torch.device("cpu"))
    trainer.end_epoch(stats)  # no Interrupted: every rank agreed on 0
    assert trainer.state.epoch == 1 and trainer.stop_signal == signal.SIGTERM
    trainer.run.process = SingleProcess(torch.device("cpu"))
    with pytest.raises(Interrupted, match=r"at epoch 2, step 5 \(SIGTERM\)"):  # acted on at the next agreement
        trainer.train_epoch()


def _skip_worker(rank: int, world: int, store: str, run_dir: str, out: str) -> None:
    from resnet_cli.train.loop import Trainer

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), TORCHELASTIC_RUN_ID="test")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    cfg = C.resolve("smoke", flags={**SHORT, "train.epochs": 1, "train.skip_nonfinite": 2, "run.device": "cpu",
                                    "run.run_dir": run_dir, "train.log_interval": 1})
    trainer = Trainer.for_config(cfg)
    if rank == 1:  # one rank alone sees a NaN loss at its second step
        trainer.run.step.criterion = NanOnSteps({2})
    trainer.open_run_dir()
    trainer.fit()
    torch.save({"skipped": trainer.state.skipped, "step": trainer.state.step,
                "weights": trainer.run.model.state_dict()}, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_skip_nonfinite_is_agreed_by_every_rank(tmp_path):
    """train.skip_nonfinite under DDP: when one rank's loss is NaN, every rank skips that step (a rank that skipped
    its backward alone would leave the others' gradient all-reduce unmatched: wrong weights or a hang)."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "rank")
    mp.spawn(_skip_worker, args=(2, f"file://{tmp_path / 'store'}", str(tmp_path / "runs"), out), nprocs=2,
             join=True)
    r0, r1 = (torch.load(f"{out}.{r}", weights_only=True) for r in range(2))
    assert r0["skipped"] == r1["skipped"] == 1 and r0["step"] == r1["step"] == 4
    for k, v in r0["weights"].items():
        if "running" not in k and "num_batches" not in k:  # BatchNorm statistics are each rank's own
            assert torch.equal(v, r1["weights"][k]), k  # the ranks stayed one model


def test_resumed_optimizer_keeps_this_process_kernels_and_the_weights_layout(make_trainer):
    """A checkpoint's optimizer state brings its own kernel flags (a CPU run saved foreach; a CUDA resume must run
    fused) and its momentum buffers in the saved memory layout (train.channels_last may change on a resume)."""
    trainer = make_trainer(**{**SHORT, "train.epochs": 1, "train.channels_last": "on"})
    trainer.fit()
    ckpt = trainer.checkpoint()
    for group in ckpt["optimizer"]["param_groups"]:
        group["foreach"] = False  # as if saved where the kernels were chosen otherwise
    fresh = make_trainer(**SHORT, **{"train.channels_last": "off"}, open_dir=False)
    fresh.restore(ckpt)
    opt = fresh.run.step.optimizer
    assert all(g["foreach"] is True for g in opt.param_groups)
    saved = trainer.run.step.optimizer.state
    pairs = [(p, q) for p, q in zip(fresh.run.model.parameters(), trainer.run.model.parameters()) if p.ndim == 4]
    assert pairs and all(p.is_contiguous() and not q.is_contiguous() for p, q in pairs)
    for p, q in pairs:
        buf = opt.state[p]["momentum_buffer"]
        assert buf.stride() == p.stride()  # the weights' layout, not the saved channels_last one
        assert torch.equal(buf, saved[q]["momentum_buffer"])  # the same values


def test_fp16_gradient_logging_sees_unscaled_gradients():
    """Gradient norms are read between backward and the update: under fp16 the gradients are still multiplied by
    the loss scale there, so they must be unscaled first (and not twice with gradient clipping)."""
    from resnet_cli.models import build_model

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    seen = {}
    for scaled in (False, True):
        torch.manual_seed(1)
        model = build_model("resnet20")
        t = C.TrainConfig(grad_clip=5.0)
        step = TrainStep(model, make_optimizer(model, t, cpu), Speed("fp32", False, False), cpu, grad_clip=5.0)
        if scaled:
            step.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
        step(x, y, 0.1, after_backward=lambda s=scaled: seen.__setitem__(s, model.fc.weight.grad.norm().item()))
        seen[f"w{scaled}"] = model.fc.weight.detach().clone()
    assert seen[True] == pytest.approx(seen[False], rel=1e-4)  # not 4096x
    assert torch.allclose(seen["wTrue"], seen["wFalse"], atol=1e-6)  # clipping unscaled once


def test_timing_on_a_second_gpu_records_on_that_gpus_stream(monkeypatch):
    """`bench` and `flops --device cuda:1` time with CUDA events; an event records on the current device's stream,
    so the device being timed must be made current (else cuda:0's idle stream is timed)."""
    from resnet_cli.timing import time_fn

    current = {"index": 0}
    recorded = []

    class Device:
        def __init__(self, dev):
            self.index = torch.device(dev).index

        def __enter__(self):
            self.prev, current["index"] = current["index"], self.index

        def __exit__(self, *exc):
            current["index"] = self.prev

    class Event:
        def __init__(self, enable_timing=False):
            pass

        def record(self):
            recorded.append(current["index"])

        def synchronize(self):
            pass

        def elapsed_time(self, other):
            return 1.0

    monkeypatch.setattr(torch.cuda, "device", Device)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    t = time_fn(lambda: None, torch.device("cuda", 1), warmup=1, iters=2, repeats=3)
    assert t.repeats == 3 and recorded == [1] * 6


def test_a_dynamo_error_other_than_the_backends_falls_back_under_auto(cli, tmp_path, monkeypatch, smoke_args):
    """Under compile auto, torch.compile failing while tracing (not only in its backend) costs one line, and the
    run goes on eagerly; under `on` it is an error."""
    from torch._dynamo.exc import InternalTorchDynamoError

    monkeypatch.setattr(speed_module, "cpp_compiler", lambda: "g++")

    def failing(module, **kwargs):
        def call(*args, **kw):
            raise InternalTorchDynamoError("simulated: tracing failed")
        return call

    monkeypatch.setattr(torch, "compile", failing)
    args = [*smoke_args("cpu", 64, 32, "train.compile_min_steps=1"), "--batch-size", "32", "--run-dir", tmp_path]
    run = cli("train", *args, "--name", "auto")
    assert run.exit_code == 0, run.output
    assert run.stdout.count("torch.compile failed (InternalTorchDynamoError: simulated: tracing failed)") == 1
    strict = cli("train", *args, "--name", "on", "--set", "train.compile=on")
    assert strict.exit_code == 1
    assert strict.stderr.startswith("error: torch.compile failed (InternalTorchDynamoError")


def test_deterministic_switch_reaches_the_backends(make_trainer):
    trainer = make_trainer(**SHORT, **{"train.deterministic": True})
    try:
        assert trainer.run.speed.deterministic and torch.are_deterministic_algorithms_enabled()
        assert "deterministic" in trainer.run.speed.describe()
    finally:
        Speed("fp32", False, False).configure_backends(torch.device("cpu"))  # the process-wide default again
    assert not torch.are_deterministic_algorithms_enabled()


# ---------------------------------------------------------------- train.cuda_graphs on CPU (train/graphs.py)
def test_cuda_graphs_switch_is_inert_on_cpu_and_refused_when_forced(cli, tmp_path, smoke_args):
    run = cli("train", *smoke_args("cpu", 64, 16), "--batch-size", "16", "--run-dir", tmp_path, "--json")
    assert run.exit_code == 0, run.output
    assert "CUDA graphs" not in run.stdout
    forced = cli("train", *smoke_args("cpu", 64, 16, "train.cuda_graphs=on"), "--run-dir", tmp_path)
    assert forced.exit_code == 2
    assert forced.stderr.strip() == "error: train.cuda_graphs on needs a CUDA device; set it to auto or off"
    assert last_json(run.stdout)["cuda_graph_replays"] is None  # graphs off: nothing replayed, and not 0


def test_cuda_graphs_rule():
    from resnet_cli.train.graphs import resolve

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    plain = dict(precision="bf16", torchrun=False, accum_steps=1, skip_nonfinite=0, compile_mode="default", compile=True)
    assert resolve("auto", cuda, **plain) and not resolve("auto", cpu, **plain) and not resolve("off", cuda, **plain)
    for change in ({"torchrun": True}, {"accum_steps": 2}, {"precision": "fp16"}, {"skip_nonfinite": 1},
                   {"compile_mode": "reduce-overhead"}):
        assert not resolve("auto", cuda, **{**plain, **change}), change
        with pytest.raises(Exception, match="train.cuda_graphs on needs"):
            resolve("on", cuda, **{**plain, **change})
    assert resolve("auto", cuda, **{**plain, "compile_mode": "reduce-overhead", "compile": False})


def test_a_failed_capture_falls_back_to_the_plain_step_with_one_line(make_trainer, monkeypatch):
    """The graph path's warm-up steps are real steps; a capture that fails costs one line, and the run trains on
    with the plain step, to exactly the weights of a run that never tried."""
    from resnet_cli.train.graphs import StepGraph, fallback_message

    class Broken:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("simulated: operation not permitted when stream is capturing")

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Broken)
    lines = []
    flags = {**SHORT, "train.epochs": 2}
    tried = make_trainer(**flags)
    tried.run.step.graph = StepGraph(tried.run.step, lambda exc: lines.append(fallback_message(exc)))
    tried.fit()
    assert lines == ["CUDA graph capture failed (RuntimeError: simulated: operation not permitted when stream is "
                     "capturing); continuing without it. Set train.cuda_graphs=off to skip the attempt."]
    assert tried.run.step.graph.failed and tried.state.step == 8
    plain = make_trainer(**flags, **{"run.name": "plain"})
    plain.fit()
    for (k, a), b in zip(tried.run.model.state_dict().items(), plain.run.model.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.slow
def test_gpu_check_shards_split_the_selection_without_loss_or_overlap():
    """benchmarks/gpu_check.sh runs the CUDA tests as parallel `--shard I/N` processes: together they select each
    test once, and the tests of one module-scoped fixture share a shard."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def ids(*extra):
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                              "-m", "cuda or default_device", *extra, "tests"], cwd=root, capture_output=True,
                             text=True, timeout=120)
        return [ln for ln in out.stdout.splitlines() if "::" in ln]

    whole = ids()
    shards = [ids("--shard", f"{i}/3") for i in range(3)]
    assert len(whole) >= 20 and sorted(sum(shards, [])) == sorted(whole)
    users = [i for i, s in enumerate(shards) for t in s if "of_a_cuda_trained_run" in t or "init_from_a_run" in t]
    assert len(users) == 4 and len(set(users)) == 1  # the module's cuda_run fixture is built once
    bad = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "--shard", "3/3", "tests/test_gpu.py"],
                         cwd=root, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 4 and "--shard takes I/N with 0 <= I < N, got '3/3'" in bad.stderr


@pytest.mark.slow
def test_under_xdist_loadgroup_a_shared_fixtures_tests_run_on_one_worker():
    """gpu_check.sh runs the CUDA tests under pytest-xdist (`-n 4 --dist loadgroup`) where it is installed: the
    tests of one module-scoped fixture are one group, sent to one worker (the fixture is built once), and the
    others go to whichever worker is free. Checked on test_bad_input.py, whose `files` fixture is module-scoped
    and used by all its tests but one."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("xdist")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p",
                           "no:cacheprovider", "tests/test_bad_input.py"], cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    ran = re.findall(r"^\[(gw\d)\] \[ *\d+%\] PASSED (.+?) *$", done.stdout, re.M)
    grouped = [worker for worker, test in ran if "::test_bad_input[" in test]  # the tests of the `files` fixture
    assert len(grouped) >= 30 and len(set(grouped)) == 1, ran  # without the scheduler they spread over both


def test_a_stop_signal_during_the_capture_stops_the_run(monkeypatch):
    """#34 item 10: `Interrupted` (SIGTERM, Ctrl-C at a step boundary) raised while the graph is captured is a stop,
    not a failed capture: it propagates, and no fallback line is printed. Other failures still fall back."""
    from types import SimpleNamespace

    from resnet_cli.errors import Interrupted
    from resnet_cli.train import graphs

    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    step = SimpleNamespace(device=torch.device("cpu"), optimizer=opt,
                           plain=lambda x, y, lr: (net(x).sum(), net(x)))
    fell_back = []
    graph = graphs.StepGraph(step, on_fallback=fell_back.append)
    x, y = torch.randn(4, 2), torch.zeros(4, dtype=torch.long)
    for _ in range(graphs.WARMUP):
        assert graph.run(x, y, 0.1) is not None  # the warm-up steps are plain ones

    def stopped(*args):
        raise Interrupted("stopped by SIGTERM at step 4", 15)

    monkeypatch.setattr(graph, "_capture", stopped)
    with pytest.raises(Interrupted):
        graph.run(x, y, 0.1)
    assert fell_back == [] and graph.failed  # no "capture failed" line; no capture is tried again

    other = graphs.StepGraph(step, on_fallback=fell_back.append)
    other.calls = graphs.WARMUP
    monkeypatch.setattr(other, "_capture", lambda *a: (_ for _ in ()).throw(RuntimeError("operation not permitted")))
    assert other.run(x, y, 0.1) is None and len(fell_back) == 1

    class OutOfMemoryError(RuntimeError):
        pass

    assert graphs.fallback_message(OutOfMemoryError("CUDA out of memory")).startswith(
        "CUDA graph capture ran out of device memory")


def test_a_capture_is_announced_once_and_its_replays_counted(monkeypatch):
    """#34 item 1's log: after the warm-up the capture is said once (train prints graphs.CAPTURED), and every step
    that replays is counted (train's result: cuda_graph_replays); a batch of another shape is not a replay."""
    from types import SimpleNamespace

    from resnet_cli.train import graphs

    net = torch.nn.Linear(2, 2)
    step = SimpleNamespace(device=torch.device("cpu"), optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                           plain=lambda x, y, lr: (net(x).sum(), net(x)))
    said = []
    graph = graphs.StepGraph(step, on_capture=lambda: said.append(graphs.CAPTURED))

    def capture(x, y, lr):  # what _capture leaves behind, without CUDA
        graph.static = {"x": torch.empty_like(x), "y": torch.empty_like(y), "lr": torch.tensor(0.0),
                        "loss": torch.tensor(1.0), "logits": torch.zeros(len(x), 2)}
        graph.graph = SimpleNamespace(replay=lambda: None)

    monkeypatch.setattr(graph, "_capture", capture)
    x, y = torch.randn(4, 2), torch.zeros(4, dtype=torch.long)
    for _ in range(graphs.WARMUP + 5):
        assert graph.run(x, y, 0.1) is not None
    assert graph.run(torch.randn(3, 2), torch.zeros(3, dtype=torch.long), 0.1) is None  # the plain step's
    assert said == [graphs.CAPTURED] and graph.replays == 5
    assert "replays it" in graphs.CAPTURED and len(graphs.CAPTURED) < 120


def test_a_plain_step_out_of_memory_beside_the_graph_releases_it_and_runs_again(monkeypatch):
    """#34 item 5: the captured graph's pool holds a second set of activations; a plain step after the capture (a
    batch of another shape) that runs out of memory drops the graph, says so once with the pool's size, and runs
    again without it; later steps are plain. An out-of-memory error with no graph to release is the run's."""
    from resnet_cli.config import TrainConfig
    from resnet_cli.speed import Speed
    from resnet_cli.train import graphs
    from resnet_cli.train.step import TrainStep, make_optimizer

    cpu = torch.device("cpu")
    net = torch.nn.Linear(4, 3)
    step = TrainStep(net, make_optimizer(net, TrainConfig(), cpu), Speed("fp32", False, False), cpu)
    released = []
    step.graph = graph = graphs.StepGraph(step, on_release=released.append)

    def capture(x, y, lr):  # what _capture leaves behind, without CUDA
        graph.static = {"x": torch.empty_like(x), "y": torch.empty_like(y), "lr": torch.tensor(0.0),
                        "loss": torch.tensor(1.0), "logits": torch.zeros(len(x), 3), "grads": []}
        graph.graph, graph.pool_bytes = SimpleNamespace(replay=lambda: None), 3 * 2**30

    monkeypatch.setattr(graph, "_capture", capture)
    x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    for _ in range(graphs.WARMUP + 2):
        step(x, y, 0.1)
    assert graph.replays == 2
    real, calls = step.forward_loss, []

    def short_of_memory(xb, yb):
        calls.append(len(xb))
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(xb, yb)

    monkeypatch.setattr(step, "forward_loss", short_of_memory)
    out = step(torch.randn(5, 4), torch.zeros(5, dtype=torch.long), 0.1)
    assert out.updated and out.logits.shape == (5, 3) and calls == [5, 5]
    assert released == [3 * 2**30] and graph.failed and graph.graph is None
    assert graphs.released_message(released[0]).startswith(
        "a step of another batch shape ran out of device memory beside the CUDA graph (whose pool holds 3.0 GiB)")
    step(x, y, 0.1)
    assert graph.replays == 2 and calls == [5, 5, 8]  # plain from now on
    calls.clear()
    with pytest.raises(torch.cuda.OutOfMemoryError):  # nothing left to release: the run's error, as before
        monkeypatch.setattr(step, "forward_loss", lambda xb, yb: (_ for _ in ()).throw(
            torch.cuda.OutOfMemoryError("CUDA out of memory")))
        step(x, y, 0.1)


@pytest.mark.slow  # a second of warm-up and capture: the quick loop keeps under 90 s
def test_bench_reports_the_step_that_ran_when_the_capture_falls_back(monkeypatch):
    """#34 item 5: `bench --cuda-graphs` whose capture fails times the plain step; it must say so (cuda_graphs
    false, the reason in a note), not report a graphed step. The capture is made to fail as on a GPU."""
    import dataclasses

    from resnet_cli.bench import BenchConfig, measure
    from resnet_cli.speed import Speed

    class Broken:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("simulated: operation not permitted when stream is capturing")

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Broken)
    cpu = torch.device("cpu")
    speed = dataclasses.replace(Speed.resolve(cpu, compile="off"), cuda_graphs=True)
    res = measure("resnet20", BenchConfig("train", 4, 16, speed, 1, 1, 1), cpu, 40_000_000)
    assert res["cuda_graphs"] is False and res["cuda_graphs_fell_back"] is True
    assert res["cuda_graphs_note"].startswith("CUDA graph capture failed (RuntimeError: simulated")
