"""What a timm or torchvision user reaches for first: plain training flags, --data-dir alone, a hint to --set
for an unknown option, a fast `resnet list`, `resnet presets` (issue: the first hour with resnet)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fakedata import cifar10_archive, write_idx_set


def printed(cli, *args) -> dict:
    result = cli("train", *args, "--print-config")
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.stdout)


def test_each_training_flag_is_its_config_key(cli):
    cfg = printed(cli, "--dataset", "cifar100", "--workers", "2", "--image-size", "40", "--opt", "adamw",
                  "--wd", "0.01", "--sched", "cosine", "--precision", "bf16", "--ema", "0.99", "--smoothing", "0.1")
    assert cfg["data"]["dataset"] == "cifar100" and cfg["data"]["workers"] == 2 and cfg["data"]["image_size"] == 40
    t = cfg["train"]
    assert (t["optimizer"], t["weight_decay"], t["schedule"], t["precision"], t["ema"], t["label_smoothing"]) == \
        ("adamw", 0.01, "cosine", "bf16", 0.99, 0.1)
    assert t["lr"] == 0.001  # adamw's own default, as with --set train.optimizer=adamw
    assert printed(cli, "--weight-decay", "0.002", "--label-smoothing", "0.2")["train"]["weight_decay"] == 0.002
    help_text = cli("train", "--help", env={"COLUMNS": "200"}).stdout
    for key in ("data.dataset", "data.workers", "data.image_size", "train.optimizer", "train.weight_decay",
                "train.schedule", "train.precision", "train.ema", "train.label_smoothing"):
        assert key in help_text, key
    bad = cli("train", "--opt", "lion")
    assert bad.exit_code == 2 and "'lion' is not one of 'sgd', 'adamw', 'lamb'" in bad.stderr


def test_an_image_folder_is_cropped_at_the_networks_own_size_unless_told(cli, tmp_path):
    """--data-dir PHOTOS alone: an ImageNet net crops 224 (its input size, the paper's), a CIFAR net 32; a
    flag, --set or preset that says the size wins."""
    for split in ("train", "val"):
        (tmp_path / "photos" / split / "cat").mkdir(parents=True)
    folder = ["--data-dir", tmp_path / "photos"]
    assert printed(cli, *folder, "--model", "resnet18")["data"]["image_size"] == 224
    assert printed(cli, *folder, "--model", "resnet50-v1.5")["data"]["image_size"] == 224
    assert printed(cli, *folder)["data"]["image_size"] == 32  # resnet20, the default model
    assert printed(cli, *folder, "--model", "resnet18", "--image-size", "64")["data"]["image_size"] == 64
    assert printed(cli, *folder, "--model", "resnet18", "--set", "data.image_size=96")["data"]["image_size"] == 96
    assert printed(cli, "--preset", "finetune", *folder, "--model", "resnet20")["data"]["image_size"] == 224


@pytest.mark.parametrize("option, hint", [
    ("--momentum", "; to set train.momentum, use --set train.momentum=VALUE"),
    ("--warmup-length", "; to set train.warmup_length, use --set train.warmup_length=VALUE"),
    ("--val-split", "; to set data.val_split, use --set data.val_split=VALUE"),
    ("--frobnicate", "; any config key: --set SECTION.KEY=VALUE"),
    ("--bce-loss", "; to set train.loss, use --set train.loss=bce"),  # timm's names
    ("--aug-repeats", "; to set data.aug_repeats, use --set data.aug_repeats=VALUE"),
    ("--reprob", "; to set data.random_erasing, use --set data.random_erasing=VALUE"),
    ("--warmup-epochs", "; to set train.warmup_length, use --set train.warmup_length=5ep"),
    ("--val-resize-size", "; to set data.eval_resize, use --set data.eval_resize=VALUE"),  # torchvision's
])
def test_an_unknown_training_option_points_to_its_set_key(cli, option, hint):
    result = cli("train", option, "1")
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(hint) and f"No such option: {option}" in result.stderr


def test_other_tools_options_name_real_keys_and_none_is_an_option_of_ours(cli):
    import re

    from resnet_cli import config as C

    help_text = cli("train", "--help", env={"COLUMNS": "200"}).stdout
    for leaf, target in C.OTHER_TOOLS_OPTIONS.items():
        C.check_key(target.split("=", 1)[0], "OTHER_TOOLS_OPTIONS")  # a real key
        option = "--" + leaf.replace("_", "-")
        assert not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text), option  # else never reached


@pytest.mark.slow  # 1.5 s: the quick loop keeps under 90 s
@pytest.mark.default_device
def test_data_dir_alone_finds_its_dataset_and_never_falls_back_to_synthetic(cli, tmp_path, fashion_dir):
    assert printed(cli, "--data-dir", fashion_dir)["data"]["dataset"] == "fashion-mnist"
    assert printed(cli, "--data-dir", fashion_dir, "--dataset", "mnist")["data"]["dataset"] == "mnist"  # named: kept
    assert printed(cli, "--preset", "smoke", "--data-dir", tmp_path)["data"]["dataset"] == "synthetic"  # a preset's
    write_idx_set(tmp_path / "idx")  # IDX files, but neither MNIST's nor Fashion-MNIST's published ones
    (tmp_path / "cifar").mkdir()
    cifar10_archive(tmp_path / "cifar" / "cifar-10-python.tar.gz")
    (tmp_path / "folders" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    assert printed(cli, "--data-dir", tmp_path / "cifar")["data"]["dataset"] == "cifar10"
    assert printed(cli, "--data-dir", tmp_path / "folders")["data"]["dataset"] == "imagefolder"
    for folder, message in (("idx", "is an IDX file but not Fashion-MNIST's or MNIST's published one: say which "
                                    "dataset it is with --dataset mnist or --dataset fashion-mnist"),
                            ("empty", "(no IDX files, CIFAR batches or train/<class>/ folders); name it with "
                                      "--dataset"),
                            ("missing", "no such folder")):
        result = cli("train", "--data-dir", tmp_path / folder, "--epochs", "1", "--run-dir", tmp_path / "runs")
        assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "runs").exists()  # nothing trained
    typo = cli("train", "--dataset", "mnist", "--data-dir", tmp_path / "typo", "--set", "data.download=false")
    assert typo.exit_code == 2 and f"data.data_dir {tmp_path / 'typo'}: no such folder" in typo.stderr


def test_a_missing_data_dir_is_said_before_a_download(cli, tmp_path, monkeypatch):
    from resnet_cli.data import idx

    monkeypatch.setitem(idx.SPECS, "mnist", idx.SPECS["mnist"].__class__(
        "http://127.0.0.1:9/", {}, idx.SPECS["mnist"].gz_md5, (), idx.SPECS["mnist"].classes))  # nothing listens
    result = cli("train", "--dataset", "mnist", "--data-dir", tmp_path / "new", "--epochs", "1")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"note: data folder {tmp_path / 'new'} does not exist: creating it to download "
                                    "mnist there\nerror: mnist is not available (cannot download")


@pytest.mark.slow  # a few seconds: the quick loop keeps under 90 s
def test_list_counts_parameters_from_the_table(cli):
    import torch

    from resnet_cli.models import build_model, list_models, model_info
    from resnet_cli.models.specs import ArchSpec

    for name in list_models():
        with torch.device("meta"):
            built = sum(p.numel() for p in build_model(name).parameters())
        assert model_info(name).params == built, name
    spec = ArchSpec("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), "imagenet", "B")
    with torch.device("meta"):
        assert spec.parameters(37, 1) == sum(p.numel() for p in build_model("resnet50", 37, 1).parameters())
    rows = cli.json("list", "resnet50")
    assert rows[0]["params"] == 25_557_032  # torchvision's resnet50


def test_list_pretrained_names_torchvisions_weights_as_published(cli, tmp_path, monkeypatch):
    """`resnet list --pretrained` (timm's list_pretrained): every torchvision:NAME, its network (with exactly
    torchvision's num_params), torchvision's evaluation and published accuracy, and whether it is cached in
    torch hub's folder, found as torch.hub finds it, without importing torch."""
    import torch.hub

    from resnet_cli import torchvision_weights as tv
    from resnet_cli.models import model_info

    for env in ({"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")}, {}):
        for var in ("TORCH_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(var, raising=False)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        assert tv.cache_dir() == Path(torch.hub.get_dir()) / "checkpoints", env
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    tv.cache_dir().mkdir(parents=True)
    (tv.cache_dir() / "resnet50-0676ba61.pth").write_bytes(b"")
    rows = cli.json("list", "--pretrained")
    assert [r["name"] for r in rows] == [
        "torchvision:resnet18", "torchvision:resnet34", "torchvision:resnet50:v1", "torchvision:resnet50",
        "torchvision:resnet101:v1", "torchvision:resnet101", "torchvision:resnet152:v1", "torchvision:resnet152"]
    assert all(model_info(r["model"]).params == r["params"] for r in rows)  # torchvision's counts, exactly
    assert {n for r in rows for n in r["names"]} == {tv.PREFIX + n for n in tv.NAMES}
    assert all(tv.architecture(n) == r["model"] for r in rows for n in r["names"])
    v1 = rows[2]
    assert (v1["model"], v1["resize"], v1["top1"], v1["top5"], v1["cached"]) == ("resnet50-v1.5", 256, 0.7613,
                                                                                 0.92862, True)  # as eval's
    assert rows[3]["names"] == ["torchvision:resnet50", "torchvision:resnet50:v2"] and not rows[3]["cached"]
    assert [r["name"] for r in cli.json("list", "--pretrained", "resnet50*")] == [v1["name"], rows[3]["name"]]
    assert [r["name"] for r in cli.json("list", "--pretrained", "torchvision:*:v2")] == [
        "torchvision:resnet50", "torchvision:resnet101", "torchvision:resnet152"]
    table = cli("list", "--pretrained", env={"COLUMNS": "80"})
    assert table.exit_code == 0 and max(map(len, table.stdout.splitlines())) <= 80
    assert "│ resnet50:v1  │ resnet50-v1.5  │ 25.56M │    256 │ 76.130% │ 92.862% │ yes    │" in table.stdout
    none = cli("list", "--pretrained", "vgg*")
    assert none.exit_code == 0 and "no published weights match 'vgg*'" in none.stdout


@pytest.mark.slow
def test_list_is_fast_and_needs_no_torch():
    for args, shown in ((["list"], "resnet1202"), (["list", "--pretrained"], "resnet152:v1")):
        code = "import sys, time; t = time.perf_counter(); from resnet_cli.cli import main\n" \
               f"sys.argv = {['resnet', *args]}\ntry:\n    main()\nexcept SystemExit:\n    pass\n" \
               "print('torch' in sys.modules, time.perf_counter() - t, file=sys.stderr)"
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        torch_loaded, seconds = out.stderr.split()[-2:]
        assert torch_loaded == "False" and shown in out.stdout, args
        assert float(seconds) < 1.0 and wall < 3.0, (args, seconds, wall)


def test_presets_lists_every_preset_with_its_description(cli):
    from resnet_cli.config import list_presets

    rows = cli.json("presets")
    assert [r["name"] for r in rows] == list_presets() and len(rows) >= 7
    smoke = next(r for r in rows if r["name"] == "smoke")
    assert smoke["description"].startswith("Synthetic data, resnet20")
    table = cli("presets", env={"COLUMNS": "80"})
    assert table.exit_code == 0 and "fashion-mnist" in table.stdout and "imagenet" in table.stdout
    assert json.loads(cli("presets", "--json").stdout) == rows


@pytest.fixture
def mnist_run(cli, tmp_path):
    """A one-epoch run on 28x28 grayscale IDX images (64 of them, random: labelled mnist)."""
    write_idx_set(tmp_path / "idx", n_train=64, n_test=32)
    out = cli.json("train", "--dataset", "mnist", "--data-dir", tmp_path / "idx", "--epochs", "1", "--batch-size",
                   "32", "--device", "cpu", "--run-dir", tmp_path / "runs", "--name", "m")
    return tmp_path / "runs" / "m", out


def test_a_run_records_the_input_it_trained_on_and_summary_and_flops_use_it(cli, mnist_run):
    run, _ = mnist_run
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["data"]["image_size"], saved["data"]["channels"]) == (28, 1)
    assert (saved["model"]["num_classes"], saved["model"]["in_channels"]) == (10, 1)
    summary = cli.json("summary", run)
    assert summary["input_size"] == 28 and summary["in_channels"] == 1
    assert summary["stages"][1]["output_size"] == [28, 28]  # conv2_x keeps the input size on a CIFAR-style net
    assert cli.json("flops", run, "--no-check")["models"][0]["input_size"] == 28
    again = cli("train", "--dataset", "mnist", "--data-dir", run.parent.parent / "idx", "--epochs", "1",
                "--batch-size", "32", "--device", "cpu", "--run-dir", run.parent, "--name", "m", "--resume", "auto")
    assert again.exit_code == 0 and "is finished" in again.stdout  # the recorded 28/1 is no conflict


def test_eval_and_predict_never_guess_for_untrained_weights(cli, tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    built = tmp_path / "b.pt"
    assert cli("build", "resnet20", "--num-classes", "100", "-o", built).exit_code == 0
    guess = cli("eval", built)
    assert guess.exit_code == 2 and "holds untrained weights (resnet build): say which dataset to evaluate it on " \
                                   "with --dataset" in guess.stderr
    other = cli("eval", built, "--dataset", "synthetic")
    assert other.exit_code == 2 and "has 100 outputs but synthetic has 10 classes" in other.stderr
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    noise = cli("predict", built, tmp_path / "a.png")
    assert noise.exit_code == 2 and "holds untrained weights (written by resnet build)" in noise.stderr


def test_messages_name_what_went_wrong(cli, tmp_path, mnist_run):
    run, _ = mnist_run
    import torch

    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["model"]["fc.weight"] = torch.zeros(10, 32)
    torch.save(ckpt, tmp_path / "bent.pt")
    bent = cli("eval", tmp_path / "bent.pt")
    assert bent.exit_code == 2
    assert "does not fit resnet20: size mismatch for fc.weight: copying a param with shape torch.Size([10, 32])" \
           in bent.stderr
    blocked = cli("build", "resnet20", "-o", "/proc/x.pt")
    assert blocked.exit_code == 2 and blocked.stderr.strip().endswith(": /proc/x.pt")
    for flag in (["--ten-crop"], ["--image-size", "64"]):
        whole = cli("eval", run, *flag)
        assert whole.exit_code == 2 and "--crop-pct, --ten-crop, --scales and --image-size are for image folders" in whole.stderr
    from resnet_cli.errors import BadInput

    loud = cli("summary", "--depth", "7", "--debug")  # --debug after the command: the exception, not the line
    assert isinstance(loud.exception, BadInput) and "error:" not in loud.stderr
    quiet = cli("summary", "--depth", "7")
    assert quiet.exit_code == 2 and quiet.stderr.startswith("error: no ResNet of depth 7")


@pytest.mark.slow  # 1.0-1.3 s: the quick loop keeps under 90 s (CONTRIBUTING)
def test_figures_are_written_in_the_format_their_suffix_names(cli, tmp_path, mnist_run):
    pytest.importorskip("matplotlib")
    run, _ = mnist_run
    assert cli("plot", run, "-o", tmp_path / "c.svg").exit_code == 0
    assert b"<svg" in (tmp_path / "c.svg").read_bytes()[:400]
    wrong = cli("plot", run, "-o", tmp_path / "c.txt")
    assert wrong.exit_code == 2 and "a figure is written as .png, .svg, .pdf; got .txt" in wrong.stderr
    flow = cli("gradflow", "resnet20", "--dataset", "synthetic", "--batch-size", "8", "-o", tmp_path / "g.pdf")
    assert flow.exit_code == 0 and (tmp_path / "g.pdf").read_bytes()[:4] == b"%PDF"


@pytest.mark.slow
def test_torchscript_is_still_written_with_one_note_and_no_pytorch_warning(tmp_path):
    """TorchScript stays available (PyTorch deprecates it): one line says so, torch.jit's warnings do not leak;
    handing the file to eval is one line naming what it is."""
    out = subprocess.run([sys.executable, "-W", "default", "-m", "resnet_cli", "build", "resnet20", "-o",
                          tmp_path / "m.pt", "--format", "torchscript"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "note: PyTorch deprecates TorchScript (torch.jit); --format export (.pt2) or onnx " \
                                 "are its successors"
    ev = subprocess.run([sys.executable, "-W", "default", "-m", "resnet_cli", "eval", tmp_path / "m.pt", "--dataset",
                         "synthetic"], capture_output=True, text=True, timeout=120)
    assert ev.returncode == 2
    assert ev.stderr.strip() == f"error: {tmp_path / 'm.pt'} is a TorchScript file (resnet build/export --format " \
                                "torchscript), not a checkpoint: give the checkpoint or run folder it was made from"
    # fvcore scripts a loss when imported and traces through torch.jit: flops prints none of it
    flops = subprocess.run([sys.executable, "-W", "default", "-m", "resnet_cli", "flops", "resnet20"],
                           capture_output=True, text=True, timeout=120)
    assert flops.returncode == 0 and flops.stderr == "", flops.stderr


@pytest.mark.slow  # a few seconds: the quick loop keeps under 90 s
def test_torchvision_weights_by_name_are_downloaded_checked_and_cached(cli, tmp_path, server, monkeypatch):
    """`--init torchvision:resnet18`: torchvision's file from a (loopback) mirror, its sha256 checked against the
    name, kept in torch hub's cache and reused offline; a wrong file is not kept; offline is one line. eval,
    predict and summary take the name, or the file, as what it is (torchvision's evaluation, ImageNet's classes)."""
    import hashlib

    import torch

    from resnet_cli import torchvision_weights as tv
    from resnet_cli.models import build_model

    www, url, hits = server
    torch.manual_seed(1)
    published = build_model("resnet18").state_dict()  # a torchvision-format state_dict, 1000 classes
    torch.save(published, www / "blob")
    digest = hashlib.sha256((www / "blob").read_bytes()).hexdigest()
    name = f"resnet18-{digest[:8]}.pth"
    (www / "blob").rename(www / name)
    monkeypatch.setitem(tv.NAMES, "resnet18", name)
    monkeypatch.setitem(tv.FILES, name, tv.FILES["resnet50-11ad3fa6.pth"]._replace(arch="resnet18"))  # 224 from 232
    monkeypatch.setenv("RESNET_CLI_TORCHVISION_URL", url)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    train = ["train", "--preset", "smoke", "--model", "resnet18", "--device", "cpu", "--epochs", "1",
             "--set", "data.synthetic_train=32", "--set", "data.synthetic_test=16", "--run-dir", tmp_path / "runs"]
    first = cli(*train, "--init", "torchvision:resnet18")
    assert first.exit_code == 0, first.output
    cached = tmp_path / "torch" / "hub" / "checkpoints" / name
    assert cached.is_file() and hits == [f"/{name}"]
    assert f"model.init: loaded 120 of 122 tensors from {cached}; new head fc (1000 -> 10 classes)" in first.stdout
    again = cli(*train, "--init", "torchvision:resnet18")  # from the cache: no second request
    assert again.exit_code == 0 and hits == [f"/{name}"]
    # eval, predict and summary take the name (or the file, known by its name and checksum) without --model:
    # torchvision's evaluation of it, ImageNet-1k's classes
    from PIL import Image

    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "inet" / "val" / wnid).mkdir(parents=True)
        Image.new("RGB", (300, 240), (90, 120, 30)).save(tmp_path / "inet" / "val" / wnid / "a.png")
    ev = cli.json("eval", "torchvision:resnet18", "--data-dir", tmp_path / "inet", "--device", "cpu")
    assert (ev["model"], ev["count"], ev["image_size"], ev["resize"]) == ("resnet18", 2, 224, 232)
    assert ev["per_class"][0]["description"] == "tench, Tinca tinca"
    pub = ev["published"]  # torchvision's figures beside ours, compared only where the evaluation is theirs
    assert (pub["weights"], pub["top1"], pub["comparable"]) == ("ResNet50_Weights.IMAGENET1K_V2", 0.80858, False)
    text = cli("eval", "torchvision:resnet18", "--data-dir", tmp_path / "inet", "--device", "cpu")
    assert "torchvision publishes top-1 80.86%, top-5 95.43% for ResNet50_Weights.IMAGENET1K_V2, on ImageNet-1k's " \
           "50,000 validation images at 224 from 232, bilinear, one crop: not what was evaluated here" in text.stdout
    monkeypatch.setattr(tv, "IMAGENET_VAL", 2)  # as if these two were ImageNet's validation set
    same = cli.json("eval", "torchvision:resnet18", "--data-dir", tmp_path / "inet", "--device", "cpu")
    assert same["published"]["comparable"] and same["published"]["difference"]["top1"] == pytest.approx(
        100 * same["top1"] - 80.858, abs=1e-3)
    assert not cli.json("eval", "torchvision:resnet18", "--data-dir", tmp_path / "inet", "--device", "cpu",
                        "--crop-pct", "0.875")["published"]["comparable"]  # 224 from 256: not torchvision's 232
    monkeypatch.setattr(tv, "IMAGENET_VAL", 50_000)
    shown = cli.json("predict", cached, tmp_path / "inet", "--topk", "1")
    assert shown["model"] == "resnet18" and shown["predictions"][0]["top"][0]["description"]
    assert cli("summary", "torchvision:resnet18").exit_code == 0
    from resnet_cli import load_model

    clf = load_model("torchvision:resnet18")  # the Python API reads the name as the commands do
    assert (clf.name, clf.input.resize, clf.label(0), len(clf.classes)) == ("resnet18", 232, "tench (n01440764)",
                                                                            1000)
    (tmp_path / "renamed.pth").write_bytes(cached.read_bytes())  # not by its published name: a bare state_dict
    bare = cli("predict", tmp_path / "renamed.pth", tmp_path / "inet")
    assert bare.exit_code == 2 and "is a bare state_dict; say which model it is with --model" in bare.stderr
    torch.save(build_model("resnet18", num_classes=2).state_dict(), tmp_path / "two.pth")
    named = cli.json("eval", tmp_path / "two.pth", "--model", "resnet18", "--dataset", "imagefolder",
                     "--data-dir", tmp_path / "inet", "--device", "cpu")  # at the net's own 224, not data's 32
    assert (named["image_size"], named["resize"]) == (224, 256)
    assert named["per_class"][1]["description"] == "goldfish, Carassius auratus"  # the folder's wnids, described
    # 1000 outputs on a folder of some of ImageNet's classes (Imagenette): read in ImageNet's order, as predict
    # names the outputs; on a folder of other classes, refused as before (which output is which is not known)
    part = cli.json("eval", tmp_path / "renamed.pth", "--model", "resnet18", "--dataset", "imagefolder",
                    "--data-dir", tmp_path / "inet", "--device", "cpu")
    assert part["count"] == 2 and len(part["per_class"]) == 1000
    assert [c["class"] for c in part["per_class"] if c["count"]] == ["n01440764", "n01443537"]
    (tmp_path / "inet" / "val" / "cat").mkdir()
    Image.new("RGB", (300, 240)).save(tmp_path / "inet" / "val" / "cat" / "a.png")
    other = cli("eval", tmp_path / "renamed.pth", "--model", "resnet18", "--dataset", "imagefolder",
                "--data-dir", tmp_path / "inet", "--device", "cpu")
    assert other.exit_code == 2 and "has 1000 outputs but imagefolder has 3 classes" in other.stderr
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / name).write_bytes(cached.read_bytes() + b"\0")  # its name, not its checksum: the same
    bare = cli("predict", tmp_path / "other" / name, tmp_path / "inet")
    assert bare.exit_code == 2 and "is a bare state_dict" in bare.stderr
    wrong = f"resnet34-{'0' * 8}.pth"
    (www / wrong).write_bytes((www / name).read_bytes())
    monkeypatch.setitem(tv.NAMES, "resnet34", wrong)
    monkeypatch.setitem(tv.FILES, wrong, tv.FILES["resnet18-f37072fd.pth"])
    bad = cli(*train, "--init", "torchvision:resnet34")
    assert bad.exit_code == 2 and "its sha256 should start with 00000000" in bad.stderr
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / wrong).exists()
    monkeypatch.setenv("RESNET_CLI_TORCHVISION_URL", "http://127.0.0.1:9/")  # nothing listens: offline
    offline = cli(*train, "--init", "torchvision:resnet18:v1")
    assert offline.exit_code == 2
    assert "offline, put http://127.0.0.1:9/resnet18-f37072fd.pth at " \
           f"{tmp_path / 'torch' / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'}" in offline.stderr
    arch = cli("train", "--preset", "smoke", "--model", "resnet50", "--init", "torchvision:resnet50", "--device", "cpu")
    assert arch.exit_code == 2 and "torchvision's weights are a resnet50-v1.5" in arch.stderr


def test_print_config_is_fitted_to_the_data_and_never_downloads(cli, fashion_dir, server):
    import yaml

    out = cli("train", "--preset", "fashion-mnist", "--data-dir", fashion_dir, "--print-config")
    assert out.exit_code == 0, out.output
    cfg = yaml.safe_load(out.stdout)
    assert (cfg["data"]["image_size"], cfg["data"]["channels"]) == (28, 1)
    assert (cfg["model"]["in_channels"], cfg["model"]["num_classes"]) == (1, 10)
    _, url, hits = server
    missing = cli("train", "--preset", "cifar", "--set", f"data.url={url}/cifar.tar.gz", "--print-config")
    assert missing.exit_code == 0 and hits == []  # nothing fetched
    assert missing.stdout.startswith("# not fitted: cifar10 is not here (--print-config downloads nothing); the run "
                                     "sets data.channels, data.classes, data.image_size, model.in_channels, "
                                     "model.num_classes")
    assert yaml.safe_load(missing.stdout)["model"]["name"] == "resnet20"


@pytest.mark.slow  # 1.3 s: the quick loop keeps under 90 s
def test_gradflow_takes_a_device(cli):
    out = cli.json("gradflow", "resnet20", "--device", "cpu")
    assert out["device"] == "cpu" and out["models"][0]["model"] == "resnet20"
    assert out["models"][0]["first_over_last"] == cli.json("gradflow", "resnet20")["models"][0]["first_over_last"]
    bad = cli("gradflow", "resnet20", "--device", "tpu")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_help_text_is_reflowed_so_no_line_is_cut_mid_sentence(cli):
    """Typer's rich mode keeps a docstring's line breaks: a break inside a sentence left a ragged line at 80
    columns (`train --help`: "... events when the" / "tensorboard extra is installed)."). Every command's help
    now breaks only where a sentence ends, and the terminal wraps the rest."""
    import typer.main

    from resnet_cli.cli import app

    def commands(group, prefix=()):
        for name, command in group.commands.items():
            yield (*prefix, name), command
            if hasattr(command, "commands"):
                yield from commands(command, (*prefix, name))

    seen = 0
    for path, command in commands(typer.main.get_command(app)):
        lines = (command.help or "").splitlines()
        for line, following in zip(lines, lines[1:]):
            assert not (line and following and line[-1] not in ".:!?"), (path, line, following)
        seen += 1
    assert seen >= 16
    text = " ".join(cli("train", "--help", env={"COLUMNS": "80"}).stdout.split())
    assert "TensorBoard events when the tensorboard extra is installed; --logger mlflow, wandb or jsonl for more)." \
        in text


@pytest.mark.slow  # two seconds: the quick loop keeps under 90 s
def test_export_and_summary_take_a_device(cli, tmp_path):
    """`--device` on export (trace and check there; the file's sidecar names it) and on summary (a measured
    training-step peak, which needs CUDA: on a machine without one, one line and exit 2, nothing written)."""
    import torch

    assert cli("build", "resnet20", "-o", tmp_path / "m.pt").exit_code == 0
    out = cli.json("export", tmp_path / "m.pt", "-o", tmp_path / "m.pt2", "--device", "cpu", "--batch-size", "2",
                   "--dataset", "cifar10")
    assert out["ok"] and out["device"] == "cpu"
    assert json.loads((tmp_path / "m.pt2.json").read_text())["device"] == "cpu"
    summary = cli("summary", "resnet20", "--device", "cpu")
    assert summary.exit_code == 2 and summary.stderr.startswith("error: summary --device cpu: measuring a training")
    assert "without --device the estimate is shown" in summary.stderr and len(summary.stderr.splitlines()) == 1
    if not torch.cuda.is_available():
        gpu = cli("export", tmp_path / "m.pt", "-o", tmp_path / "g.pt2", "--device", "cuda", "--dataset", "cifar10")
        assert gpu.exit_code == 2 and "no CUDA GPU is available here" in gpu.stderr
        assert not (tmp_path / "g.pt2").exists() and not (tmp_path / "g.pt2.json").exists()
        assert "none is available here" in cli("summary", "resnet20", "--device", "cuda").stderr
    for command in ("train", "eval", "predict", "export", "summary", "flops", "bench", "gradflow"):
        assert "--device" in cli(command, "--help").stdout, command


@pytest.mark.slow  # 3.6 s a width on 2026-12-06's machine: the quick loop keeps under 90 s
@pytest.mark.parametrize("columns", [80, 120])
def test_epoch_lines_fit_the_terminal_and_break_between_fields(cli, tmp_path, columns, monkeypatch):
    """Every line of a run's output fits COLUMNS; an epoch's figures break between fields (a continuation line
    starts with two spaces), never inside a number; without a width (a log file) an epoch stays one line."""
    import itertools
    import re

    from resnet_cli.terminal import fit_fields

    monkeypatch.chdir(tmp_path)  # "run folder: runs/w": a path is never broken, and pytest-xdist's are longer
    run = cli("train", "--preset", "smoke", "--device", "cpu", "--epochs", "1", "--ema", "0.9", "--set",
              "data.val_split=64", "--name", "w", env={"COLUMNS": str(columns)})
    assert run.exit_code == 0, run.output
    lines = run.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns, [line for line in lines if len(line) > columns]
    start = next(i for i, line in enumerate(lines) if line.startswith("epoch 1/1  train loss"))
    block = [lines[start]] + list(itertools.takewhile(lambda s: re.match(r"  \S", s), lines[start + 1:]))
    text = "  ".join(line.strip() for line in block)
    assert re.fullmatch(r"epoch 1/1  train loss [\d.]+ acc [\d.]+%  val loss [\d.]+ top1 [\d.]+% \(ema [\d.]+%\)  "
                        r"test loss [\d.]+ top1 [\d.]+% \(ema [\d.]+%\)  lr [\d.e-]+  [\d.]+s [\d,]+ img/s, eval [\d.]+s",
                        text), text
    assert len(block) >= 2  # the one-line form is ~150 columns
    fields = ["a" * 30, "b" * 30, "c" * 30]
    assert fit_fields(fields, None) == "  ".join(fields)
    assert fit_fields(fields, 64).splitlines() == ["a" * 30 + "  " + "b" * 30, "  " + "c" * 30]
    assert fit_fields(["x" * 90], 80) == "x" * 90  # too long for any line: kept whole, not cut


def in_a_terminal(*args: str, timeout: float = 300) -> str:
    """What `resnet ARGS` writes to a terminal (a pseudo-terminal: stdout and stderr both TTYs), without its
    escape sequences; exit 0 checked."""
    import os
    import pty
    import re

    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on the terminal
        os.environ.update(COLUMNS="100", LINES="40", TERM="xterm")
        os.execv(sys.executable, [sys.executable, "-m", "resnet_cli", *args])
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    else:  # past the deadline: stop the child, which would otherwise block writing to a terminal nobody reads
        import signal

        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))  # colours, cursor
    assert os.waitstatus_to_exitcode(status) == 0, text
    return text


