"""`resnet data bench`: the input pipeline alone, its stages, its rate against the model's, and the verdict."""

from __future__ import annotations

import math

import pytest

from test_crops import write_folder

pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    write_folder(root / "train", classes=("a", "b", "c"), per_class=16, size=(96, 72))
    write_folder(root / "val", classes=("a", "b", "c"), per_class=2, size=(96, 72))
    return root


ARGS = ("--image-size", "32", "--batch-size", "8", "--batches", "3", "--device", "cpu")


def test_data_bench_splits_the_stages_and_says_which_side_bounds_training(cli, jpegs):
    fast = cli.json("data", "bench", jpegs, *ARGS, "--workers", "0", "--target-img-s", "1e9")
    assert fast["images"] == 48 and fast["batch_size"] == 8 and fast["crop"] == "scale"
    assert set(fast["stages_ms_per_image"]) == {"read", "decode", "crop", "other", "collate", "to_device", "device"}
    assert fast["stages_ms_per_image"]["read"] > 0  # each file read whole through the gate, as a worker reads it
    assert all(v >= 0 for v in fast["stages_ms_per_image"].values()) and fast["stages_ms_per_image"]["decode"] > 0
    p = fast["pipeline"]
    assert p["batches"] == 3 and p["img_per_s"] > 0 and p["workers"] == 0
    assert fast["bound"] == "input" and fast["model"] == {"img_per_s": 1e9, "source": "given"}
    assert fast["workers_needed"] == math.ceil(1e9 / fast["per_worker_img_per_s"])
    assert fast["verdict"].startswith("input-bound: the loader feeds")
    assert fast["verdict"].endswith("(on a CPU the model, the device's share and the workers share the same cores)")
    slow = cli.json("data", "bench", jpegs, *ARGS, "--workers", "0", "--target-img-s", "1")
    assert slow["bound"] == "model" and slow["workers_needed"] == 1
    assert slow["verdict"].startswith("model-bound:")


@pytest.mark.slow  # a worker process and the model's bench
def test_data_bench_with_workers_and_the_models_measured_rate(cli, jpegs):
    out = cli.json("data", "bench", jpegs, *ARGS, "--workers", "1", "--model", "resnet20",
                   "--set", "data.crop=random-resized")
    assert out["crop"] == "random-resized" and out["pipeline"]["workers"] == 1
    assert out["model"]["source"] == "measured: resnet20 training step" and out["model"]["img_per_s"] > 0
    assert out["pipeline"]["cores_busy"] is not None and out["pipeline"]["cores_busy"] > 0
    table = cli("data", "bench", jpegs, *ARGS, "--workers", "1", "--target-img-s", "100000",
                env={"COLUMNS": "80"})
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert any(line.startswith("│ decode (worker)") for line in lines)
    assert max(len(line) for line in lines if line.startswith(("┃", "│", "┏", "└"))) <= 80
    assert max(len(line) for line in lines) <= 80  # the lines below the table wrap between words
    words = " ".join(table.stdout.split())
    assert "img/s per core" in words and "input-bound: the loader feeds" in words


def test_data_bench_refuses_what_it_cannot_bench(cli, jpegs, tmp_path, fashion_dir):
    resident = cli("data", "bench", fashion_dir, "--device", "cpu")
    assert resident.exit_code == 2
    assert "fashion-mnist lives on the device in one tensor: no input pipeline to bench" in resident.stderr
    for bad, text in ((("--target-img-s", "-5"), "--target-img-s must be a positive number"),
                      (("--batches", "0"), "--batches must be positive"),
                      (("--batch-size", "64"), "make 0 batch(es) of 64")):
        result = cli("data", "bench", jpegs, "--image-size", "32", "--workers", "0", "--device", "cpu", *bad)
        assert result.exit_code == 2 and text in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    missing = cli("data", "bench", tmp_path / "nothing", "--device", "cpu")
    assert missing.exit_code == 2 and "no such folder" in missing.stderr


def test_data_bench_reads_shards_too(cli, jpegs, tmp_path):
    pytest.importorskip("webdataset")
    assert cli("data", "convert", jpegs, tmp_path / "s", "--shard-images", "8").exit_code == 0
    out = cli.json("data", "bench", tmp_path / "s", *ARGS, "--workers", "0", "--target-img-s", "1e9")
    assert out["dataset"] == "shards" and out["images"] == 48 and out["stages_ms_per_image"]["read"] > 0
    assert out["pipeline"]["batches"] == 3 and out["bound"] == "input"


