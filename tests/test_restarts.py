"""Restarts: `--resume auto` (one command line for the first start and every restart), torchrun's elastic
restarts after a killed worker, and a two-node run on loopback (two torchrun agents)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def auto(smoke_args, tmp_path, *more) -> list[str]:
    return ["train", *smoke_args("cpu", 128, 32), "--run-dir", tmp_path / "runs", "--name", "r", "--resume", "auto",
            *more]


@pytest.mark.slow  # a few seconds: the quick loop keeps under 90 s
def test_resume_auto_starts_resumes_and_stops_with_one_command_line(cli, tmp_path, smoke_args, ckpts):
    """The same command, run four times (a job requeued after each epoch): the run starts under exactly its
    name, resumes twice, then reports it is finished (exit 0) without training; the weights equal an
    uninterrupted run's."""
    command = auto(smoke_args, tmp_path, "--epochs", "3", "--set", "run.stop_after_epochs=1")
    folder = tmp_path / "runs" / "r"
    for epochs in (1, 2, 3):
        result = cli(*command)
        assert result.exit_code == 0, result.output
        assert ckpts.load(folder / "last.pt")["epoch"] == epochs
        assert ("resuming" in result.stdout) == (epochs > 1)
    done = cli(*command)
    assert done.exit_code == 0 and done.stdout.startswith(f"{folder} is finished (3 epochs")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r"]  # never r-2
    whole = cli("train", *smoke_args("cpu", 128, 32), "--epochs", "3", "--run-dir", tmp_path, "--name", "whole")
    assert whole.exit_code == 0, whole.output
    ckpts.assert_same_weights(tmp_path / "whole" / "last.pt", folder / "last.pt")


@pytest.mark.slow  # 2.5 s on 2026-12-06's machine: the quick loop keeps under 90 s
def test_resume_auto_refuses_other_settings_naming_them(cli, tmp_path, smoke_args):
    assert cli(*auto(smoke_args, tmp_path, "--epochs", "1")).exit_code == 0
    other = cli(*auto(smoke_args, tmp_path, "--epochs", "1", "--lr", "0.5", "--set", "train.weight_decay=0.001"))
    assert other.exit_code == 2
    assert other.stderr.strip() == (
        f"error: --resume auto: {tmp_path / 'runs' / 'r'} was started with other settings: train.lr 0.05 (now 0.5), "
        "train.weight_decay 0.0001 (now 0.001); run the command it was started with, or choose another --name")
    preset = cli("train", "--preset", "cifar", "--device", "cpu", "--run-dir", tmp_path / "runs", "--name", "r",
                 "--resume", "auto", "--set", "data.dataset=synthetic")
    assert preset.exit_code == 2
    assert "was started with other settings: data.synthetic_test 32 (now 256), data.synthetic_train 128 (now 512), " \
           "data.val_split 0 (now 5000), train.batch_size 32 (now 128) and 5 more; " in preset.stderr
    longer = cli(*auto(smoke_args, tmp_path, "--epochs", "2"))  # the run's length may change, as with --resume
    assert longer.exit_code == 0 and "resuming" in longer.stdout


def test_resume_auto_never_takes_over_a_folder_it_did_not_start(cli, tmp_path, smoke_args):
    folder = tmp_path / "runs" / "r"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    result = cli(*auto(smoke_args, tmp_path, "--epochs", "1"))
    assert result.exit_code == 2
    assert f"{folder} has no last.pt to resume but holds notes.txt" in result.stderr
    assert (folder / "notes.txt").read_text() == "mine"
    (folder / "notes.txt").unlink()
    (folder / "config.yaml").write_text("what a start that died before its first checkpoint left\n")
    assert cli(*auto(smoke_args, tmp_path, "--epochs", "1")).exit_code == 0  # that is taken over
    assert (folder / "last.pt").exists()