@pytest.mark.slow  # three subprocesses on a terminal
def test_training_evaluation_and_flops_show_a_moving_bar_with_an_eta_on_a_terminal(tmp_path):
    """On a terminal: the epoch's bar, then each evaluation's, both with a time left; `eval` and `flops` draw a
    bar while they work (transient: the result replaces it). None of them in a pipe (the other tests)."""
    import re

    train = in_a_terminal("train", "--preset", "smoke", "--device", "cpu", "--epochs", "1", "--batch-size", "8",
                          "--set", "data.synthetic_test=512", "--set", "train.eval_batch_size=8", "--run-dir",
                          str(tmp_path), "--name", "t")
    assert re.search(r"epoch 1/1 [━╸╺ ]+ *[1-9]\d*/64 [^\r\n]*?\d:\d\d:\d\d", train), train  # the bar, its count and its ETA
    assert re.search(r"epoch 1 evaluating test [━╸╺ ]+ *[1-9]\d*/64 +\d:\d\d:\d\d", train), train
    ev = in_a_terminal("eval", str(tmp_path / "t"), "--device", "cpu", "--batch-size", "8")
    assert re.search(r"evaluating [━╸╺ ]+ *[1-9]\d*/64 +\d:\d\d:\d\d", ev) and "top-1" in ev, ev
    flops = in_a_terminal("flops", "resnet20", "resnet32", "resnet44")
    assert re.search(r"counting [━╸╺ ]+ *[1-3]/3", flops) and "resnet44" in flops, flops


