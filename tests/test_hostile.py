"""Hostile inputs, by class (issue: hostile inputs, round two): one rule for output paths, one validation of
numbers."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from typer.testing import CliRunner

    from resnet_cli.cli import app

    root = tmp_path_factory.mktemp("hostile")
    result = CliRunner().invoke(app, ["train", "--preset", "smoke", "--device", "cpu", "--epochs", "1", "--set",
                                      "data.synthetic_train=64", "--set", "data.synthetic_test=32", "--run-dir",
                                      str(root), "--name", "r"])
    assert result.exit_code == 0, result.output
    return root / "r"


def test_an_existing_file_is_replaced_only_with_force(cli, tmp_path):
    target = tmp_path / "m.pt"
    target.write_bytes(b"mine")
    refused = cli("build", "resnet20", "-o", target)
    assert refused.exit_code == 2 and refused.stderr.strip() == f"error: -o {target} exists; pass --force to replace it"
    assert target.read_bytes() == b"mine"
    assert cli("build", "resnet20", "-o", target, "--force").exit_code == 0
    assert torch.load(target, weights_only=True)["config"]["model"]["name"] == "resnet20"
    folder = cli("build", "resnet20", "-o", tmp_path)
    assert folder.exit_code == 2 and "is a folder; give a file name" in folder.stderr


def test_a_runs_checkpoints_are_never_replaced(cli, run, ckpts):
    before = (run / "best.pt").read_bytes()
    for args in (["build", "resnet20", "-o", run / "best.pt", "--force"],
                 ["export", run, "-o", run / "last.pt", "--force"]):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert "is a checkpoint of the run" in result.stderr and "it is never replaced" in result.stderr
    assert (run / "best.pt").read_bytes() == before
    assert ckpts.load(run / "last.pt")["epoch"] == 1  # --resume still works from it


def test_every_command_that_writes_a_file_asks_before_replacing(cli, run, tmp_path):
    pytest.importorskip("matplotlib")
    taken = {name: tmp_path / name for name in ("e.pt2", "e.pt2.json", "p.png", "c.png", "g.png")}
    for path in taken.values():
        path.write_text("mine")
    (tmp_path / "f.pt2.json").write_text("mine")  # export's sidecar counts too: f.pt2 is free, its .json is not
    for args in (["export", run, "-o", taken["e.pt2"]], ["export", run, "-o", tmp_path / "f.pt2"],
                 ["plot", run, "-o", taken["p.png"]],
                 ["eval", run, "--confusion", "-o", taken["c.png"], "--device", "cpu"],
                 ["gradflow", "resnet20", "--batch-size", "8", "-o", taken["g.png"]]):
        result = cli(*args)
        assert result.exit_code == 2 and "exists; pass --force to replace it" in result.stderr, args
    assert all(p.read_text() == "mine" for p in taken.values()) and (tmp_path / "f.pt2.json").read_text() == "mine"
    assert cli("plot", run, "-o", taken["p.png"], "--force").exit_code == 0
    assert taken["p.png"].read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["train", "--lr", "nan"], "train.lr: expected a finite number, got nan"),
    (["train", "--set", "train.weight_decay=.inf"], "train.weight_decay: expected a finite number, got inf"),
    (["train", "--set", "data.mixup=nan"], "data.mixup: expected a finite number, got nan"),
    (["train", "--set", "data.cutmix=-.inf"], "data.cutmix: expected a finite number, got -inf"),
    (["train", "--ema", "nan"], "train.ema: expected a finite number, got nan"),
    (["flops", "--tolerance", "nan"], "--tolerance must be in [0, 1), got nan"),
    (["export", "{run}", "-o", "{tmp}/x.onnx", "--tolerance", "nan"], "--tolerance must be a positive number"),
    (["eval", "{run}", "--crop-pct", "nan"], "--crop-pct is a fraction in (0, 1]"),
])
def test_numbers_are_finite_and_in_range(cli, run, tmp_path, args, message):
    result = cli(*[str(a).format(run=run, tmp=tmp_path) for a in args])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert "Traceback" not in result.output


@pytest.mark.slow  # 2 s: the quick loop keeps under 90 s
def test_reads_are_bounded(cli, tmp_path):
    """Only regular files are read as configs and checkpoints; YAML aliases, non-UTF-8 and runaway nesting are
    one line each; a preset is a name, never a path; a huge value is cut short in the message."""
    import os

    bomb = tmp_path / "bomb.yaml"  # the "billion laughs" shape: each line doubles the one before
    bomb.write_text("a: &a [x, x]\n" + "".join(f"{c}: &{c} [*{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")))
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    (tmp_path / "latin.yaml").write_bytes(b"train: {lr: 0.1}  # caf\xe9\n")
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "huge.yaml").write_text("train:\n  optimizer: " + "x" * 200_000 + "\n")
    cases = [(["train", "--config", bomb], "YAML aliases (*name) are not read (line 2)"),
             (["train", "--config", fifo], f"config file {fifo} is a FIFO, not a regular file: refused"),
             (["train", "--config", tmp_path / "latin.yaml"], "is not UTF-8 text"),
             (["train", "--config", tmp_path / "deep.yaml"], "YAML nested too deeply to be a config"),
             (["train", "--preset", "../presets/smoke"], "unknown preset '../presets/smoke'"),
             (["eval", fifo, "--model", "resnet20", "--dataset", "synthetic"], "not a regular file: refused"),
             (["eval", "/dev/zero", "--model", "resnet20", "--dataset", "synthetic"],
              "checkpoint /dev/zero is a device, not a regular file: refused")]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.output[-500:])
    huge = cli("train", "--config", tmp_path / "huge.yaml")
    assert huge.exit_code == 2 and "train.optimizer: 'xxxxx" in huge.stderr and len(huge.stderr) < 400


def test_wrong_numbers_are_refused_not_printed(cli, tmp_path, run):
    """A diverged checkpoint (NaN weights) is refused by eval, predict, export and summary; an empty class
    folder is refused; a decompression bomb among good images is named and skipped by predict."""
    pytest.importorskip("PIL")
    from PIL import Image

    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["model"]["layer1.0.bn1.running_var"][0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pt")
    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    for args in (["eval", tmp_path / "nan.pt"], ["predict", tmp_path / "nan.pt", tmp_path / "ok.png"],
                 ["export", tmp_path / "nan.pt", "-o", tmp_path / "nan.onnx"], ["summary", tmp_path / "nan.pt"]):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "holds non-finite values (NaN or Inf) in layer1.0.bn1.running_var" in result.stderr
    folders = tmp_path / "folders"
    for split in ("train", "val"):
        (folders / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folders / split / "cat" / "0.png")
    (folders / "train" / "dog").mkdir()  # a class with no images
    empty = cli("train", "--data-dir", folders, "--device", "cpu", "--epochs", "1")
    assert empty.exit_code == 2 and f"{folders / 'train' / 'dog'} holds no images" in empty.stderr


def test_a_decompression_bomb_is_one_named_image(cli, tmp_path, run, monkeypatch):
    pytest.importorskip("PIL")
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    Image.new("RGB", (200, 200)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 200x200 is then over twice the limit: a "bomb"
    out = cli.json("predict", run, tmp_path / "ok.png", tmp_path / "bomb.png", "--device", "cpu")
    assert out["count"] == 1 and out["predictions"][0]["path"].endswith("ok.png")
    assert out["skipped"][0]["path"].endswith("bomb.png") and "decompression bomb" in out["skipped"][0]["error"]


def test_a_run_folder_has_one_writer(cli, make_trainer):
    """A run folder is locked while a process trains in it: a second --resume gets one line (two writers would
    overwrite each other's last.pt); once the first lets go, the resume runs."""
    first = make_trainer(**{"train.epochs": 2})
    first.save()  # a last.pt at step 0 to resume from, while `first` still holds the folder
    busy = cli("train", "--resume", first.run_dir)
    assert busy.exit_code == 2
    assert busy.stderr.strip().startswith(f"error: run folder {first.run_dir} is in use: process ")
    assert "trains in it; two writers would overwrite each other's last.pt" in busy.stderr
    first.close()
    again = cli("train", "--resume", first.run_dir)
    assert again.exit_code == 0, again.output


def test_resume_removes_only_its_own_temporary_files(cli, run, tmp_path):
    import shutil

    copy = tmp_path / "r"
    shutil.copytree(run, copy)
    (copy / ".last.tmp.abc123.pt").write_bytes(b"half a checkpoint")  # what a kill mid-write leaves
    (copy / ".notes.tmp.keep").write_text("the user's own file")
    result = cli("train", "--resume", copy, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert not (copy / ".last.tmp.abc123.pt").exists() and (copy / ".notes.tmp.keep").read_text() == "the user's own file"


def test_sixteen_bit_images_are_scaled_not_clipped():
    import numpy as np
    from PIL import Image

    from resnet_cli.data.inputs import InputSpec

    gray = Image.fromarray(np.full((16, 16), 32896, dtype=np.uint16))  # mid-gray in 16 bits (128 x 257)
    assert gray.mode.startswith("I;16") or gray.mode == "I"
    for channels in (1, 3):
        spec = InputSpec.of(["a"], channels, (16, 16), 0, [0.5] * channels, [0.5] * channels)
        x = spec.transform(gray)
        assert x.shape == (channels, 16, 16) and int(x.min()) == int(x.max()) == 128  # PIL's convert gives 255


def test_sixteen_bit_images_are_scaled_exactly_in_little_memory():
    """Every 16-bit value maps to rint(v * 255 / 65535), as in float64, while the conversion holds about 7 bytes
    a pixel (numpy's allocations, traced): float64 temporaries took 24, 4.3 GB for the largest image Pillow
    decodes (179 million pixels)."""
    import tracemalloc

    import numpy as np
    from PIL import Image

    from resnet_cli.data.transforms import upright_8bit

    every = Image.fromarray(np.arange(65536, dtype=np.uint16).reshape(256, 256))
    got = np.asarray(upright_8bit(every, "L")).ravel()
    assert np.array_equal(got, np.rint(np.arange(65536) * 255 / 65535).astype(np.uint8))
    big = Image.fromarray(np.full((1000, 1000), 40000, dtype=np.uint16))
    tracemalloc.start()
    try:
        out = upright_8bit(big, "RGB")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.getpixel((0, 0)) == (156, 156, 156) and peak < 8 * 1000 * 1000, peak


def test_resuming_on_other_classes_is_refused(cli, tmp_path):
    from PIL import Image

    data = tmp_path / "images"
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (data / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (12, 12), (60 * i, 20, 200)).save(data / split / cls / f"{i}.png")
    args = ["train", "--data-dir", data, "--device", "cpu", "--epochs", "2", "--batch-size", "4", "--set",
            "data.image_size=8", "--set", "data.workers=0", "--run-dir", tmp_path / "runs", "--name", "f"]
    assert cli(*args, "--set", "run.stop_after_epochs=1").exit_code == 0
    for split in ("train", "val"):
        (data / split / "dog").rename(data / split / "wolf")
    result = cli("train", "--resume", tmp_path / "runs" / "f")
    assert result.exit_code == 2
    assert "trained on the classes cat, dog, but its data now has cat, wolf" in result.stderr


def test_labels_out_of_range_and_empty_splits_are_one_line(cli, tmp_path):
    import numpy as np
    from fakedata import idx_bytes, write_idx_set

    d = tmp_path / "mnist"
    write_idx_set(d, gz=False)
    (d / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([3] * 31 + [12])))
    result = cli("train", "--set", "data.dataset=mnist", "--data-dir", d, "--device", "cpu", "--epochs", "1",
                 "--set", "data.download=false")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == ("error: mnist: the test labels hold 12, outside 0..9 for 10 classes: the label "
                                     "file is damaged or not this dataset's")
    (d / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(0)))
    (d / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((0, 28, 28))))
    empty = cli("train", "--set", "data.dataset=mnist", "--data-dir", d, "--device", "cpu", "--epochs", "1",
                "--set", "data.download=false")
    assert empty.exit_code == 2 and "mnist: the test split has no images" in empty.stderr