# ---------------------------------------------------------------- torchrun: elastic restarts, two nodes

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def children(pid: int) -> list[int]:
    """Every descendant process of `pid` (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(c) for t in os.listdir(f"/proc/{p}/task")
                    for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def worker_of_rank(pid: int, rank: int) -> int | None:
    """The torchrun worker (a descendant of `pid`) whose environment says RANK=`rank`."""
    for child in children(pid):
        try:
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and any(e.startswith(b"TORCHELASTIC_RUN_ID=") for e in env):
            return child
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_restarts_the_group_after_a_killed_worker_and_finishes_exactly(tmp_path, proc, ckpts, smoke_args):
    """torchrun --max-restarts 1, 2 processes: rank 1 is SIGKILLed mid-epoch after a step checkpoint; torchrun
    restarts both with the same command line, `--resume auto` picks up last.pt, and the run ends with exactly
    the weights of an uninterrupted two-process run."""
    args = [*smoke_args("cpu", 256, 65, "train.log_interval=1", "train.checkpoint_every=3"), "--epochs", "2",
            "--run-dir", tmp_path, "--resume", "auto"]
    whole = subprocess.run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "resnet_cli", "train", *args,
                            "--name", "whole"], env=proc.env, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    cmd = [*TORCHRUN, "--standalone", "--nproc-per-node", "2", "--max-restarts", "1", "-m", "resnet_cli", "train",
           *args, "--name", "elastic"]
    job = subprocess.Popen(cmd, env=proc.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in job.stdout:
        if "epoch 2/2 step 5/8" in line:  # step 13; last.pt holds step 12 (every 3 steps)
            victim = worker_of_rank(job.pid, 1)
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            break
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err[-3000:]
    assert "resuming" in out  # the restarted group resumed
    got, want = ckpts.load(tmp_path / "elastic" / "last.pt"), ckpts.load(tmp_path / "whole" / "last.pt")
    assert got["step"] == want["step"] == 16 and got["epoch"] == 2
    for k in want["model"]:
        assert want["model"][k].equal(got["model"][k]), k


@pytest.mark.slow
@pytest.mark.parametrize("data", ["synthetic", "shards"])
def test_two_nodes_on_loopback_train_as_one_two_process_node(tmp_path, proc, ckpts, smoke_args, data):
    """Two torchrun agents (--nnodes 2, one process each, separate process trees) rendezvous over c10d on
    127.0.0.1; the run trains, each rank on its own share (of the data on the device, or of the shards: each
    rank reads its own), to the weights of a single-node 2-process run."""
    if data == "shards":
        pytest.importorskip("webdataset")
        from test_crops import write_folder

        write_folder(tmp_path / "f" / "train", classes=("a", "b"), per_class=16, size=(40, 32))
        write_folder(tmp_path / "f" / "val", classes=("a", "b"), per_class=3, size=(40, 32))
        converted = proc.run("data", "convert", tmp_path / "f", tmp_path / "s", "--shard-images", "4")
        assert converted.returncode == 0, converted.stderr
        args = ["--dataset", "shards", "--data-dir", tmp_path / "s", "--model", "resnet20", "--image-size", "16",
                "--workers", "1", "--batch-size", "8", "--device", "cpu", "--epochs", "2", "--run-dir",
                tmp_path / "runs"]
        tmp_path = tmp_path / "runs"
    else:
        args = [*smoke_args("cpu", 256, 65), "--epochs", "2", "--run-dir", tmp_path]
    single = subprocess.run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "resnet_cli", "train", *args,
                             "--name", "single"], env=proc.env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    port = free_port()
    node = [*TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "loopback", "-m", "resnet_cli", "train", *args,
            "--name", "nodes"]
    agents = [subprocess.Popen(node, env=proc.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True) for _ in range(2)]
    outs = [a.communicate(timeout=300) for a in agents]
    assert [a.returncode for a in agents] == [0, 0], [o[1][-2000:] for o in outs]
    assert sum(o[0].count("torchrun: 2 process(es), gloo") for o in outs) == 1  # global rank 0 alone reports
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nodes", "single"]
    a, b = ckpts.weights(tmp_path / "single" / "last.pt"), ckpts.weights(tmp_path / "nodes" / "last.pt")
    for k in a:
        assert a[k].equal(b[k]), k


@pytest.mark.slow
def test_two_nodes_restart_together_after_one_nodes_worker_dies(tmp_path, proc, ckpts, smoke_args):
    """#34 item 8: two torchrun agents (--nnodes 2, c10d on 127.0.0.1, --max-restarts 1). Node B's worker is
    SIGKILLed while node A's trains: B's agent restarts its worker (its TORCHELASTIC_RESTART_COUNT becomes 1), A's
    agent restarts its own for the membership change (its count stays 0). Both starts agree on one generation of
    keys, resume from last.pt with --resume auto within a minute, and end with the weights of an uninterrupted
    two-process run."""
    args = [*smoke_args("cpu", 256, 65, "train.log_interval=1", "train.checkpoint_every=3"), "--epochs", "2",
            "--run-dir", tmp_path, "--resume", "auto"]
    whole = subprocess.run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "resnet_cli", "train", *args,
                            "--name", "whole"], env=proc.env, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    port = free_port()
    node = [*TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--max-restarts", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "one-node-fails", "-m", "resnet_cli", "train",
            *args, "--name", "nodes"]
    agents = [subprocess.Popen(node, env=proc.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True) for _ in range(2)]
    try:
        last, deadline = tmp_path / "nodes" / "last.pt", time.monotonic() + 180
        while not (last.exists() and ckpts.load(last)["step"] >= 6):  # mid-epoch 1, a step checkpoint written
            assert time.monotonic() < deadline and all(a.poll() is None for a in agents), "no checkpoint came"
            time.sleep(0.1)
        victim = next(filter(None, (worker_of_rank(a.pid, 1) for a in agents)))
        restarts = [a for a in agents if worker_of_rank(a.pid, 1) == victim]  # node B's agent
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        outs = [a.communicate(timeout=150) for a in agents]  # before the fix: hung here
        took = time.monotonic() - killed_at
    finally:
        for a in agents:
            if a.poll() is None:
                os.killpg(a.pid, signal.SIGKILL)
    assert [a.returncode for a in agents] == [0, 0], [o[1][-2000:] for o in outs]
    assert len(restarts) == 1 and took < 90, took  # resumed and finished the second epoch within a minute or so
    assert sum(o[0].count("resuming") for o in outs) == 1  # global rank 0 alone reports the resume
    got, want = ckpts.load(last), ckpts.load(tmp_path / "whole" / "last.pt")
    assert got["step"] == want["step"] == 16
    for k in want["model"]:
        assert want["model"][k].equal(got["model"][k]), k


@pytest.mark.slow  # 2 s: the quick loop keeps under 90 s
def test_the_ranks_of_a_start_agree_on_its_generation_whatever_a_dead_start_left(tmp_path):
    """The handshake alone, on a real TCPStore: three ranks started again and again (rank 0 last), each start one
    new generation shared by all; a dead start's keys (its generation still published) are never taken."""
    import datetime
    import random
    import threading

    import torch.distributed as dist

    from resnet_cli.train.distributed import agree_on_generation

    server = dist.TCPStore("127.0.0.1", 0, 3, True, timeout=datetime.timedelta(seconds=30), wait_for_workers=False)
    seen = []
    for start in range(3):
        clients = [dist.TCPStore("127.0.0.1", server.port, 3, False, timeout=datetime.timedelta(seconds=30))
                   for _ in range(3)]
        got: dict[int, int] = {}

        def join(rank: int) -> None:
            time.sleep(0.15 if rank == 0 else random.random() * 0.05)  # the others read the dead start's number
            got[rank] = agree_on_generation(clients[rank], rank, 3, 20)

        threads = [threading.Thread(target=join, args=(r,)) for r in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(got.values())) == 1, got
        seen.append(got[0])
    assert seen == [1, 2, 3]


@pytest.mark.slow
def test_a_run_folder_only_one_node_sees_is_refused(tmp_path, proc, smoke_args):
    """Node-local run folders (simulated: each agent in its own working directory, a relative --run-dir) would
    leave checkpoints on global rank 0's node only: every rank stops with one line, before training."""
    port = free_port()
    node = [*TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "local", "-m", "resnet_cli", "train",
            *smoke_args("cpu", 64, 32), "--epochs", "1", "--run-dir", "runs", "--name", "r"]
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    agents = [subprocess.Popen(node, cwd=tmp_path / d, env=proc.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True) for d in ("a", "b")]
    outs = [a.communicate(timeout=300) for a in agents]
    assert all(a.returncode != 0 for a in agents)
    errs = "".join(o[1] for o in outs)
    assert errs.count("error: run folder runs/r was made by global rank 0 but other ranks do not see it: put "
                      "run.run_dir on a file system every node shares") == 2, errs[-3000:]
    assert not any((tmp_path / d / "runs" / "r" / "last.pt").exists() for d in ("a", "b"))
