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


def test_depths_select_runs_of_table6_and_figure6_in_the_papers_order():
    runs = plan(Options("table6", out=None, seeds=2, depths=(56, 20)))["table6"]
    assert [r.name for r in runs] == ["resnet20-s0", "resnet20-s1", "resnet56-s0", "resnet56-s1"]
    runs = plan(Options("figure6", out=None, depths=(110, 20)))["figure6"]  # 110 is figure6's --with-110 depth
    assert [r.name for r in runs] == ["plain20-s0", "plain110-s0", "resnet20-s0", "resnet110-s0"]
    both = plan(Options("all", out=None, depths=(20,)))
    assert [r.name for r in unique_runs(both)] == ["resnet20-s0", "plain20-s0", "plain56-s0"]  # figure1 whole


def test_side_by_side_runs_start_deepest_first_and_share_the_cpu_threads_they_use(monkeypatch):
    from resnet_cli.reproduce import RunStatus, launch_order, slot_env

    waiting = [RunStatus(spec) for spec in plan(Options("table6", out=None, seeds=2))["table6"]]
    alone = launch_order(Options("table6", out=None, parallel=1), waiting)
    assert [st.spec.name for st in alone][:3] == ["resnet20-s0", "resnet20-s1", "resnet32-s0"]  # the paper's order
    side = launch_order(Options("table6", out=None, parallel=2), waiting)
    assert [st.spec.depth for st in side] == [110, 110, 56, 56, 44, 44, 32, 32, 20, 20]
    assert [st.spec.name for st in side][:2] == ["resnet110-s0", "resnet110-s1"]  # stable within a depth
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert slot_env(1, gpus=0, sharing=2) == {"OMP_NUM_THREADS": "8"}
    assert slot_env(1, gpus=0, sharing=1) == {"OMP_NUM_THREADS": "16"}  # the last run alone takes every core
    assert slot_env(0, gpus=0, sharing=32) == {"OMP_NUM_THREADS": "1"}
    assert slot_env(5, gpus=4, sharing=2) == {"CUDA_VISIBLE_DEVICES": "1"}  # a GPU each, round robin


@pytest.mark.slow
def test_table6_of_chosen_depths_shows_each_runs_training_time(cli, tmp_path):
    import gc
    import warnings

    out = tmp_path / "t6"
    with warnings.catch_warnings(record=True) as caught:  # each run's pipe and log are closed, not collected
        warnings.simplefilter("always", ResourceWarning)
        result = cli("reproduce", "table6", "--depths", "20", "--seeds", "2", "--out", out, "--steps", "3", *TINY,
                     env={"COLUMNS": "80"})
        gc.collect()
    assert result.exit_code == 0, result.output
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["runs"]) == ["resnet20-s0", "resnet20-s1"] and len(results["table6"]) == 1
    row = results["table6"][0]
    walls = [results["runs"][f"resnet20-s{s}"]["wall_seconds"] for s in (0, 1)]
    assert row["wall_seconds_per_run"] == pytest.approx(sum(walls) / 2) and min(walls) > 0
    assert "time/run" in result.stdout and f"{round(row['wall_seconds_per_run'])} s" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    report = (out / "report.md").read_text()
    assert "| training time per run |" in report and f"| {round(row['wall_seconds_per_run'])} s |" in report


def test_scaled_runs_shorten_the_milestones_alike(tmp_path):
    cmd = " ".join(train_command(Options("figure1", tmp_path, scale=0.05), RunSpec("plain20", 0)))
    assert "--preset cifar" in cmd and "train.steps=3200" in cmd and "train.milestones=[1600,2400]" in cmd
    assert "run.resume=auto" in cmd and f"run.run_dir={tmp_path / 'runs'}" in cmd and "run.name=plain20-s0" in cmd
    paper = " ".join(train_command(Options("figure1", tmp_path), RunSpec("plain20", 0)))
    assert "train.steps" not in paper and "milestones" not in paper  # the preset's own 64k and [32k, 48k]