def test_escape_sequences_from_files_are_shown_not_sent(cli, tmp_path, run):
    from PIL import Image

    name = tmp_path / "evil\x1b]0;pwned\x07\x1b[2J.png"
    Image.new("RGB", (32, 32)).save(name)
    out = cli("predict", run, name, "--device", "cpu")
    assert out.exit_code == 0, out.output
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout and "evil\\x1b]0;pwned\\x07\\x1b[2J.png" in out.stdout
    bad = cli("eval", tmp_path / "missing\x1b[31m.pt")
    assert bad.exit_code == 2 and "\x1b" not in bad.stderr and "missing\\x1b[31m.pt" in bad.stderr


def test_a_crafted_input_record_is_refused(cli, tmp_path, run):
    from PIL import Image

    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["input"]["image_size"] = [100_000, 100_000]  # would resize every image to 10^10 pixels
    torch.save(ckpt, tmp_path / "crafted.pt")
    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    for args in (["predict", tmp_path / "crafted.pt", tmp_path / "ok.png"],
                 ["export", tmp_path / "crafted.pt", "-o", tmp_path / "m.pt2"]):
        result = cli(*args, "--device", "cpu") if args[0] == "predict" else cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "the checkpoint's input record (classes, channels, image size, mean/std) is not valid" in result.stderr
    huge = cli("export", run, "-o", tmp_path / "m.pt2", "--batch-size", "100000")
    assert huge.exit_code == 2 and "--batch-size must be 1..4096 or dynamic" in huge.stderr