def test_small_front_door_items(cli, tmp_path, monkeypatch):
    """#37 item 6: train --steps; one class count in --print-config; data.workers from the cores; no top-5 for
    five classes or fewer; counts and their nouns agree."""
    from resnet_cli import config as C

    out = cli.json("train", "--preset", "smoke", "--device", "cpu", "--steps", "3", "--run-dir", tmp_path,
                   "--set", "data.classes=3", "--set", "data.synthetic_train=64", "--set", "data.synthetic_test=32")
    assert out["steps"] == 3 and out["epochs"] == 2  # 2 steps an epoch (smoke: batch 32)
    run = out["run_dir"]
    assert "is finished (2 epochs, 3 steps)" in cli("train", "--resume", run, "--steps", "3").stdout
    evaluated = cli.json("eval", run, "--device", "cpu")
    assert evaluated["top5"] is None and 0 <= evaluated["top1"] <= 1  # 3 classes: top-5 would be 100%
    text = cli("eval", run, "--device", "cpu").stdout
    assert "top-1 " in text and "top-5" not in text
    printed = cli("train", "--preset", "smoke", "--set", "data.classes=3", "--print-config").stdout
    assert "num_classes: 3" in printed and "classes: 3" in printed and "classes: 10" not in printed

    monkeypatch.setattr(C.os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert C.auto_workers() == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert C.auto_workers() == 1
    monkeypatch.setattr(C.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert C.resolve("torchvision").data.workers == 1  # a 2-core machine: one decoding process, not 16
    assert C.resolve("torchvision", sets=["data.workers=6"]).data.workers == 6
    assert cli("train", "--set", "data.workers=-2").stderr.strip() == \
        "error: data.workers must be 0 or more (-1: from the cores), got -2"


@pytest.mark.slow  # two tiny reproduction runs as subprocesses
def test_reproduce_on_synthetic_data_runs_as_its_help_offers(cli, tmp_path):
    out = cli.json("reproduce", "table6", "--dataset", "synthetic", "--steps", "6", "--depths", "20", "--out",
                   tmp_path / "r", "--device", "cpu")
    assert [r["model"] for r in out["table6"]] == ["resnet20"] and out["failed"] == []
