"""Shards (data/shards.py): `resnet data convert` writes an image folder as WebDataset tars with an index;
`data.dataset: shards` reads them from a folder, over http or through a pipe, split over ranks and workers, and
resumes mid-epoch on the batches an uninterrupted run sees."""

from __future__ import annotations

import hashlib
import json
import signal
import sys

import pytest
import torch

from test_crops import smooth_image, tagged

pytest.importorskip("PIL")
pytest.importorskip("webdataset")

CLASSES = ("red", "green", "blue")


def colour_folder(root, train=16, val=4, size=(48, 40)):
    """train/ and val/ of three learnable colours (smooth noise around a base colour)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    base = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=torch.float32)
    for split, n in (("train", train), ("val", val)):
        for ci, c in enumerate(CLASSES):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                px = (base[ci].view(1, 1, 3) + 30 * torch.randn(size[1], size[0], 3, generator=g)).clamp(0, 255)
                Image.fromarray(px.to(torch.uint8).numpy(), "RGB").save(root / split / c / f"{i}.jpg", quality=92)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    colour_folder(root)
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory, folder):
    from typer.testing import CliRunner

    from resnet_cli.cli import app

    out = tmp_path_factory.mktemp("shards") / "s"
    result = CliRunner().invoke(app, ["data", "convert", str(folder), str(out), "--shard-images", "8", "--json"])
    assert result.exit_code == 0, result.output
    return out


def digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_convert_writes_the_webdataset_layout_with_its_index(shards, folder, tmp_path, cli):
    import tarfile

    index = json.loads((shards / "index.json").read_text())
    assert index["format"] == "resnet-cli-shards" and index["classes"] == sorted(CLASSES)
    train, val = index["splits"]["train"], index["splits"]["val"]
    assert train["count"] == 48 and [s["count"] for s in train["shards"]] == [8] * 6
    assert val["count"] == 12 and [s["count"] for s in val["shards"]] == [8, 4]
    for s in train["shards"] + val["shards"]:
        data = (shards / s["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == s["bytes"]
    with tarfile.open(shards / "train-000000.tar") as tar:
        names = tar.getnames()
        assert names[:2] == [names[0].split(".")[0] + ".cls", names[0].split(".")[0] + ".jpg"]
        assert all(m.mtime == 0 and m.uname == "" for m in tar.getmembers())
    labels = []
    with tarfile.open(shards / "train-000000.tar") as tar:
        labels = {int(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".cls")}
    assert len(labels) >= 2  # the training samples are shuffled before sharding: a shard mixes classes
    # deterministic: the same folder and settings, the same bytes
    again = cli.json("data", "convert", folder, tmp_path / "again", "--shard-images", "8")
    assert again["train_shards"] == 6 and digest(tmp_path / "again") == digest(shards)
    refused = cli("data", "convert", folder, tmp_path / "again", "--shard-images", "8")
    assert refused.exit_code == 2 and "add --force to write them again" in refused.stderr
    by_size = cli.json("data", "convert", folder, tmp_path / "mb", "--shard-mb", "0.02")
    assert by_size["train_images"] == 48 and by_size["train_shards"] > 1


def test_an_interrupted_convert_resumes_and_ends_with_the_same_bytes(folder, shards, tmp_path, monkeypatch, cli):
    from resnet_cli.data import shard_convert as S

    real_write, real_encode, written, encoded = S._write_shard, S._encoded, [], []

    def write_then_stop(path, samples):
        if len(written) == 3:  # killed inside the atomic write: its temporary file stays behind
            (path.parent / f".{path.stem}.tmp.x1y2{path.suffix}").write_bytes(b"half a shard")
            raise KeyboardInterrupt
        written.append(path.name)
        return real_write(path, samples)

    monkeypatch.setattr(S, "_write_shard", write_then_stop)
    stopped = cli("data", "convert", folder, tmp_path / "r", "--shard-images", "8")
    assert stopped.exit_code == 130 and not (tmp_path / "r" / "index.json").exists()
    kept = {n: (tmp_path / "r" / n).stat().st_ino for n in written}
    monkeypatch.setattr(S, "_write_shard", real_write)
    monkeypatch.setattr(S, "_encoded", lambda *a: encoded.append(a[0]) or real_encode(*a))
    resumed = cli.json("data", "convert", folder, tmp_path / "r", "--shard-images", "8", "--workers", "0")
    assert resumed["train_images"] == 48 and len(encoded) == 60 - 3 * 8  # the kept shards' images not read
    assert {n: (tmp_path / "r" / n).stat().st_ino for n in written} == kept
    assert digest(tmp_path / "r") == digest(shards)
    assert not list((tmp_path / "r").glob(".*.tmp.*"))  # the interrupted write's temporary file is gone
    other = cli("data", "convert", folder, tmp_path / "r2", "--shard-images", "8")
    assert other.exit_code == 0


def test_convert_workers_write_the_same_bytes_and_resume_where_the_writer_stopped(folder, shards, tmp_path, cli):
    """`data convert --workers N`: N processes read, check and re-encode the images ahead of the writer, handed
    over in order, so the shards and the index are the ones one process writes (an unreadable image named in the
    same place); a conversion resumed after the first shards starts its window where the writer does."""
    import shutil

    from resnet_cli.data import shard_convert as S

    shutil.copytree(folder, tmp_path / "f")
    (tmp_path / "f" / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    outs = {}
    for workers in (0, 2):
        got = cli.json("data", "convert", tmp_path / "f", tmp_path / f"w{workers}", "--shard-images", "8",
                       "--max-size", "24", "--workers", str(workers))
        outs[workers] = got
    assert digest(tmp_path / "w0") == digest(tmp_path / "w2")
    assert outs[0]["unreadable"] == outs[2]["unreadable"] and len(outs[2]["unreadable"]) == 1
    samples = [(p, 0) for p in sorted((tmp_path / "f" / "train" / "red").iterdir())]
    with S._Encoder(24, 90, 2) as encoder:  # a jump (shards kept from an interruption) restarts the window
        ahead = [encoder.get(samples, i) for i in (0, 1, 5, 6, 2)]
    assert ahead == [S.encode_job((samples[i][0], 24, 90)) for i in (0, 1, 5, 6, 2)]
    bad = cli("data", "convert", tmp_path / "f", tmp_path / "w3", "--workers", "-1")
    assert bad.exit_code == 2 and bad.stderr.strip() == "error: --workers must be 0 or more, got -1"


@pytest.mark.slow  # trainings: the quick loop keeps under 90 s
def test_unreadable_images_are_named_and_counted_and_max_size_reencodes(folder, tmp_path, cli):
    import shutil

    from PIL import Image

    from resnet_cli.data.shard_source import Source, read_index
    from resnet_cli.data.shards import read_shard

    shutil.copytree(folder, tmp_path / "f")
    (tmp_path / "f" / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    smooth_image(400, 300).save(tmp_path / "f" / "train" / "blue" / "big.png")
    (tmp_path / "f" / "train" / "blue" / "phone.jpg").write_bytes(tagged(smooth_image(400, 300), 6, "JPEG"))
    small = tagged(smooth_image(40, 30), 6, "JPEG")
    (tmp_path / "f" / "train" / "blue" / "small.jpg").write_bytes(small)
    result = cli("data", "convert", tmp_path / "f", tmp_path / "s", "--shard-images", "100", "--max-size", "64")
    assert result.exit_code == 0, result.output
    assert f"unreadable, left out: {tmp_path / 'f' / 'train' / 'red' / 'broken.jpg'}" in result.stderr
    assert "51 train images in 1 shards" in result.stdout and "1 unreadable image(s) left out" in result.stdout
    index = read_index(Source(str(tmp_path / "s")))
    assert index["unreadable"] == 1 and index["max_size"] == 64
    samples = read_shard(Source(str(tmp_path / "s")), index["splits"]["train"]["shards"][0], 3)
    opened = [Image.open(__import__("io").BytesIO(image)) for _, image, _ in samples]
    sizes = [im.size for im in opened]
    assert (64, 48) in sizes and all(max(s) <= 64 for s in sizes)  # the 400x300 PNG, now a 64x48 JPEG
    # a phone's portrait photo (stored 400x300, tagged to turn) re-encoded upright, without its tag; one under
    # --max-size is kept byte for byte, tag and all (every reader turns it)
    assert sorted((im.size, 0x0112 in im.getexif()) for im in opened if max(im.size) == 64) == [((48, 64), False),
                                                                                               ((64, 48), False)]
    assert sum(image == small for _, image, _ in samples) == 1


@pytest.mark.slow  # 1.0 s in the quick loop (CONTRIBUTING: a second or more goes to slow)
def test_convert_then_train_then_eval_counts_equal_the_folders(cli, folder, shards, tmp_path):
    args = ("--model", "resnet20", "--image-size", "24", "--workers", "0", "--batch-size", "8", "--device", "cpu",
            "--lr", "0.05", "--run-dir", tmp_path)
    out = cli.json("train", "--data-dir", shards, *args, "--epochs", "3", "--name", "s")
    assert out["dataset"] == "shards" and out["steps"] == 3 * 6  # 48 images, batch 8
    on_shards = cli.json("eval", tmp_path / "s", "--device", "cpu")
    on_folder = cli.json("eval", tmp_path / "s", "--dataset", "imagefolder", "--data-dir", folder, "--device", "cpu")
    assert on_shards["count"] == on_folder["count"] == 12
    assert on_shards["top1"] == pytest.approx(on_folder["top1"], abs=1 / 12)  # same images, same weights
    # the paper's multi-scale test reads shards as it reads folders: whole images, one a batch
    scaled = [cli.json("eval", tmp_path / "s", *data, "--device", "cpu", "--scales", "24,32")
              for data in ((), ("--dataset", "imagefolder", "--data-dir", folder))]
    assert [(r["count"], r["crops"], r["scales"]) for r in scaled] == [(12, 4, [24, 32])] * 2
    assert scaled[0]["loss"] == pytest.approx(scaled[1]["loss"], rel=0.05)
    assert out["final"]["train_top1"] > 0.6  # three colours, learnt from the shards
    # the imagenet preset's dataset (imagefolder) reads shards when --data-dir holds them
    preset = cli("train", "--preset", "imagenet", "--data-dir", shards, "--print-config")
    assert preset.exit_code == 0 and "dataset: imagefolder" in preset.stdout
    tiny = cli.json("train", "--preset", "imagenet", "--data-dir", shards, *args, "--epochs", "1", "--name", "p")
    assert tiny["steps"] == 6
    # a folder run trained with repeated augmentation is evaluated on the shards of the same images
    cli.json("train", "--data-dir", folder, *args, "--epochs", "1", "--set", "data.aug_repeats=2", "--name", "ra")
    assert cli.json("eval", tmp_path / "ra", "--dataset", "shards", "--data-dir", shards, "--device", "cpu")[
        "count"] == 12


@pytest.mark.slow  # trainings: the quick loop keeps under 90 s
def test_a_loopback_http_server_serves_shards_that_train(cli, shards, server, tmp_path):
    import shutil

    root, url, hits = server
    shutil.copytree(shards, root / "wds")
    base = f"{url}/wds"
    out = cli.json("train", "--dataset", "shards", "--data-dir", base, "--model", "resnet20", "--image-size", "24",
                   "--workers", "0", "--batch-size", "8", "--epochs", "1", "--device", "cpu", "--run-dir", tmp_path,
                   "--name", "h")
    assert out["steps"] == 6 and "/wds/index.json" in hits and "/wds/train-000005.tar" in hits
    piped = cli.json("eval", tmp_path / "h", "--dataset", "shards", "--data-dir", f"pipe:cat {shards}/{{}}",
                     "--device", "cpu")
    assert piped["count"] == 12


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_epoch_sees_the_batches_an_uninterrupted_one_sees(shards, workers):
    from resnet_cli import config as C
    from resnet_cli.data import load_data, make_loader

    cfg = C.resolve(sets=["data.dataset=shards", f"data.data_dir={shards}", "data.image_size=16",
                          f"data.workers={workers}"])
    data = load_data(cfg.data)
    loader = make_loader(data, cfg.data, "train", 4, torch.device("cpu"), training=True, seed=5)
    assert len(loader) == data.epoch_steps(4) == 12
    whole = [(x, y) for x, y in loader.batches(1)]
    assert len(whole) == 12
    for start in (1, 5, 7):
        tail = list(loader.batches(1, start=start))
        assert len(tail) == 12 - start
        for (x, y), (x2, y2) in zip(whole[start:], tail):
            assert torch.equal(y, y2) and torch.equal(x, x2)
    other = [y for _, y in loader.batches(2)]
    assert not all(torch.equal(a, b) for a, b in zip(other, [y for _, y in whole]))  # each epoch draws anew


@pytest.mark.slow  # trainings: the quick loop keeps under 90 s
def test_broken_shards_are_one_line_and_exit_2(cli, shards, tmp_path):
    import shutil

    def broken(name, change):
        target = tmp_path / name
        shutil.copytree(shards, target)
        change(target)
        return cli("train", "--dataset", "shards", "--data-dir", target, "--model", "resnet20", "--image-size", "16",
                   "--workers", "0", "--batch-size", "8", "--epochs", "1", "--device", "cpu", "--run-dir",
                   tmp_path / "runs", "--name", name)

    def truncate(t):
        p = t / "train-000002.tar"
        p.write_bytes(p.read_bytes()[:5000])

    def drop_entry(t):
        index = json.loads((t / "index.json").read_text())
        index["splits"]["train"]["shards"][0].pop("sha256")
        (t / "index.json").write_text(json.dumps(index))

    def bad_image(t):
        import io
        import tarfile

        p = t / "val-000001.tar"
        with tarfile.open(p) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as out:
            for m, data in members:
                data = b"\xff\xd8garbage" if m.name.endswith(".jpg") else data
                m.size = len(data)
                out.addfile(m, io.BytesIO(data))
        p.write_bytes(buffer.getvalue())
        index = json.loads((t / "index.json").read_text())
        entry = index["splits"]["val"]["shards"][1]
        entry["sha256"], entry["bytes"] = hashlib.sha256(buffer.getvalue()).hexdigest(), len(buffer.getvalue())
        (t / "index.json").write_text(json.dumps(index))

    for name, change, text in (("trunc", truncate, "train-000002.tar: its sha256 is not the index's"),
                               ("entry", drop_entry, "a train shard entry lacks name, count, bytes or sha256"),
                               ("image", bad_image, "val-000001.tar: 0000")):
        result = broken(name, change)
        assert result.exit_code == 2 and text in result.stderr, (name, result.output)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert (tmp_path / name / "index.json").exists()  # nothing of the user's is touched
    assert "cannot decode image" in broken("image2", bad_image).stderr


@pytest.mark.slow  # two processes under torchrun
def test_torchrun_ranks_read_disjoint_shards_and_evaluate_every_sample_once(shards, tmp_path, proc):
    """Two gloo ranks: each trains on its own shards (disjoint), and evaluation counts every sample once."""
    script = tmp_path / "ranks.py"
    script.write_text(f"""
