"""The training core's pieces: the run state and its stop rules, the evaluations' names, the run result,
the single-process twin of a torchrun process, the input description and errors under --json."""

from __future__ import annotations

import json

import pytest
import torch

from resnet_cli import config as C
from resnet_cli.train.evaluations import epoch_fields, metric_fields, selection_metric, top1_columns
from resnet_cli.train.state import RunState, StopRules, best_row, invocation_done, patience_reached, reaches_target


def rows(*scores: float) -> list[dict]:
    return [{"epoch": i + 1, "val_top1": s} for i, s in enumerate(scores)]


def test_stop_rules_are_functions_of_the_rows():
    r = rows(0.5, 0.7, 0.7, 0.6)
    assert best_row(r, "val_top1")["epoch"] == 2  # the first of equals
    assert not patience_reached(r, "val_top1", 3) and patience_reached(r, "val_top1", 2)
    assert not patience_reached(r, "val_top1", 0)  # 0: off
    assert reaches_target(r[1], "val_top1", 0.7) and not reaches_target(r[0], "val_top1", 0.7)
    assert not reaches_target(r[1], "val_top1", 0.0)
    assert invocation_done(5, 3, 2) and not invocation_done(4, 3, 2) and not invocation_done(9, 3, 0)
    rules = StopRules(total_steps=40, selection="val_top1", patience=2)
    state = RunState(step=32, epoch=4, rows=r)
    assert rules.finished(state) and rules.stopped_early(state)
    assert not StopRules(40, "val_top1").finished(state)
    assert StopRules(40, "val_top1", stop_at_target=True).finished(RunState(step=8, rows=r, target={"epoch": 2}))
    assert StopRules(32, "val_top1").finished(state) and not StopRules(32, "val_top1").stopped_early(state)


def test_run_state_round_trips_through_a_checkpoint():
    state = RunState(step=11, epoch=1, rows=rows(0.5), partial={"batch": 3, "seen": 48}, skipped=1,
                     prior_wall=12.5, target=None)
    saved = state.to_checkpoint(wall_seconds=20.0)
    assert set(saved) == {"epoch", "step", "metrics", "partial", "skipped", "wall_seconds", "target"}
    back = RunState.from_checkpoint(saved)
    assert back == RunState(step=11, epoch=1, rows=rows(0.5), partial={"batch": 3, "seen": 48}, skipped=1,
                            prior_wall=20.0)


def test_evaluations_are_named_once():
    plain = C.resolve("smoke")
    assert selection_metric(plain) == "test_top1" and top1_columns(plain) == ["test_top1"]
    assert metric_fields(plain) == ["epoch", "step", "lr", "train_loss", "train_top1", "test_loss", "test_top1",
                                    "test_top5", "seconds", "img_per_s", "eval_seconds"]
    both = C.resolve("smoke", sets=["data.val_split=64", "train.ema=0.9"])
    assert selection_metric(both) == "ema_val_top1"
    assert top1_columns(both) == ["val_top1", "test_top1", "ema_val_top1", "ema_test_top1"]
    assert metric_fields(both)[5:8] == ["val_loss", "val_top1", "val_top5"]
    row = {"epoch": 2, "train_loss": 1.0, "train_top1": 0.5, "lr": 0.1, "seconds": 1.0, "img_per_s": 100.0,
           **{f"{p}{s}_{m}": 0.25 for p in ("", "ema_") for s in ("val", "test") for m in ("loss", "top1", "top5")}}
    assert epoch_fields(row, both, 3) == ["epoch 2/3", "train loss 1.0000 acc 50.00%",
                                          "val loss 0.2500 top1 25.00% (ema 25.00%)",
                                          "test loss 0.2500 top1 25.00% (ema 25.00%)", "lr 0.1", "1.0s 100 img/s"]
    assert epoch_fields({**row, "eval_seconds": 0.25}, both, 3)[-1] == "1.0s 100 img/s, eval 0.2s"
    assert epoch_fields({**row, "eval_seconds": ""}, both, 3)[-1] == "1.0s 100 img/s"  # a row from an older run


def test_a_single_process_is_a_torchrun_process_of_one():
    from resnet_cli.train.distributed import SingleProcess, from_env

    one = from_env("cpu")
    assert isinstance(one, SingleProcess) and one.rank == 0 and one.world == 1 and one.is_main
    model = torch.nn.Linear(2, 2)
    t = torch.ones(3)
    assert one.wrap(model) is model and one.sync_batchnorm(model) is model
    assert one.all_reduce([t])[0] is t and one.max(15) == 15 and one.describe(128) == ""
    assert one.stop_agreed(15, at_interval=False) == 15  # one process stops at the step it is told to
    one.barrier()
    one.close()


def test_the_run_is_built_on_a_finished_config(make_trainer):
    trainer = make_trainer(open_dir=False, **{"data.channels": 1, "data.classes": 4})
    run = trainer.run
    assert (run.cfg.model.num_classes, run.cfg.model.in_channels) == (4, 1)  # fitted before anything was built
    assert run.model.fc.out_features == 4 and run.model.conv1.in_channels == 1
    assert run.train_loader.num_classes == 4 and run.train_loader.channels == 1
    assert run.plan.steps_per_epoch == 4 and run.plan.total_steps == 4 and list(run.eval_loaders) == ["test"]


