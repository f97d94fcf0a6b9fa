"""`resnet reproduce`: every experiment's runs at a tiny scale, the skip-and-resume of a second invocation,
--parallel, the report, and the one line when the data is not there."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from resnet_cli.reproduce import AKAMASTER_TABLE6, PAPER_TABLE6, Options, RunSpec, plan, train_command, unique_runs

# 384 training images after a 128-image validation split: 3 steps per epoch at the preset's batch 128
TINY = ["--dataset", "synthetic", "--device", "cpu", "--set", "data.synthetic_train=512", "--set",
        "data.val_split=128", "--set", "data.synthetic_test=128"]


def test_plans_share_runs_between_experiments():
    runs = plan(Options("all", out=None, seeds=2))
    assert [r.name for r in runs["table6"]] == [f"resnet{d}-s{s}" for d in (20, 32, 44, 56, 110) for s in (0, 1)]
    assert [r.name for r in runs["figure6"]] == [f"{k}{d}-s0" for k in ("plain", "resnet") for d in (20, 32, 44, 56)]
    assert runs["figure1"] == [RunSpec("plain20", 0), RunSpec("plain56", 0)] and runs["table1"] == []
    assert len(unique_runs(runs)) == 14  # resnet20..56 seed 0 and plain20/56 serve two experiments each
    assert "plain110" in [r.model for r in plan(Options("figure6", out=None, with_110=True))["figure6"]]


def test_scaled_runs_shorten_the_milestones_alike(tmp_path):
    cmd = " ".join(train_command(Options("figure1", tmp_path, scale=0.05), RunSpec("plain20", 0)))
    assert "--preset cifar" in cmd and "train.steps=3200" in cmd and "train.milestones=[1600,2400]" in cmd
    assert "run.resume=auto" in cmd and f"run.run_dir={tmp_path / 'runs'}" in cmd and "run.name=plain20-s0" in cmd
    paper = " ".join(train_command(Options("figure1", tmp_path), RunSpec("plain20", 0)))
    assert "train.steps" not in paper and "milestones" not in paper  # the preset's own 64k and [32k, 48k]


@pytest.mark.slow
def test_figure1_resumes_an_interrupted_run_and_skips_finished_ones(cli, tmp_path, ckpts):
    out = tmp_path / "r"
    opts = Options("figure1", out, dataset="synthetic", scale=12 / 64000, device="cpu",
                   sets=["data.synthetic_train=512", "data.val_split=128", "data.synthetic_test=128"])
    # plain56 was stopped after its first epoch (3 of its 12 steps) by an earlier, interrupted reproduction
    first = subprocess.run([*train_command(opts, RunSpec("plain56", 0)), "--set", "run.stop_after_epochs=1"],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert [r["epoch"] for r in ckpts.rows(out / "runs" / "plain56-s0")] == ["1"]
    run = cli("reproduce", "figure1", "--out", out, "--steps", "12", "--parallel", "2", *TINY)
    assert run.exit_code == 0, run.output
    assert "plain56-s0: running (resumed)" in run.stdout and "plain20-s0: done" in run.stdout
    assert "resuming" in (out / "logs" / "plain56-s0.log").read_text()
    for name in ("plain20-s0", "plain56-s0"):
        assert [r["epoch"] for r in ckpts.rows(out / "runs" / name)] == ["1", "2", "3", "4"]
    report = (out / "report.md").read_text()
    assert report.startswith("# Reproduction: figure1 (12 iterations per run, not the paper's 64,000; on synthetic")
    assert "![figure1](figure1.png)" in report and (out / "figure1.png").stat().st_size > 10_000
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"plain20-s0", "plain56-s0"} and results["steps_per_run"] == 12
    stamp = (out / "runs" / "plain20-s0" / "last.pt").stat().st_mtime_ns
    again = cli("reproduce", "figure1", "--out", out, "--steps", "12", *TINY)
    assert again.exit_code == 0, again.output
    assert again.stdout.count("finished earlier") == 2 and "running" not in again.stdout
    assert (out / "runs" / "plain20-s0" / "last.pt").stat().st_mtime_ns == stamp  # nothing trained twice


@pytest.mark.slow
def test_all_experiments_tables_and_figures(cli, tmp_path):
    out = tmp_path / "all"
    result = cli("reproduce", "all", "--out", out, "--steps", "3", "--parallel", "2", *TINY, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["runs"]) == 9 and report["failed"] == [] and report["paper_length"] is False
    assert [r["model"] for r in report["table1"]][:5] == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert all(r["counters_agree"] for r in report["table1"])
    assert [r["model"] for r in report["table6"]] == [f"resnet{d}" for d in (20, 32, 44, 56, 110)]
    for row in report["table6"]:
        depth = int(row["model"][6:])
        assert row["runs"] == 1 and row["errors"] == [report["runs"][f"{row['model']}-s0"]["test_error"]]
        assert row["error_std"] is None  # one seed: no spread to show
        assert row["paper"] == PAPER_TABLE6[depth] and row["akamaster"] == AKAMASTER_TABLE6[depth]
    for name, r in report["runs"].items():
        assert r["selected_by"] == "val_top1" and 0 <= r["test_error"] <= 100, name
    assert sorted(report["figure6"]["runs"]) == sorted(f"{k}{d}-s0" for k in ("plain", "resnet")
                                                       for d in (20, 32, 44, 56))
    for png in ("figure6.png", "figure1.png"):
        assert (out / png).stat().st_size > 10_000
    text = (out / "report.md").read_text()
    for heading in ("## Table 1", "## Table 6", "## Figure 6", "## Figure 1"):
        assert heading in text
    assert "best epoch chosen on the test set" in text


def test_table6_is_mean_and_std_over_seeds():
    from resnet_cli.reproduce import table6_rows

    results = {f"resnet{d}-s{s}": {"test_error": 8.0 + s + d / 100} for d in (20, 56) for s in range(3)}
    rows = table6_rows(results, 3)
    assert [r["model"] for r in rows] == ["resnet20", "resnet56"]  # depths without runs are left out
    assert rows[0]["runs"] == 3 and rows[0]["errors"] == [8.2, 9.2, 10.2]
    assert rows[0]["error_mean"] == pytest.approx(9.2) and rows[0]["error_std"] == pytest.approx(1.0)


@pytest.mark.slow
def test_fashion_mnist_proxy_is_labelled(cli, tmp_path, fashion_dir):
    result = cli("reproduce", "figure1", "--dataset", "fashion-mnist", "--data-dir", fashion_dir, "--steps", "2",
                 "--device", "cpu", "--out", tmp_path / "f", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["note"] == "2 iterations per run, not the paper's 64,000; on fashion-mnist, a proxy for CIFAR-10"
    assert report["dataset"] == "fashion-mnist" and set(report["figure1"]["final_test_error"]) == {"plain20", "plain56"}


def test_without_the_data_offline_it_is_one_line_before_any_run(cli, tmp_path):
    result = cli("reproduce", "table6", "--out", tmp_path / "o", "--set", "data.download=false")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cifar10 is not available")
    assert not (tmp_path / "o" / "runs").exists()


@pytest.mark.parametrize("args, message", [
    (["table7"], "unknown experiment 'table7'; choose from table1, table6, figure6, figure1, all"),
    (["figure1", "--steps", "10", "--scale", "0.1"], "give --steps or --scale, not both"),
    (["figure1", "--scale", "1.5"], "--scale must be in (0, 1], got 1.5"),
    (["figure1", "--scale", "nan"], "--scale must be in (0, 1], got nan"),
    (["figure1", "--dataset", "imagenet"], "--dataset must be one of cifar10, fashion-mnist, synthetic, got 'imagenet'"),
    (["figure1", "--parallel", "0"], "--seeds and --parallel must be at least 1"),
])
def test_bad_input_is_one_line(cli, tmp_path, args, message):
    result = cli("reproduce", *args, "--out", tmp_path / "x")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {message}"


def test_help_imports_no_torch():
    code = "import sys; from resnet_cli.cli import app; sys.argv=['resnet','reproduce','--help']\n" \
           "try:\n    app()\nexcept SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