@pytest.mark.slow  # a worker process
def test_data_bench_says_when_the_training_process_holds_the_loader(cli, jpegs, monkeypatch):
    """When the copy and the device's share take as long as the loader's rate, more workers cannot help: the
    verdict says so instead of counting workers."""
    from resnet_cli import pipeline_bench

    real = pipeline_bench.stage_split

    def slow_device(*args, **kwargs):
        stages = real(*args, **kwargs)
        return {**stages, "device": 1.0}  # a second per image: the training process is the bottleneck

    monkeypatch.setattr(pipeline_bench, "stage_split", slow_device)
    out = cli.json("data", "bench", jpegs, *ARGS, "--workers", "1", "--target-img-s", "1e9")
    assert out["workers_needed"] is None and out["main_process_img_per_s"] == pytest.approx(1.0, rel=0.01)
    assert "the training process holds the loader at about 1 img/s" in out["verdict"]


@pytest.mark.slow  # 8 s: the quick loop keeps under 90 s
def test_train_says_once_when_its_steps_wait_for_the_decoders(cli, tmp_path):
    """#34 item 7: an image-folder run whose steps spend INPUT_BOUND or more of an epoch waiting for decoded batches
    says so once, with the workers it had and the command that sizes them (here: large noisy JPEGs decoded in the
    training process for a small model). Data on the device never waits for decoders, and says nothing."""
    import torch
    from PIL import Image

    from resnet_cli.train.loop import INPUT_BOUND

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 6), ("val", 1)):
        for c in ("a", "b"):
            (tmp_path / "f" / split / c).mkdir(parents=True)
            for i in range(n):
                noise = torch.randint(0, 256, (900, 1200, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(noise).save(tmp_path / "f" / split / c / f"{i}.jpg", quality=95)
    run = cli("train", "--set", "data.dataset=imagefolder", "--data-dir", tmp_path / "f", "--set", "data.image_size=16",
              "--set", "data.workers=0", "--model", "resnet20", "--batch-size", "3", "--epochs", "2", "--device", "cpu",
              "--set", "train.compile=off", "--run-dir", tmp_path / "runs")
    assert run.exit_code == 0, run.output
    said = [ln for ln in run.stdout.splitlines() if ln.startswith("input-bound:")]
    assert len(said) == 1, run.stdout  # once, though both epochs waited
    share = int(said[0].split("batches ")[1].split("%")[0])
    assert share >= 100 * INPUT_BOUND and "data.workers=0 (decoding in the training process)" in said[0]
    assert f"`resnet data bench {tmp_path / 'f'}` says how many workers would keep up" in said[0]
    device = cli("train", "--preset", "smoke", "--device", "cpu", "--run-dir", tmp_path / "runs")
    assert device.exit_code == 0 and "input-bound" not in device.stdout


def test_the_training_process_limit_overlaps_the_copy_only_where_it_runs_on_a_side_stream():
    """data bench's `main_process_img_per_s`: the copy and the device's share add up (the CPU, or data.prefetch
    off); with data.prefetch on CUDA the copy runs beside the device's work, so the slower of the two bounds it."""
    from resnet_cli.pipeline_bench import main_process_limit

    stages = {"to_device": 0.0002, "device": 0.0003}  # seconds per image
    assert main_process_limit(stages, overlapped=False) == pytest.approx(2000)
    assert main_process_limit(stages, overlapped=True) == pytest.approx(1 / 0.0003)
    assert main_process_limit({"to_device": 0.0, "device": 0.0}, overlapped=True) == pytest.approx(1e9)


def test_cores_busy_counts_nanoseconds_and_refuses_what_rounding_decides():
    """The loader's "cores busy": each thread's nanoseconds where /proc keeps them, so that a bench of a few
    batches is not read as 0 cores (a worker's clock ticks often did not move over 3 batches); a count under
    ten steps of its resolution is refused (None), not printed."""
    import os
    import time

    from resnet_cli.pipeline_bench import _cpu_seconds, cores_busy

    before, t0 = _cpu_seconds([os.getpid()]), time.perf_counter()
    while time.perf_counter() - t0 < 0.05:  # one thread busy for 50 ms: five clock ticks, fifty million ns
        pass
    after, wall = _cpu_seconds([os.getpid()]), time.perf_counter() - t0
    if os.path.exists(f"/proc/{os.getpid()}/schedstat"):
        assert before[1] == after[1] == 1e-9
        assert 0.8 < cores_busy(before, after, wall) < 1.2
    assert cores_busy((10.0, 0.01), (10.05, 0.01), 0.05) is None  # five ticks: refused
    assert cores_busy((10.0, 0.01), (10.2, 0.01), 0.1) == pytest.approx(2.0)
    assert cores_busy(None, after, wall) is None and cores_busy(before, None, wall) is None