def test_train_json_result_is_what_the_table_shows(cli, tmp_path, smoke_args):
    out = cli.json("train", *smoke_args("cpu", 64, 32), "--epochs", "1", "--run-dir", tmp_path)
    assert out["epochs"] == 1 and out["steps"] == 2 and out["selected_by"] == "test_top1"  # batches of 32
    assert out["final"] == out["best"] and out["processes"] == 1 and out["device"] == "cpu"
    again = cli.json("train", "--resume", out["run_dir"])
    assert again == {"event": "result", "run_dir": out["run_dir"], "finished": True,
                     "message": f"{out['run_dir']} is finished (1 epoch, 2 steps); pass a larger --epochs to "
                                "train further"}


@pytest.mark.parametrize("args, message", [
    (["summary", "--depth", "7"], "no ResNet of depth 7"),
    (["train", "--preset", "smoke", "--device", "cpu", "--set", "train.precision=tf32"],
     "precision tf32 needs a CUDA device"),
    (["eval", "/nonexistent/run"], "checkpoint not found"),
    (["bench", "resnet20", "--precision", "fp64"], "Invalid value for '--precision'"),
])
def test_errors_under_json_are_json(cli, args, message):
    result = cli(*args, "--json")
    assert result.exit_code == 2
    out = json.loads(result.stdout)
    assert out["exit_code"] == 2 and message in out["error"]
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output


def test_predict_prepares_an_image_as_evaluation_does(tmp_path):
    """InputSpec.transform (predict) and the image folders' evaluation crop are one transform."""
    pytest.importorskip("PIL")
    from PIL import Image

    from resnet_cli.data.imagefolder import ImageFolderDataset
    from resnet_cli.data.inputs import InputSpec

    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (45, 61, 3), generator=g, dtype=torch.uint8).numpy()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    x, _ = ImageFolderDataset([(tmp_path / "a.png", 0)], False, crop=24, resize=27)[0]
    spec = InputSpec.of(["a"], 3, 24, 27, (0.5,) * 3, (0.5,) * 3)
    with Image.open(tmp_path / "a.png") as im:
        assert torch.equal(spec.transform(im), x) and x.shape == (3, 24, 24)
    gray = InputSpec.of(["a"], 1, (10, 12), 0, (0.5,), (0.5,))
    with Image.open(tmp_path / "a.png") as im:
        assert gray.transform(im).shape == (1, 10, 12)


def test_train_json_streams_json_lines(cli, tmp_path, smoke_args):
    """`train --json`: one object per message, log interval and epoch as they happen, then the result."""
    result = cli("train", *smoke_args("cpu", 64, 32, "train.log_interval=1"), "--epochs", "2", "--run-dir", tmp_path,
                 "--json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds == ["message", "message", "progress", "progress", "epoch", "progress", "progress", "epoch", "result"]
    assert events[0]["text"].startswith("run folder: ")
    assert [e["step_in_epoch"] for e in events if e["event"] == "progress"] == [1, 2, 1, 2]
    assert events[3]["eta_seconds"] == 0.0 and events[2]["eta_seconds"] >= 0
    rows = [e for e in events if e["event"] == "epoch"]
    assert [r["epoch"] for r in rows] == [1, 2] and events[-1]["final"] == {k: v for k, v in rows[-1].items()
                                                                          if k != "event"}


@pytest.mark.slow
def test_a_closed_stdout_never_stops_a_run(tmp_path, proc, smoke_args, ckpts):
    """`resnet train ... | head -3`: the reader goes away after three lines; the run trains on to the end."""
    import subprocess

    train = proc.start("train", *smoke_args("cpu", 256, 32, "train.log_interval=1"), "--epochs", "3",
                       "--run-dir", tmp_path, "--name", "r")
    head = subprocess.run(["head", "-3"], stdin=train.stdout, capture_output=True, text=True, timeout=120)
    train.stdout.close()
    assert train.wait(timeout=300) == 0, train.stderr.read()
    assert len(head.stdout.splitlines()) == 3
    done = ckpts.load(tmp_path / "r" / "last.pt")
    assert done["epoch"] == 3 and done["step"] == 24


def test_adam_step_counters_go_where_the_restored_kernels_read_them():
    """#34 item 2: a checkpoint saved by a CPU run (AdamW foreach: `step` on the host) resumed with fused kernels
    (CUDA) must have every `step` on the parameters' device, or the fused kernel (and a CUDA graph capture) fails;
    and back. The meta device stands in for CUDA here: torch's load_state_dict leaves `step` where the *saved*
    groups' flags put it, which is the defect. tests/test_gpu.py resumes a CPU run on CUDA itself."""
    from resnet_cli.train.step import load_optimizer_state

    cpu = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(cpu.parameters(), foreach=True)
    cpu(torch.randn(4, 3)).sum().backward()
    opt.step()
    saved = opt.state_dict()
    device = torch.nn.Linear(3, 2, device="meta")
    try:
        fused = torch.optim.AdamW(device.parameters(), fused=True)
    except RuntimeError as e:  # torch < 2.5 has no fused kernels on the meta device: nothing stands in for CUDA
        pytest.skip(f"torch {torch.__version__}: {str(e)[:80]}")
    load_optimizer_state(fused, saved)
    assert fused.param_groups[0]["fused"] and not fused.param_groups[0].get("foreach")
    for state in fused.state.values():
        assert state["step"].device.type == "meta" and state["step"].dtype == torch.float32
        assert state["exp_avg"].device.type == "meta"
