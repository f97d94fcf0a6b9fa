"""Experiment trackers (#38): JSON Lines, a real MLflow server on 127.0.0.1 (and MLflow's file store), W&B in offline
mode read back from its own run file. Rank 0 alone logs (tests/test_distributed.py counts TensorBoard's files the
same way); a resume continues the same tracker run; a tracker that fails costs one line, not the run."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ENV

SMOKE = ["--preset", "smoke", "--device", "cpu", "--set", "data.synthetic_train=64", "--set",
         "data.synthetic_test=32", "--batch-size", "16", "--set", "run.tensorboard=off"]


def resnet(*args, env=None, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resnet_cli", *map(str, args)], env={**ENV, **(env or {})},
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # 1.1 s in the quick loop (CONTRIBUTING: a second or more goes to slow)
def test_jsonl_logs_the_config_every_epoch_and_the_end_and_a_resume_appends(cli, tmp_path, ckpts):
    run = tmp_path / "runs" / "j"
    out = cli("train", *SMOKE, "--epochs", "2", "--logger", "jsonl", "--run-dir", tmp_path / "runs", "--name", "j")
    assert out.exit_code == 0, out.output
    out = cli("train", "--resume", run, "--epochs", "3")
    assert out.exit_code == 0, out.output
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "end", "start", "epoch", "end"]
    assert events[0]["config"]["model.name"] == "resnet20" and events[0]["device"] == "cpu"
    assert events[4]["resumed"] and events[4]["step"] == 8
    rows = ckpts.rows(run)
    assert [e["step"] for e in events if e["event"] == "epoch"] == [int(r["step"]) for r in rows] == [4, 8, 12]
    assert [e["test_top1"] for e in events if e["event"] == "epoch"] == [float(r["test_top1"]) for r in rows]
    assert events[-1]["finished"] and events[-1]["files"] == [str(run / "best.pt"), str(run / "last.pt")]


def test_a_tracker_without_its_package_or_unknown_is_one_line(cli, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    out = cli("train", *SMOKE, "--logger", "wandb", "--run-dir", tmp_path)
    assert out.exit_code == 2
    assert out.stderr.strip() == 'error: train.loggers: wandb needs the wandb package: pip install "resnet-cli[wandb]"'
    out = cli("train", *SMOKE, "--set", "train.loggers=[comet]", "--run-dir", tmp_path)
    assert out.exit_code == 2 and "unknown tracker 'comet'; choose from tensorboard, mlflow, wandb, jsonl" in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 (SQLite store, artifacts served by it); killed with its workers."""
    pytest.importorskip("mlflow")
    port = _free_port()
    log = open(tmp_path / "mlflow-server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination",
                               str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"

    def stop():
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.wait(timeout=30)

    import urllib.request

    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).read()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                stop()
                pytest.fail("mlflow server did not start: " + (tmp_path / "mlflow-server.log").read_text()[-2000:])
            time.sleep(0.5)
    try:
        yield url, stop
    finally:
        stop()
        log.close()