@pytest.mark.slow  # 3.8 s on 2026-12-06's machine: the quick loop keeps under 90 s
def test_a_full_disk_during_export_is_one_line_and_leaves_nothing(cli, tmp_path, run, monkeypatch):
    import errno
    from pathlib import Path

    real = Path.write_bytes

    def full(self, data):
        if ".tmp." in self.name:
            real(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    for fmt, suffix in (("torchscript", ".pt"), ("export", ".pt2")):
        result = cli("export", run, "-o", tmp_path / f"m{suffix}", "--format", fmt)
        assert result.exit_code == 1, result.output
        assert f"no space left on device writing {tmp_path / f'm{suffix}'}" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no file, no temporary file


@pytest.mark.slow  # a subprocess with its own encoding
def test_a_non_utf8_file_name_prints_under_a_strict_utf8_terminal(tmp_path, run):
    """A file name that is not UTF-8 (its bytes kept by Python as surrogates) is printed with its bytes shown, even
    where the output encoding is strict UTF-8, instead of an encoding error."""
    import os
    import subprocess
    import sys

    from PIL import Image

    folder = os.fsencode(tmp_path) + b"/img\xff.png"
    Image.new("RGB", (32, 32)).save(os.fsdecode(folder), format="PNG")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "resnet_cli", "predict", str(run), os.fsdecode(folder), "--device",
                           "cpu"], capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"img\\xff.png" in done.stdout
    as_csv = subprocess.run([sys.executable, "-m", "resnet_cli", "predict", str(run), os.fsdecode(folder), "--device",
                             "cpu", "--csv"], capture_output=True, env=env, timeout=120)
    assert as_csv.returncode == 0, as_csv.stderr.decode(errors="replace")
    assert as_csv.stdout.splitlines()[1].startswith(os.fsencode(tmp_path).replace(b"\\", b"\\\\") + b"/img\\xff.png,1,")