def test_a_runs_folders_reach_its_train_command_exactly_whatever_their_names(tmp_path):
    """Each value goes through `--set`, which reads YAML: `#` starts a comment, `2026` is a number, `a: b` a
    mapping. The folders must arrive as written, or the runs would read another folder's data."""
    from resnet_cli import config as C

    for data_dir, out in (("my data #2", "out"), ("2026", "yes"), ("a: b", "[x]"), ("null", "~"),
                          ("'quoted' \"twice\"", "tab\there"), ("données/ünï", "{x}")):
        opts = Options("table6", tmp_path / out, data_dir=str(tmp_path / data_dir), device="cuda:0", scale=0.01)
        cmd = train_command(opts, RunSpec("resnet20", 3))
        sets = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--set"]
        cfg = C.resolve("cifar", sets=sets)
        assert (cfg.data.data_dir, cfg.run.run_dir) == (str(tmp_path / data_dir), str(tmp_path / out / "runs"))
        assert (cfg.run.device, cfg.run.seed, cfg.run.name, cfg.train.milestones) == (
            "cuda:0", 3, "resnet20-s3", [320, 480])
    plain = train_command(Options("table6", tmp_path / "out", data_dir=str(tmp_path / "d")), RunSpec("resnet20", 0))
    assert f"data.data_dir={tmp_path / 'd'}" in plain and "run.seed=0" in plain  # plain where plain is exact


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
    (["table7"], "unknown experiment 'table7'; choose from table1, table3, figure3, table6, figure6, figure1, all"),
    (["figure1", "--steps", "10", "--scale", "0.1"], "give --steps or --scale, not both"),
    (["figure1", "--scale", "1.5"], "--scale must be in (0, 1], got 1.5"),
    (["figure1", "--scale", "nan"], "--scale must be in (0, 1], got nan"),
    (["figure1", "--dataset", "imagenet"], "--dataset must be one of cifar10, fashion-mnist, synthetic, got 'imagenet'"),
    (["figure1", "--parallel", "0"], "--seeds and --parallel must be at least 1"),
    (["table6", "--depths", "20,21"], "--depths: 21 not in the paper's CIFAR depths (20, 32, 44, 56, 110)"),
    (["table6", "--depths", "20;56"], "--depths takes depths separated by commas, e.g. 20,56; got '20;56'"),
    (["figure1", "--depths", "20"], "--depths selects runs of table6 and figure6; figure1 has fixed models, and "
                                    "table1, table3 and figure3 train none"),
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


@pytest.mark.slow
def test_the_gpu_measuring_script_dry_runs_on_the_cpu(tmp_path, fashion_dir, dry_run_env):
    """benchmarks/gpu_reproduce.sh is what a GPU session runs for issue 25's figures; DRY=1 runs its commands on
    the CPU at 4 iterations, so that the script and its summary are checked before GPU time is spent on them."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    logs = tmp_path / "logs"
    done = subprocess.run(["bash", str(root / "benchmarks" / "gpu_reproduce.sh"), str(fashion_dir), str(logs)],
                          capture_output=True, text=True, timeout=600, env=dry_run_env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "dry run on the CPU" in out and "exit" not in out, out
    assert "two resnet20 runs of 4 iterations: one after the other" in out and "-j 2 gives" in out, out
    assert "table6 (4 iterations a run, NOT the paper length):" in out, out
    assert "resnet20: test error" in out and "resnet56: test error" in out, out
    assert "the whole Table 6 at 3 seeds" in out, out
    for name in ("parallel_j1", "parallel_j2", "table6_paper"):
        assert (logs / f"{name}.report.md").read_text().startswith("# Reproduction: table6 (4 iterations per run")
    assert (logs / "summary.txt").read_text().splitlines()[0].startswith("device: no CUDA device (dry run)")