@pytest.mark.slow
def test_mlflow_server_gets_params_metrics_and_checkpoints_and_a_resume_continues_the_run(mlflow_server, tmp_path,
                                                                                          monkeypatch):
    from mlflow.tracking import MlflowClient

    url, _ = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)  # MLflow 2's client lists proxied artifacts by this, not its own
    env = {"MLFLOW_TRACKING_URI": url, "MLFLOW_EXPERIMENT_NAME": "tests"}
    run = tmp_path / "runs" / "m"
    done = resnet("train", *SMOKE, "--epochs", "2", "--logger", "mlflow", "--run-dir", tmp_path / "runs", "--name", "m",
                  env=env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads((run / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(url)
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "m"
    assert client.get_experiment(got.info.experiment_id).name == "tests"
    assert got.data.params["model.name"] == "resnet20" and got.data.params["train.batch_size"] == "16"
    assert got.data.tags["device"] == "cpu" and got.data.metrics["wall_seconds"] > 0
    assert [m.step for m in client.get_metric_history(run_id, "test_top1")] == [4, 8]
    assert sorted(a.path for a in client.list_artifacts(run_id, "checkpoints")) == ["checkpoints/best.pt",
                                                                                    "checkpoints/last.pt"]

    done = resnet("train", "--resume", run, "--epochs", "3", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "trackers.json").read_text())["mlflow"] == run_id  # the same MLflow run, continued
    history = client.get_metric_history(run_id, "test_top1")
    assert [m.step for m in history] == [4, 8, 12]
    assert len(client.search_runs([got.info.experiment_id])) == 1


@pytest.mark.slow
def test_an_mlflow_server_that_goes_away_costs_one_line_and_the_run_finishes(mlflow_server, tmp_path, ckpts):
    from mlflow.tracking import MlflowClient

    url, stop = mlflow_server
    env = {"MLFLOW_TRACKING_URI": url, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "runs" / "gone"
    child = subprocess.Popen([sys.executable, "-m", "resnet_cli", "train", *SMOKE, "--epochs", "12", "--set",
                              "data.synthetic_train=256", "--logger", "mlflow", "--logger", "jsonl", "--run-dir",
                              str(tmp_path / "runs"), "--name", "gone"], env={**ENV, **env},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client, deadline = MlflowClient(url), time.monotonic() + 120
    while True:  # the first epoch reached the server: now it goes away
        ids = run / "trackers.json"
        if ids.is_file() and client.get_metric_history(json.loads(ids.read_text())["mlflow"], "test_top1"):
            break
        assert time.monotonic() < deadline and child.poll() is None, child.communicate()
        time.sleep(0.2)
    stop()
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    said = [ln for ln in (out + err).splitlines() if ln.startswith("mlflow: ")]
    assert said[0] == f"mlflow: run {json.loads((run / 'trackers.json').read_text())['mlflow']} at {url}"
    assert len(said) == 2 and said[1].endswith("not logging to mlflow any more (the run folder keeps everything)")
    assert len(ckpts.rows(run)) == 12 and (run / "best.pt").is_file()
    assert sum('"event": "epoch"' in ln for ln in (run / "metrics.jsonl").read_text().splitlines()) == 12


@pytest.mark.slow
def test_mlflow_file_store(tmp_path, monkeypatch):
    """MLflow 3.12 on refuses its file store unless MLFLOW_ALLOW_FILE_STORE=true: without it the run trains on and
    says so in one line (MLflow's own message, which names the variable); with it, or with an MLflow that has no
    such switch (2.x), the run is logged there."""
    mlflow = pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlruns").as_uri()
    done = resnet("train", *SMOKE, "--epochs", "1", "--logger", "mlflow", "--run-dir", tmp_path / "runs", "--name", "n",
                  env={"MLFLOW_TRACKING_URI": store})
    assert done.returncode == 0, done.stderr
    said = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith("mlflow: ")]
    if hasattr(mlflow.environment_variables, "MLFLOW_ALLOW_FILE_STORE"):
        assert len(said) == 1 and "MLFLOW_ALLOW_FILE_STORE=true" in said[0]
    else:
        assert said == [f"mlflow: run {json.loads((tmp_path / 'runs' / 'n' / 'trackers.json').read_text())['mlflow']}"
                        f" at {store}"]
    done = resnet("train", *SMOKE, "--epochs", "1", "--logger", "mlflow", "--run-dir", tmp_path / "runs", "--name", "f",
                  env={"MLFLOW_TRACKING_URI": store, "MLFLOW_ALLOW_FILE_STORE": "true"})
    assert done.returncode == 0, done.stderr
    run_id = json.loads((tmp_path / "runs" / "f" / "trackers.json").read_text())["mlflow"]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    got = MlflowClient(store).get_run(run_id)
    assert got.info.status == "FINISHED" and "test_top1" in got.data.metrics


def wandb_records(run_file: Path) -> list:
    """The records of a W&B run file (`run-ID.wandb`): a 7-byte header, then LevelDB-style log blocks of 32 KiB,
    each record a 4-byte checksum, a 2-byte length, a 1-byte type (1 whole, 2 first, 3 middle, 4 last) and a
    protobuf `Record` (wandb.proto)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, block, records, pending, pos = run_file.read_bytes(), 32768, [], b"", 7
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a record header is padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", raw[pos + 4:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        data = raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        pending = data if kind in (1, 2) else pending + data
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            records.append(rec)
    return records


@pytest.mark.slow
def test_wandb_offline_run_holds_the_config_and_metric_history_and_a_resume_continues_it(tmp_path, ckpts):
    pytest.importorskip("wandb")
    env = {"WANDB_MODE": "offline", "WANDB_PROJECT": "tests", "WANDB_SILENT": "true"}
    run = tmp_path / "runs" / "w"
    done = resnet("train", *SMOKE, "--epochs", "2", "--logger", "wandb", "--run-dir", tmp_path / "runs", "--name", "w",
                  env=env)
    assert done.returncode == 0, done.stderr
    done = resnet("train", "--resume", run, "--epochs", "3", env=env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads((run / "trackers.json").read_text())["wandb"]
    files = sorted((run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 2  # the first start and the resume: one W&B run id
    history, config, project = [], {}, set()
    for f in files:
        for rec in wandb_records(f):
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                history.append({i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
            elif kind == "run":  # the run record carries the config W&B was given
                project.add(rec.run.project)
                config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
    assert project == {"tests"} and config["model.name"] == "resnet20" and config["train.batch_size"] == 16
    rows = ckpts.rows(run)
    assert [h["_step"] for h in history] == [int(r["step"]) for r in rows] == [4, 8, 12]
    assert [h["test_top1"] for h in history] == [float(r["test_top1"]) for r in rows]