def test_image_files_are_read_through_the_gate_and_closed(cli, tmp_path, run, monkeypatch):
    """An image file is read whole through the gate, within data.max_read_mb, and closed before it is decoded:
    no descriptor is left for the garbage collector (a ResourceWarning per image before); a file Pillow cannot
    identify is one reason that is the same every time (Pillow's own names a buffer's address); predict skips a
    file over its bound, named, and keeps the others."""
    import gc
    import warnings

    import numpy as np
    pytest.importorskip("PIL")
    from PIL import Image
    from test_crops import write_folder

    from resnet_cli import config as C
    from resnet_cli.data import load_data, make_loader
    from resnet_cli.errors import BadInput

    for split in ("train", "val"):
        write_folder(tmp_path / "images" / split, per_class=3, size=(40, 30))
    flags = {"data.dataset": "imagefolder", "data.data_dir": str(tmp_path / "images"), "data.image_size": 24,
             "data.workers": 0}
    data = load_data(C.resolve(flags=flags).data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for ds in (data.train_set, data.test_set):
            assert len([ds[i] for i in range(len(ds))]) == 6
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []

    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "images" / "val" / "b" / "big.png")  # 1.4 MiB: no PNG compresses noise
    for mb, message in ((1, f"image {tmp_path / 'images' / 'val' / 'b' / 'big.png'} is larger than 1 MiB "
                            "(data.max_read_mb): refused"),
                        (8, f"cannot decode image {tmp_path / 'images' / 'val' / 'a' / 'bad.png'} (not an image "
                            "in a format read here (JPEG, PNG, WebP, BMP, PPM, TIFF, GIF))")):
        if mb == 8:  # the large file is read now; the next problem is a file that is not an image
            (tmp_path / "images" / "val" / "a" / "bad.png").write_bytes(b"\x89PNG not really")
        cfg = C.resolve(flags={**flags, "data.max_read_mb": mb}).data
        with pytest.raises(BadInput) as refused:
            list(make_loader(load_data(cfg), cfg, "test", 4, torch.device("cpu"), training=False).batches())
        assert str(refused.value) == message

    from resnet_cli import gate, predict

    monkeypatch.setattr(predict, "IMAGE_LIMITS", gate.Limits(2**20, keys=predict.IMAGE_LIMITS.keys))
    out = cli.json("predict", run, tmp_path / "images" / "val" / "b", "--device", "cpu")
    big = tmp_path / "images" / "val" / "b" / "big.png"
    assert out["count"] == 3 and out["skipped"] == [
        {"path": str(big), "error": f"image {big} is larger than 1 MiB (the bound on an image file): refused"}]