import json, os, sys, torch, torch.distributed as dist
from resnet_cli import config as C
from resnet_cli.data import load_data, make_loader
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
cfg = C.resolve(sets=["data.dataset=shards", "data.data_dir={shards}", "data.image_size=16", "data.workers=1"])
data = load_data(cfg.data)
train = make_loader(data, cfg.data, "train", 4, torch.device("cpu"), training=True, seed=3, rank=rank, world=world)
test = make_loader(data, cfg.data, "test", 5, torch.device("cpu"), training=False, rank=rank, world=world)
from resnet_cli.data.shard_plan import train_plan
roles, per_role = train_plan(data.split_shards("train"), 3, 0, rank, world, 1, 4)
seen = sum(len(y) for _, y in test.batches())
steps = sum(1 for _ in train.batches(0))
out = [None] * world
dist.all_gather_object(out, {{"shards": sorted(i for r in roles for i in r), "seen": seen, "steps": steps}})
if rank == 0:
    print(json.dumps(out))
dist.destroy_process_group()
""")
    done = __import__("subprocess").run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                                         "--master-port", "29533", str(script)], capture_output=True, text=True,
                                        timeout=300, env=proc.env)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = json.loads(done.stdout.strip().splitlines()[-1])
    assert not set(a["shards"]) & set(b["shards"]) and len(a["shards"]) == len(b["shards"]) == 3
    assert a["seen"] + b["seen"] == 12 and a["steps"] == b["steps"] == 6


@pytest.mark.slow  # three training processes
def test_sigterm_mid_epoch_on_shards_then_resume_ends_with_the_uninterrupted_weights(shards, tmp_path, proc, ckpts):
    args = ("train", "--dataset", "shards", "--data-dir", shards, "--model", "resnet20", "--image-size", "16",
            "--workers", "2", "--batch-size", "4", "--epochs", "2", "--device", "cpu", "--set",
            "train.log_interval=1", "--run-dir", tmp_path)
    ref = proc.run(*args, "--name", "ref")
    assert ref.returncode == 0, ref.stderr
    from test_preemption import strike_at_line

    code, err, _ = strike_at_line(proc.start(*args, "--name", "victim"), "epoch 2/2 step 5/12", signal.SIGTERM)
    assert code == 143, err
    assert 5 <= ckpts.load(tmp_path / "victim" / "last.pt")["partial"]["batch"] < 12
    done = proc.run("train", "--resume", tmp_path / "victim")
    assert done.returncode == 0, done.stderr
    ckpts.assert_same_weights(tmp_path / "ref" / "last.pt", tmp_path / "victim" / "last.pt")


@pytest.mark.slow  # trainings: the quick loop keeps under 90 s
def test_a_command_saved_in_a_checkpoint_is_never_run(cli, shards, tmp_path):
    """A `pipe:` data_dir comes from the user's command line, never from a checkpoint's config."""
    marker = tmp_path / "ran"
    pipe = f"pipe:touch {marker}; cat {shards}/{{}}"
    out = cli.json("train", "--dataset", "shards", "--data-dir", pipe, "--model", "resnet20", "--image-size", "16",
                   "--workers", "0", "--batch-size", "8", "--epochs", "1", "--device", "cpu", "--run-dir", tmp_path,
                   "--name", "p")
    assert out["steps"] == 6 and marker.exists()
    marker.unlink()
    for args in (("eval", tmp_path / "p", "--device", "cpu"), ("train", "--resume", tmp_path / "p")):
        refused = cli(*args)
        assert refused.exit_code == 2 and "a command from a checkpoint is never run: give --data-dir" in \
            refused.stderr, refused.output
        assert not marker.exists()
    again = cli.json("eval", tmp_path / "p", "--data-dir", pipe, "--device", "cpu")
    assert again["count"] == 12 and marker.exists()


def test_the_command_line_starts_loader_workers_from_a_fork_server(monkeypatch):
    """A DataLoader worker forked from a training process with threads can deadlock at birth (seen: a torchrun
    shard run hung in CPython's after-fork handler, data/loader.py). `resnet` (cli.main) starts workers from a fork
    server; the Python API keeps PyTorch's default, since a fork server re-imports an unguarded user script. The
    torchrun tests above run `python -m resnet_cli`, so their workers start this way."""
    import os

    from resnet_cli import cli
    from resnet_cli.data.loader import WORKER_START_VAR, worker_context
    from resnet_cli.errors import BadInput

    monkeypatch.setenv(WORKER_START_VAR, "fork")  # recorded: the variable is put back as it was after the test
    monkeypatch.delenv(WORKER_START_VAR)
    assert worker_context() is None  # a script of the user's: PyTorch's default
    monkeypatch.setattr(cli, "app", lambda: None)
    cli.main()
    assert os.environ[WORKER_START_VAR] == "forkserver"
    assert worker_context().get_start_method() == "forkserver"
    monkeypatch.setenv(WORKER_START_VAR, "telepathy")
    with pytest.raises(BadInput, match="RESNET_CLI_WORKER_START='telepathy': this platform starts processes by"):
        worker_context()


def test_a_resume_on_another_number_of_processes_says_the_plan_changed(shards, tmp_path, cli):
    """#34 item 11: steps per epoch of shards depend on the number of processes; a resume on fewer (an elastic
    shrink) says so in one line instead of silently replaying another plan; the global batch stays."""
    import torch

    args = ["--dataset", "shards", "--data-dir", shards, "--model", "resnet20", "--image-size", "16", "--workers",
            "0", "--batch-size", "8", "--device", "cpu", "--run-dir", tmp_path]
    first = cli.json("train", *args, "--epochs", "1", "--name", "w")
    last = tmp_path / "w" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["world"] == 1
    resumed = cli("train", "--resume", tmp_path / "w", "--epochs", "2")
    assert resumed.exit_code == 0 and "note: resumed on" not in resumed.stderr  # the same world: no note
    ckpt["world"] = 2  # as if it had started under torchrun --nproc-per-node 2
    torch.save(ckpt, last)
    shrunk = cli("train", "--resume", tmp_path / "w", "--epochs", "3")
    assert shrunk.exit_code == 0, shrunk.output
    assert "note: resumed on 1 process, started on 2: shards are dealt to ranks by their number" in shrunk.stderr
    assert first["steps"] > 0