@pytest.fixture
def bounded_resizes(monkeypatch):
    """Every Pillow resize refused (before it allocates) when its output is over 32 times a 256 x 256 square, and
    each output size recorded: an image's shape must never decide how much memory its evaluation takes."""
    pytest.importorskip("PIL")
    from PIL import Image

    import types

    seen = types.SimpleNamespace(sizes=[], unguarded=Image.Image.resize)

    def guarded(self, size, *args, **kwargs):
        assert size[0] * size[1] <= 32 * 256 * 256, f"a {size[0]} x {size[1]} resize of a {self.size} image"
        seen.sizes.append(tuple(size))
        return seen.unguarded(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", guarded)
    return seen


def test_an_image_of_extreme_aspect_ratio_is_never_resized_whole(tmp_path, bounded_resizes):
    """A 40,000 x 1 PNG is 201 bytes; resized whole to a shorter side of 256 it was 10,240,000 x 256 pixels
    (10.5 GB resident, measured), in predict (any URL), image-folder and shard evaluation, 10-crop too. Only the
    crops are resized now, from their own part of the image, to within 1 of a whole resize's pixels."""
    import numpy as np
    from PIL import Image

    from resnet_cli.data.imagefolder import ImageFolderDataset
    from resnet_cli.data.inputs import InputSpec
    from resnet_cli.data.transforms import MAX_WHOLE_ASPECT, center_crop, ten_crops, whole_views
    from resnet_cli.data.views import Views

    Image.new("RGB", (40_000, 1), (200, 10, 30)).save(tmp_path / "thin.png")
    assert (tmp_path / "thin.png").stat().st_size < 1_000
    spec = InputSpec.of(["a", "b"], 3, 224, 256, (0.5,) * 3, (0.5,) * 3)
    with Image.open(tmp_path / "thin.png") as im:
        out = spec.transform(im)  # what predict applies
    assert out.shape == (3, 224, 224) and out.flatten(1).unique(dim=1).tolist() == [[200], [10], [30]]
    folder = ImageFolderDataset([(str(tmp_path / "thin.png"), 1)], False, crop=224, resize=256,
                                views=Views(ten_crop=True))
    crops, label = folder[0]
    assert crops.shape == (10, 3, 224, 224) and label == 1 and crops.flatten(2).unique(dim=2).numel() == 3 * 10
    assert max(w * h for w, h in bounded_resizes.sizes) == 224 * 224
    with Image.open(tmp_path / "thin.png") as im:  # the multi-scale test sees its centre 32:1 at each scale
        assert [tuple(v.shape) for v in whole_views(im.convert("RGB"), (224, 256))] == [(2, 3, 224, 7168),
                                                                                         (2, 3, 256, 8192)]

    # a gradient 100 times wider than high: the crops of the region path against a whole resize
    x = torch.arange(2_000, dtype=torch.float64) * 255 / 1_999
    pixels = (x.view(1, -1, 1).expand(20, -1, 3) + torch.arange(20).view(-1, 1, 1)).clamp(0, 255).to(torch.uint8)
    img = Image.fromarray(pixels.numpy())
    assert 2_000 / 20 > MAX_WHOLE_ASPECT
    whole = torch.from_numpy(np.array(bounded_resizes.unguarded(img, (25_600, 256), Image.BILINEAR)))
    whole = whole.permute(2, 0, 1)
    left = (25_600 - 224) // 2
    centre = center_crop(img, 256, 224, 224)
    assert (centre.int() - whole[:, 16:240, left:left + 224].int()).abs().max() <= 1
    ten = ten_crops(img, 256, 224)
    assert (ten[1].int() - whole[:, :224, -224:].int()).abs().max() <= 1  # the top-right corner
    assert torch.equal(ten[6], ten[1].flip(-1)) and torch.equal(ten[4], centre)


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
       b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")


def test_image_bytes_are_read_only_as_the_formats_the_tool_reads():
    """Pillow identifies bytes by content, whatever the name, among dozens of formats; its EPS reader runs
    Ghostscript on the file's PostScript. A file's bytes open as JPEG (camera MPO included), PNG, WebP, BMP, PPM
    or PGM, TIFF or GIF only; PostScript named .png is one reason, like any file that is not an image."""
    import io

    from PIL import Image, UnidentifiedImageError, features

    from resnet_cli.data import image_files

    for fmt, mode in (("JPEG", "RGB"), ("PNG", "RGB"), ("WEBP", "RGB"), ("BMP", "RGB"), ("PPM", "RGB"),
                      ("PPM", "L"), ("TIFF", "RGB"), ("GIF", "P"), ("MPO", "RGB")):
        if fmt == "WEBP" and not features.check("webp"):  # a Pillow built without libwebp cannot write one
            continue
        data = io.BytesIO()
        Image.new(mode, (8, 6)).save(data, fmt)
        with image_files.opened(data.getvalue()) as im:
            assert im.size == (8, 6) and im.format in image_files.FORMATS, fmt
    for refused in (EPS, b"GIF87a but truncated", b"BM"):
        with pytest.raises(UnidentifiedImageError) as e:
            image_files.opened(refused)
        assert image_files.reason(e.value) == \
            "not an image in a format read here (JPEG, PNG, WebP, BMP, PPM, TIFF, GIF)"


@pytest.mark.slow  # a process of its own: Pillow finds Ghostscript on PATH once per process
def test_postscript_named_png_runs_no_command(proc, run, tmp_path):
    """predict (the same opener reads image folders, shards and `data convert`) on PostScript named photo.png,
    with a `gs` first on PATH that records each call: it is skipped as not an image, and `gs` never runs."""
    import json
    import os

    (tmp_path / "bin").mkdir()
    gs = tmp_path / "bin" / "gs"
    gs.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'gs-ran.txt'}\nexit 1\n")
    gs.chmod(0o755)
    (tmp_path / "photo.png").write_bytes(EPS)
    env = {**proc.env, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    done = __import__("subprocess").run(proc.cmd("predict", run, tmp_path / "photo.png", "--device", "cpu", "--json"),
                                        env=env, capture_output=True, text=True, timeout=300)
    assert not (tmp_path / "gs-ran.txt").exists()  # before: `gs --version` ran, then an internal error (exit 1)
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"skipped {tmp_path / 'photo.png'}: not an image in a format read here (JPEG, PNG, WebP, BMP, PPM, TIFF, GIF)",
        "1 unreadable image(s) skipped, 0 classified", "error: no image could be read"]
    report, error = done.stdout.rsplit("\n{", 1)  # --json: the report, then the error as JSON
    assert json.loads(report)["count"] == 0 and json.loads("{" + error)["exit_code"] == 2
