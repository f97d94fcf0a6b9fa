"""Using what was trained: export (ONNX, torch.export, TorchScript) checked against PyTorch, predict with the run's
own evaluation transform, eval's confusion matrix, evaluation of a folder without train/, bare state_dicts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("PIL")

from PIL import Image  # noqa: E402
from conftest import last_json

from resnet_cli.exported import sidecar

CLASSES = ("cat", "dog", "emu")


def make_folder(root, per_class: int = 6, size=(40, 30)) -> None:
    """train/ and val/ image folders whose classes differ in colour (learnable), with some noise."""
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=torch.float32)
    for split in ("train", "val"):
        for ci, c in enumerate(CLASSES):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                px = (base[ci].view(1, 1, 3) + 40 * torch.randn(size[1], size[0], 3, generator=g)).clamp(0, 255)
                Image.fromarray(px.to(torch.uint8).numpy(), "RGB").save(root / split / c / f"{i}.png")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A resnet20 trained for 3 epochs on a 3-class image folder, through the CLI."""
    from typer.testing import CliRunner

    from resnet_cli.cli import app

    root = tmp_path_factory.mktemp("after")
    make_folder(root / "images")
    result = CliRunner().invoke(app, ["train", "--set", "data.dataset=imagefolder", "--data-dir",
                                      str(root / "images"), "--set", "data.image_size=24", "--set", "data.workers=0",
                                      "--batch-size", "6", "--epochs", "3", "--device", "cpu", "--lr", "0.05",
                                      "--run-dir", str(root / "runs"), "--name", "f", "--json"])
    assert result.exit_code == 0, result.output
    return root


@pytest.mark.slow
def test_export_each_format_loads_back_and_matches(cli, folder_run, tmp_path):
    run = folder_run / "runs" / "f"
    formats = ["export", "torchscript"]
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
        formats.append("onnx")
    except ImportError:
        pass
    for fmt, suffix in (("export", ".pt2"), ("torchscript", ".pt"), ("onnx", ".onnx")):
        if fmt not in formats:
            continue
        out = cli.json("export", run, "-o", tmp_path / f"m{suffix}")
        assert out["format"] == fmt and out["ok"] and out["max_abs_diff"] < 1e-3, out
        assert out["input_size"] == [24, 24] and out["batch_size"] == "dynamic"
        from resnet_cli.export import run_file

        logits = run_file(tmp_path / f"m{suffix}", fmt, torch.randn(5, 3, 24, 24))
        assert logits.shape == (5, 3)  # another batch size than the check's: the batch is dynamic
        if fmt == "onnx":
            import onnx

            meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
        else:
            meta = json.loads((tmp_path / f"m{suffix}.json").read_text())
            meta = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in meta.items()}
        assert json.loads(meta["classes"]) == list(CLASSES)
        assert json.loads(meta["mean"]) == pytest.approx([0.485, 0.456, 0.406])  # image folders: ImageNet stats
    fixed = cli.json("export", run, "-o", tmp_path / "fixed.pt", "--batch-size", "4", "--input-size", "32x24")
    assert fixed["batch_size"] == 4 and fixed["input_size"] == [32, 24] and fixed["check_batch"] == 4
    bad = cli("export", run, "-o", tmp_path / "x.bin")
    assert bad.exit_code == 2 and "cannot tell the format" in bad.stderr


@pytest.mark.slow  # 4 s: the quick loop keeps under 90 s
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_each_onnx_exporter_writes_a_file_with_a_dynamic_batch(exporter, tmp_path):
    """torch >= 2.5 exports ONNX through torch.export ("dynamo"); torch 2.4, which README supports, has only the
    TorchScript-based exporter with a dynamic batch (its torch.onnx.export takes no `dynamic_shapes`: export was an
    internal error there). Both run here, on this torch: the same input name, a batch of any size, the metadata,
    and the model's own logits from onnxruntime."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnx

    from resnet_cli.export import example_batch, onnx_exporter, run_file, write_onnx
    from resnet_cli.models import build_model

    if exporter == "dynamo" and onnx_exporter() != "dynamo":
        pytest.skip(f"torch {torch.__version__}: its torch.onnx.export takes no dynamic_shapes")
    torch.manual_seed(0)
    net = build_model("resnet20").eval()
    write_onnx(net, example_batch(net, 2, (32, 32)), tmp_path / "m.onnx", True, {"classes": ["a", "b"]}, exporter)
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert [i.name for i in model.graph.input] == ["images"] and [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic: any batch size
    assert {p.key: p.value for p in model.metadata_props} == {"classes": '["a", "b"]'}
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(run_file(tmp_path / "m.onnx", "onnx", x), net(x), atol=1e-4)


@pytest.mark.slow  # 3 s: the quick loop keeps under 90 s
def test_export_from_a_smoke_preset_run(cli, tmp_path):
    """The smoke preset's run folder (synthetic data: its own normalisation and class names) exports and checks."""
    run = cli("train", "--preset", "smoke", "--device", "cpu", "--epochs", "1", "--set", "data.synthetic_train=64",
              "--set", "data.image_size=16", "--run-dir", tmp_path, "--name", "smoke")
    assert run.exit_code == 0, run.output
    out = cli.json("export", tmp_path / "smoke", "-o", tmp_path / "smoke.pt", "--batch-size", "2")
    assert out["ok"] and out["input_size"] == [16, 16] and out["batch_size"] == 2
    meta = json.loads((tmp_path / "smoke.pt.json").read_text())
    assert meta["classes"] == [f"class{i}" for i in range(10)] and len(meta["mean"]) == 3
    sd = torch.load(tmp_path / "smoke" / "best.pt", weights_only=True)
    assert sd["input"]["mean"] == meta["mean"] and sd["input"]["image_size"] == [16, 16]


def test_export_fails_with_exit_1_when_the_file_computes_something_else(cli, folder_run, tmp_path, monkeypatch):
    import resnet_cli.export as export

    real = export.run_file
    monkeypatch.setattr(export, "run_file", lambda path, fmt, x: real(path, fmt, x) + 0.01)  # a file that is off
    result = cli("export", folder_run / "runs" / "f", "-o", tmp_path / "m.pt")
    assert result.exit_code == 1, result.output
    assert "check: max |file - PyTorch| = 1.00e-02" in result.stdout and "FAILED" in result.stdout
    assert "differs from the PyTorch model by 1.00e-02 (> 1e-03)" in result.stderr


@pytest.mark.slow  # 5 s: a process of its own
def test_eval_and_predict_never_import_the_compiler(folder_run):
    """eval and predict run eagerly, so they never import torch._dynamo and Inductor (1-2 s of their start:
    torch.use_deterministic_algorithms imports Inductor's config, and was called at every start until
    Speed.configure_backends set it only when it changes)."""
    import subprocess
    import sys

    run, val = folder_run / "runs" / "f", folder_run / "images" / "val"
    code = ("import sys\nfrom resnet_cli.cli import app\n"
            f"for args in (['eval', {str(run)!r}, '--device', 'cpu', '--json'],\n"
            f"             ['predict', {str(run)!r}, {str(val)!r}, '--device', 'cpu', '--json']):\n"
            "    try:\n        app(args)\n    except SystemExit as e:\n        assert e.code in (0, None), e.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['torch', '_dynamo'], "
            "['torch', '_inductor'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert '"top1"' in out.stdout and '"predictions"' in out.stdout  # both really ran
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_predict_gives_evals_top1_for_every_image_and_skips_a_corrupt_one(cli, folder_run, tmp_path):
    from resnet_cli import config as C
    from resnet_cli.checkpoint import model_from_checkpoint
    from resnet_cli.data import load_data, make_loader

    run = folder_run / "runs" / "f"
    val = tmp_path / "val"
    shutil.copytree(folder_run / "images" / "val", val)
    (val / "dog" / "broken.png").write_bytes(b"not an image at all")
    result = cli("predict", run, val, "--topk", "2", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    out = last_json(result.stdout)
    assert out["count"] == 18 and out["skipped"] == [{"path": str(val / "dog" / "broken.png"),
                                                      "error": "not an image in a format read here (JPEG, PNG, WebP, "
                                                               "BMP, PPM, TIFF, GIF)"}]
    assert "skipped" in result.stderr and "1 unreadable image(s) skipped, 18 classified" in result.stderr
    got = {row["path"].replace(str(val), ""): row["top"][0]["index"] for row in out["predictions"]}
    for row in out["predictions"]:  # top-2 of 3 classes: descending probabilities summing to less than 1
        p = [t["prob"] for t in row["top"]]
        assert len(p) == 2 and 1 >= p[0] >= p[1] >= 0 and sum(p) <= 1 + 1e-6
    # what evaluation computes for each image, in the same order as the folder scan
    loaded = model_from_checkpoint(run)
    cfg = C.build_config({**C.flatten(loaded.config.to_dict(), "c"), "data.data_dir": str(folder_run / "images")})
    data = load_data(cfg.data)
    loader = make_loader(data, cfg.data, "test", 64, torch.device("cpu"), training=False)
    with torch.inference_mode():
        preds = torch.cat([loaded.model(x).argmax(1) for x, _ in loader.batches()]).tolist()
    paths = [str(p).replace(str(folder_run / "images" / "val"), "") for p, _ in data.test_set.samples]
    assert got == dict(zip(paths, preds))
    csv = cli("predict", run, val / "cat" / "0.png", "--csv", "--topk", "3", "--device", "cpu")
    assert csv.exit_code == 0 and csv.stdout.splitlines()[0] == "path,rank,class,index,probability"
    assert len(csv.stdout.splitlines()) == 4
    for k, header in ((2, "runners-up"), (1, None)):  # the table: the classes after the first in one column
        table = cli("predict", run, val / "cat" / "0.png", "--topk", str(k), "--device", "cpu")
        heads = [line for line in table.stdout.splitlines() if "probability" in line][0].strip("┃ ").split(" ┃ ")
        assert [h.strip() for h in heads] == ["image", "class", "probability"] + ([header] if header else [])
    none = cli("predict", run, val / "dog" / "broken.png", "--device", "cpu")
    assert none.exit_code == 2 and "no image could be read" in none.stderr


def test_load_model_gives_python_what_predict_computes(cli, folder_run, tmp_path):
    """`resnet_cli.load_model` (timm's create_model + create_transform, torchvision's weights.transforms()): the
    network, its classes and the evaluation transform; its predictions are `resnet predict`'s; untrained weights
    and a bare state_dict without its model are refused as the commands refuse them."""
    from resnet_cli import build_model, load_model
    from resnet_cli.errors import BadInput

    run = folder_run / "runs" / "f"
    clf = load_model(run)
    assert (clf.name, clf.classes, clf.source) == ("resnet20", CLASSES, str(run / "best.pt"))
    assert not clf.model.training and next(clf.model.parameters()).device.type == "cpu"
    images = [Image.open(folder_run / "images" / "val" / c / "1.png") for c in CLASSES]
    x = clf.transform(images[0])
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and abs(float(x.mean())) < 3
    shown = cli.json("predict", run, *[folder_run / "images" / "val" / c / "1.png" for c in CLASSES], "--topk", "2",
                     "--device", "cpu")
    got = clf.predict(images, topk=2)
    assert [[label for label, _ in top] for top in got] == [[t["class"] for t in row["top"]]
                                                           for row in shown["predictions"]]
    assert [p for top in got for _, p in top] == pytest.approx([t["prob"] for row in shown["predictions"]
                                                                for t in row["top"]], abs=1e-5)
    from resnet_cli import config as C
    from resnet_cli.data import load_data, make_loader

    cfg = C.build_config({**C.flatten(yaml.safe_load((run / "config.yaml").read_text()), "c"),
                          "data.data_dir": str(folder_run / "images")})
    data = load_data(cfg.data)
    batch, _ = next(make_loader(data, cfg.data, "test", 64, torch.device("cpu"), training=False).batches())
    where = [str(p) for p, _ in data.test_set.samples].index(str(folder_run / "images" / "val" / "cat" / "1.png"))
    assert torch.allclose(x, batch[where], atol=1e-6)  # exactly what evaluation feeds the network
    assert clf.predict(images[0], topk=1)[0][0][0] == got[0][0][0]  # one image alone
    assert clf.label(0) == "cat"
    assert cli("build", "resnet20", "-o", tmp_path / "built.pt").exit_code == 0
    with pytest.raises(BadInput, match="holds untrained weights"):
        load_model(tmp_path / "built.pt")
    torch.save(build_model("resnet20", num_classes=3).state_dict(), tmp_path / "bare.pth")
    with pytest.raises(BadInput, match="say which model it is with --model"):
        load_model(tmp_path / "bare.pth")


def test_torch_hub_builds_every_network_and_loads_trained_weights(folder_run):
    """hubconf.py (torch.hub, as torchvision's and timm's repositories): an entrypoint per registered network,
    fresh or with `weights` (what load_model reads), and load_model itself; other networks' weights refused."""
    import importlib.util

    from resnet_cli import list_models, load_model
    from resnet_cli.errors import BadInput

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("hubconf", root / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    entries = {n for n in dir(hub) if callable(getattr(hub, n)) and not n.startswith("_")}
    assert entries == {n.replace("-", "_").replace(".", "_") for n in list_models()} | {"load_model"}
    assert hub.dependencies == ["torch"]
    fresh = torch.hub.load(str(root), "resnet50_v1_5", source="local", num_classes=7, in_channels=1)
    assert (fresh.fc.out_features, fresh.conv1.in_channels, fresh.layer2[0].conv2.stride) == (7, 1, (2, 2))
    run = folder_run / "runs" / "f"
    trained = torch.hub.load(str(root), "resnet20", source="local", weights=str(run))
    mine = load_model(run).model.state_dict()
    assert not trained.training and all(torch.equal(v, mine[k]) for k, v in trained.state_dict().items())
    assert torch.hub.load(str(root), "load_model", str(run), source="local").classes == CLASSES
    with pytest.raises(BadInput, match="are a resnet20, not a resnet32: load them with its entrypoint, resnet20"):
        hub.resnet32(weights=str(run))
    with pytest.raises(BadInput, match="no other arguments"):
        hub.resnet20(weights=str(run), num_classes=5)


def test_predict_reads_images_from_urls_through_the_gate(cli, folder_run, server, tmp_path):
    """`resnet predict RUN https://.../cat.png`, as Ultralytics takes a URL: the body comes through the gate (https,
    or http on loopback: this test's server), bounded and within a deadline, and is classified exactly as the same
    file is; a URL that does not answer is named and skipped, as an unreadable file is; plain http to another host
    is refused before anything is sent."""
    root, url, hits = server
    run, image = folder_run / "runs" / "f", folder_run / "images" / "val" / "cat" / "0.png"
    shutil.copy(image, root / "cat.png")
    out = cli.json("predict", run, image, f"{url}/cat.png", f"{url}/gone.png", "--device", "cpu", "--topk", "3")
    assert [row["path"] for row in out["predictions"]] == [str(image), f"{url}/cat.png"]
    assert out["predictions"][0]["top"] == out["predictions"][1]["top"] and sorted(hits) == ["/cat.png", "/gone.png"]
    assert out["skipped"] == [{"path": f"{url}/gone.png", "error": f"cannot read {url}/gone.png: HTTP 404 File not "
                                                                   "found"}]
    refused = cli("predict", run, "http://example.com/cat.png", "--device", "cpu")
    assert refused.exit_code == 2 and refused.stderr.strip() == ("error: refusing to download "
                                                                 "http://example.com/cat.png: only https URLs are "
                                                                 "allowed (http on loopback only)")


def test_predict_reads_the_next_batches_in_threads_in_order_and_stops_with_its_loop(tmp_path):
    """predict's readers (threads: Pillow decodes outside the GIL) give the batches reading in this thread gives,
    in order, an unreadable file in its place; they read at most two batches ahead, a loop that stops early
    leaves no read running or queued, Ctrl-C does not wait for a read that hangs, and a reader's own error is
    raised where the loop runs."""
    import threading
    import time

    from PIL import Image

    from resnet_cli.data.inputs import InputSpec
    from resnet_cli.predict import read_batches

    items = []
    for i in range(10):
        Image.new("RGB", (12 + i, 10), (20 * i, 0, 0)).save(tmp_path / f"{i}.png")
        items.append(tmp_path / f"{i}.png")
    (tmp_path / "3.png").write_bytes(b"not an image")
    spec = InputSpec.of(["a"], 3, 8, 0, (0.5,) * 3, (0.5,) * 3)
    alone = list(read_batches(items, spec, 4, workers=0))
    for workers in (1, 3):
        threaded = list(read_batches(items, spec, 4, workers=workers))
        assert [b[0] for b in threaded] == [b[0] for b in alone] == [items[:4], items[4:8], items[8:]]
        assert [b[2] for b in threaded] == [b[2] for b in alone]
        assert alone[0][2][3] == "not an image in a format read here (JPEG, PNG, WebP, BMP, PPM, TIFF, GIF)"
        assert all(torch.equal(a[1], b[1]) for a, b in zip(alone, threaded)) and alone[0][1].shape == (3, 3, 8, 8)

    class Counting:  # the spec's transform, counted
        calls = 0

        def transform(self, im):
            Counting.calls += 1
            return spec.transform(im)

    reader = read_batches(items * 10, Counting(), 4, workers=2)  # 100 images, batches of 4
    next(reader)
    time.sleep(0.5)  # the readers, given time: they stop two batches ahead of the loop
    assert 4 < Counting.calls <= 12  # the first batch and two more (one unreadable each), not all 100
    reader.close()  # the loop stops: nothing is read after it, and the threads are gone
    assert Counting.calls <= 12 and not [t for t in threading.enumerate() if t.name.startswith("resnet-predict")]

    class Stalled:  # the second batch's reads wait (a URL whose server stopped sending), the third's fail
        release = threading.Event()

        def transform(self, im):
            if im.size[0] >= 16:
                raise RuntimeError("a reader's own error")
            if im.size[0] >= 14:
                Stalled.release.wait(30)
            return spec.transform(im)

    reader = read_batches(items[:2] + items[2:3] * 2, Stalled(), 2, workers=2)  # widths 12, 13, then 14, 14
    assert len(next(reader)[0]) == 2
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C while the model runs: nothing waits for the stalled reads
        reader.throw(KeyboardInterrupt)
    assert time.perf_counter() - started < 5
    Stalled.release.set()
    failing = read_batches(items[:2] + items[6:8], Stalled(), 2, workers=2)  # widths 12, 13, then 18, 19
    next(failing)
    with pytest.raises(RuntimeError, match="a reader's own error"):  # raised in the loop's thread, not lost
        next(failing)


def test_eval_and_predict_refuse_a_forward_pass_the_cpu_memory_left_cannot_hold(cli, folder_run, monkeypatch):
    """On the CPU, memory past what is left is no exception: the kernel kills the process. eval (default batch
    1,024; 10 crops an image) and predict check their largest forward pass first, at the batch they will really
    run (no more images than the split holds), against `inference_floor`: weights and the largest input and
    output one layer holds at once."""
    from resnet_cli import analysis
    from resnet_cli.checkpoint import model_from_checkpoint

    run = folder_run / "runs" / "f"
    net = model_from_checkpoint(run).model
    floor = analysis.inference_floor(net, 24, 1)
    per_image = analysis.inference_floor(net, 24, 2) - floor
    assert floor == sum(p.numel() for p in net.parameters()) * 4 + sum(b.numel() * b.element_size() for b in net.buffers()) \
        + per_image  # a stage-1 conv: 16 x 24 x 24 in and out (the largest pair), per image
    assert per_image == 2 * 16 * 24 * 24 * 4
    monkeypatch.setattr(analysis, "cpu_memory_left", lambda: analysis.inference_floor(net, 24, 100))
    assert cli.json("eval", run, "--device", "cpu")["count"] == 18  # batch 1,024 asked, 18 images: it fits
    ten = cli("eval", run, "--device", "cpu", "--ten-crop")
    need = analysis.inference_floor(net, 24, 180) / 2**20
    left = analysis.inference_floor(net, 24, 100) / 2**20
    assert ten.exit_code == 2 and ten.stderr == (
        f"error: --batch-size 1024: resnet20's one forward pass at batch 180 and 24x24 needs at least {need:.0f} MiB "
        f"and {left:.0f} MiB are left on this machine; use a smaller batch\n")
    assert cli.json("eval", run, "--device", "cpu", "--ten-crop", "-b", "90")["crops"] == 10  # 9 images, 90 crops
    monkeypatch.setattr(analysis, "cpu_memory_left", lambda: analysis.inference_floor(net, 24, 10))
    val = folder_run / "images" / "val"
    refused = cli("predict", run, val, "--device", "cpu")
    assert refused.exit_code == 2 and "--batch-size 64: resnet20's one forward pass at batch 18 and 24x24 needs " \
                                      "at least" in refused.stderr
    assert cli.json("predict", run, val, "--device", "cpu", "-b", "8")["count"] == 18


@pytest.mark.slow  # 1.2-1.4 s in the quick loop (CONTRIBUTING: a second or more goes to slow)
def test_eval_confusion_matrix_and_a_folder_without_train(cli, folder_run, tmp_path):
    run = folder_run / "runs" / "f"
    out = cli.json("eval", run, "--confusion", "--device", "cpu")
    m = out["confusion"]
    assert len(m) == 3 and sum(map(sum, m)) == out["count"] == 18
    for i, row in enumerate(out["per_class"]):
        assert m[i][i] == round(row["accuracy"] * row["count"]) and sum(m[i]) == row["count"]
    table = cli("eval", run, "--confusion", "--device", "cpu", "-o", tmp_path / "cm.png")
    assert table.exit_code == 0 and "confusion matrix" in table.stdout and (tmp_path / "cm.png").stat().st_size > 0
    only_val = tmp_path / "only"
    shutil.copytree(folder_run / "images" / "val", only_val / "val")
    a = cli.json("eval", run, "--data-dir", only_val, "--device", "cpu")
    plain = tmp_path / "plain"
    shutil.copytree(folder_run / "images" / "val", plain)  # a plain folder of class folders
    b = cli.json("eval", run, "--data-dir", plain, "--device", "cpu")
    assert a["count"] == b["count"] == 18 and a["top1"] == b["top1"] == out["top1"]


@pytest.mark.slow  # 2 s: the quick loop keeps under 90 s
def test_a_bare_state_dicts_dataset_is_never_guessed(cli, tmp_path):
    from resnet_cli import build_model

    torch.save(build_model("resnet18").state_dict(), tmp_path / "tv.pth")  # 1000 classes, torchvision names
    guess = cli("eval", tmp_path / "tv.pth", "--model", "resnet18")
    assert guess.exit_code == 2 and "say which dataset" in guess.stderr
    wrong = cli("eval", tmp_path / "tv.pth", "--model", "resnet18", "--dataset", "synthetic")
    assert wrong.exit_code == 2 and "has 1000 outputs but synthetic has 10 classes" in wrong.stderr
    # export needs no dataset: an ImageNet-family state_dict takes the ImageNet conventions
    out = cli.json("export", tmp_path / "tv.pth", "--model", "resnet18", "-o", tmp_path / "tv.pt",
                   "--batch-size", "1")
    assert out["ok"] and out["input_size"] == [224, 224]
    meta = json.loads((tmp_path / "tv.pt.json").read_text())
    assert len(meta["classes"]) == 1000 and meta["resize"] == 256


@pytest.mark.slow  # 1.0-1.3 s: the quick loop keeps under 90 s (CONTRIBUTING)
def test_summary_and_flops_read_a_trained_checkpoint(cli, folder_run):
    run = folder_run / "runs" / "f"
    out = cli.json("summary", run, "--batch-size", "8")
    sd = torch.load(run / "best.pt", weights_only=True)["model"]
    n_params = sum(v.numel() for k, v in sd.items() if not k.endswith(("running_mean", "running_var",
                                                                        "num_batches_tracked")))
    assert out["num_classes"] == 3 and out["checkpoint"] == str(run / "best.pt")
    assert out["total"]["params"] == out["params"]["total"] == out["params"]["trainable"] == n_params
    assert out["params"]["frozen"] == 0
    mem = out["memory_bytes"]
    assert mem["parameters"] == 4 * n_params and mem["training_estimate"] > mem["forward_activations"] > 0
    eight = mem["forward_activations"]
    assert cli.json("summary", run)["memory_bytes"]["forward_activations"] * 8 == eight  # linear in the batch
    table = cli("summary", run)
    assert table.exit_code == 0 and "3 classes" in table.stdout and "trainable" in table.stdout
    refused = cli("summary", run, "--num-classes", "10")
    assert refused.exit_code == 2 and "--num-classes 3" in refused.stderr
    flops = cli.json("flops", run, "resnet20", "--no-check")["models"]
    assert flops[0]["checkpoint"] == str(run / "best.pt") and flops[0]["params"] == n_params
    assert flops[0]["params"] != flops[1]["params"]  # 3 classes vs 10


def test_summary_any_class_count_channels_and_shape():
    from typer.testing import CliRunner

    from resnet_cli.cli import app

    result = CliRunner().invoke(app, ["summary", "resnet50", "--input-size", "160x224", "--num-classes", "37",
                                      "--in-channels", "1", "--detail", "--max-depth", "1", "--json"])
    assert result.exit_code == 0, result.output
    out = last_json(result.stdout)
    stages = {s["layer"]: s for s in out["stages"]}
    assert stages["conv1"]["output_size"] == [80, 112] and stages["conv5_x"]["output_size"] == [5, 7]
    assert stages["fc"]["params"] == 2048 * 37 + 37 and stages["conv1"]["params"] == 7 * 7 * 64 + 128
    assert out["input_size"] == [160, 224] and {m["depth"] for m in out["modules"]} == {1}
    bad = CliRunner().invoke(app, ["summary", "resnet50", "--input-size", "0x3"])
    assert bad.exit_code == 2 and "--input-size must be 1..4096 pixels a side" in bad.stderr


def test_ten_crop_and_crop_pct_evaluate_image_folders_as_the_paper_did(cli, folder_run):
    """`eval --ten-crop`: four corners and the centre, and their mirrors, probabilities averaged; --crop-pct:
    another resize before the crop (timm's rule); both refused where images are evaluated whole."""
    import numpy as np

    from resnet_cli.data.transforms import center_crop, ten_crops

    img = Image.open(folder_run / "images" / "val" / "cat" / "0.png").convert("RGB")
    crops = ten_crops(img, 27, 24)
    assert crops.shape == (10, 3, 24, 24)
    assert torch.equal(crops[4], center_crop(img, 27, 24, 24))  # the centre crop is one of them
    whole = img.resize((36, 27), Image.BILINEAR)  # 40 x 30 to a shorter side of 27, as torchvision's Resize(27)
    corner = torch.from_numpy(np.array(whole.crop((12, 3, 36, 27)))).permute(2, 0, 1)  # TenCrop's bottom right
    assert img.size == (40, 30) and torch.equal(crops[3], corner)
    assert all(torch.equal(crops[5 + k], crops[k].flip(-1)) for k in range(5))  # each crop's mirror image
    run = folder_run / "runs" / "f"
    one = cli.json("eval", run, "--device", "cpu")
    ten = cli.json("eval", run, "--device", "cpu", "--ten-crop")
    assert (one["crops"], ten["crops"]) == (1, 10) and ten["count"] == one["count"] == 18
    assert 0 <= ten["top1"] <= 1 and ten["resize"] == one["resize"] == 27  # round(24 * 256 / 224)
    wide = cli.json("eval", run, "--device", "cpu", "--crop-pct", "0.75")
    assert wide["resize"] == 32 and wide["count"] == 18
    text = cli("eval", run, "--device", "cpu", "--ten-crop")
    assert "on imagefolder val (24 from 27, bilinear, 10-crop) (18 images)" in text.stdout
    # another crop (timm's test_input_size): the run's crop_pct kept (24 / 27 -> 32 from 36), or --crop-pct's
    large = cli.json("eval", run, "--device", "cpu", "--image-size", "32")
    assert (large["image_size"], large["resize"], large["count"]) == (32, 36, 18)
    whole = cli.json("eval", run, "--device", "cpu", "--image-size", "32", "--crop-pct", "1.0")
    assert (whole["image_size"], whole["resize"]) == (32, 32) and whole["top1"] != large["top1"] or \
        whole["loss"] != large["loss"]
    bad = cli("eval", run, "--device", "cpu", "--crop-pct", "1.5")
    assert bad.exit_code == 2 and "--crop-pct is a fraction in (0, 1]" in bad.stderr


def test_the_papers_multi_scale_test_averages_whole_images_and_their_mirrors(cli, folder_run, tmp_path):
    """`eval --scales` (section 3.4, the fully-convolutional form): every whole image with its shorter side at each
    scale, and its mirror, probabilities averaged; the loss and top-1 are those of the same views computed here
    by hand from the checkpoint's weights and normalisation."""
    import numpy as np

    from resnet_cli.checkpoint import model_from_checkpoint
    from resnet_cli.data.views import Views
    from resnet_cli.errors import BadInput
    from resnet_cli.models import build_model
    from resnet_cli.train.evaluate import fully_convolutional

    run = folder_run / "runs" / "f"
    saved = torch.load(run / "best.pt", weights_only=True)  # 3 epochs at lr 0.05 saturate: logits of +-30
    for key in ("fc.weight", "fc.bias"):  # a tenth of them, so that no probability is near the 1e-12 floor
        saved["model"][key] = saved["model"][key] / 10
    torch.save(saved, tmp_path / "tempered.pt")
    out = cli.json("eval", tmp_path / "tempered.pt", "--device", "cpu", "--scales", "24,32")
    assert (out["crops"], out["scales"], out["count"], out["image_size"], out["resize"]) == (4, [24, 32], 18, None, None)
    loaded = model_from_checkpoint(tmp_path / "tempered.pt", None, None, "auto")
    net = loaded.model.eval()
    mean, std = (torch.tensor(loaded.saved_input[k]).view(3, 1, 1) for k in ("mean", "std"))
    nll, right = 0.0, 0
    with torch.no_grad():
        for label, name in enumerate(loaded.saved_input["classes"]):
            for path in sorted((folder_run / "images" / "val" / name).glob("*.png")):
                img = Image.open(path).convert("RGB")
                probs = []
                for size in ((32, 24), (43, 32)):  # 40 x 30 with its shorter side at 24 and at 32
                    x = torch.from_numpy(np.array(img.resize(size, Image.BILINEAR))).permute(2, 0, 1) / 255
                    x = (x - mean) / std
                    probs.append(net(torch.stack([x, x.flip(-1)])).softmax(1))
                p = torch.cat(probs).mean(0)
                nll -= p[label].log().item()
                right += int(p.argmax() == label)
    assert out["loss"] == pytest.approx(nll / 18, abs=1e-4) and out["top1"] == right / 18
    text = cli("eval", run, "--device", "cpu", "--scales", "24,32")
    assert "on imagefolder val (whole at 24/32, mirrored, bilinear) (18 images)" in text.stdout
    for args, said in ((["--scales", "24", "--ten-crop"], "--ten-crop, --crop-pct and --image-size (crops) do not"),
                       (["--scales", "0,24"], "--scales takes 1-8 distinct sides of 1-4096 pixels, got '0,24'"),
                       (["--scales", "24,x"], "--scales takes shorter sides in pixels, comma-separated")):
        bad = cli("eval", run, "--device", "cpu", *args)
        assert bad.exit_code == 2 and said in bad.stderr, bad.stderr
    with torch.device("meta"):
        vgg = build_model("vgg19")
    with pytest.raises(BadInput, match="needs a fully convolutional net; vgg19's head takes a fixed-size map"):
        fully_convolutional(vgg, "vgg19", Views(scales=(224,)))
    fully_convolutional(vgg, "vgg19", Views(ten_crop=True))  # crops of the size it was made for: no refusal


def _one_epoch(cli, images: Path, run: Path, setting: str) -> dict:
    """One epoch of resnet20 on the image folder at 24 px with `setting`; the run's data section as saved."""
    out = cli("train", "--model", "resnet20", "--dataset", "imagefolder", "--data-dir", images, "--image-size", "24",
              "--set", setting, "--epochs", "1", "-b", "6", "--device", "cpu", "--workers", "0",
              "--run-dir", run.parent, "--name", run.name)
    assert out.exit_code == 0, out.output
    return yaml.safe_load((run / "config.yaml").read_text())["data"]


def test_a_run_trains_at_one_crop_and_evaluates_at_another(cli, folder_run, tmp_path):
    """data.eval_image_size (torchvision's --val-crop-size, timm's test_input_size): training batches at
    data.image_size, every evaluation (each epoch's, then eval's and predict's, from the checkpoint's record) at
    the other crop, resized in proportion; config.json tells timm both; refused where images have one size."""
    from resnet_cli import config as C
    from resnet_cli.data import load_data, make_loader
    from resnet_cli.weights import config_json

    images = folder_run / "images"
    flags = {"data.dataset": "imagefolder", "data.data_dir": str(images), "data.image_size": 24,
             "data.eval_image_size": 32, "data.workers": 0}
    cfg = C.resolve(flags=flags)
    data = load_data(cfg.data)
    assert (data.train_set.crop, data.test_set.crop, data.input.image_size, data.input.resize) == (24, 32, (32, 32),
                                                                                                  37)
    train = make_loader(data, cfg.data, "train", 6, torch.device("cpu"), training=True)
    test = make_loader(data, cfg.data, "test", 6, torch.device("cpu"), training=False)
    seen = make_loader(data, cfg.data, "train", 6, torch.device("cpu"), training=False)  # the training images
    assert [next(x.batches())[0].shape[-1] for x in (train, test, seen)] == [24, 32, 32]
    for loader in (train, test, seen):
        loader.close()
    saved = _one_epoch(cli, images, tmp_path / "runs" / "fix", "data.eval_image_size=32")
    assert (saved["image_size"], saved["eval_image_size"]) == (24, 32)
    ev = cli.json("eval", tmp_path / "runs" / "fix", "--device", "cpu")
    assert (ev["image_size"], ev["resize"], ev["count"]) == (32, 37, 18)
    shown = cli.json("predict", tmp_path / "runs" / "fix", images / "val" / "cat" / "0.png")
    assert (shown["input"]["image_size"], shown["input"]["resize"]) == (32, 37)
    config = {"model": {"name": "resnet18", "num_classes": 3, "shortcut": ""}, "data": saved}
    spec = {"classes": list(CLASSES), "channels": 3, "image_size": [32, 32], "resize": 37, "mean": [0.5] * 3,
            "std": [0.5] * 3}
    timm = config_json(config, spec, "raw")["pretrained_cfg"]
    assert (timm["input_size"], timm["test_input_size"]) == ([3, 24, 24], [3, 32, 32])
    assert timm["test_crop_pct"] == timm["crop_pct"] and int(32 / timm["crop_pct"]) == 37
    for bad, said in ((["--dataset", "fashion-mnist", "--set", "data.eval_image_size=32"],
                       "data.eval_image_size applies to image folders and shards"),
                      (["--dataset", "imagefolder", "--set", "data.eval_image_size=300", "--set",
                        "data.eval_resize=256"],
                       "data.eval_resize (256) is smaller than the crop data.eval_image_size (300)")):
        refused = cli("train", *bad, "--print-config")
        assert refused.exit_code == 2 and said in refused.stderr, refused.output


def test_repeated_augmentation_crops_each_copy_of_an_image_its_own_way(cli, folder_run, tmp_path):
    """data.aug_repeats on an image folder: the copies of a picture in one batch (one process) are cropped and
    flipped from seeds of their own, copy 0 as without repeats; train takes it; shards and bad values refused."""
    from resnet_cli import config as C
    from resnet_cli.data import load_data, make_loader

    images = folder_run / "images"
    cfg = C.resolve(flags={"data.dataset": "imagefolder", "data.data_dir": str(images), "data.image_size": 24,
                           "data.aug_repeats": 3, "data.workers": 0, "data.crop": "random-resized"})
    loader = make_loader(load_data(cfg.data), cfg.data, "train", 6, torch.device("cpu"), training=True)
    x, y = next(loader.batches(epoch=1))
    keys = loader._order.keys[:6]
    assert [k[0] for k in keys[:3]] == [keys[0][0]] * 3 and [k[2] for k in keys] == [0, 1, 2, 0, 1, 2]
    assert len(set(y.tolist()[:3])) == 1 and not torch.equal(x[0], x[1]) and not torch.equal(x[1], x[2])
    ds = loader.dataset
    first = ds[keys[0]]
    ds.epoch_seed = keys[0][1]
    assert torch.equal(first[0], ds[keys[0][0]][0])  # copy 0: the crop it had without repeats
    assert not torch.equal(first[0], ds[keys[1]][0])
    loader.close()
    saved = _one_epoch(cli, images, tmp_path / "runs" / "ra", "data.aug_repeats=3")
    assert saved["aug_repeats"] == 3
    for bad, said in ((["--dataset", "shards", "--set", "data.aug_repeats=2"],
                       "data.aug_repeats applies to image folders and datasets in memory: shards are streamed"),
                      (["--set", "data.aug_repeats=0"], "data.aug_repeats is how many times each image is drawn")):
        refused = cli("train", *bad, "--print-config")
        assert refused.exit_code == 2 and said in refused.stderr, refused.output


def test_an_image_folders_val_is_named_val(cli, folder_run, tmp_path):
    """An image folder evaluates on its val/ folder: output calls it "val" (images held out of train/ would be
    "holdout"); metrics.csv, --split and JSON keep the "test" key, and the table's caption says so."""
    text = cli("train", "--set", "data.dataset=imagefolder", "--data-dir", folder_run / "images", "--image-size",
               "24", "--workers", "0", "--batch-size", "6", "--epochs", "1", "--device", "cpu", "--run-dir", tmp_path,
               "--name", "t", env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    epoch = next(line for line in text.stdout.splitlines() if line.startswith("epoch 1/1  train loss"))
    assert "  val loss " in epoch and "test" not in epoch
    assert "val top-1" in text.stdout and "test top-1" not in text.stdout
    assert "metrics.csv's test columns are the image folder's val split" in text.stdout
    assert "test_top1" in (tmp_path / "t" / "metrics.csv").read_text().splitlines()[0]
    held = cli("train", "--set", "data.dataset=imagefolder", "--data-dir", folder_run / "images", "--image-size",
               "24", "--workers", "0", "--batch-size", "6", "--epochs", "1", "--device", "cpu", "--set",
               "data.val_split=3", "--run-dir", tmp_path, "--name", "h", env={"COLUMNS": "200"})
    assert held.exit_code == 0, held.output
    epoch = next(line for line in held.stdout.splitlines() if line.startswith("epoch 1/1  train loss"))
    assert epoch.index("  holdout loss ") < epoch.index("  val loss ")
    from resnet_cli.train.evaluations import split_name
    assert [split_name("imagefolder", s) for s in ("val", "test")] == ["holdout", "val"]
    assert [split_name("cifar10", s) for s in ("val", "test")] == ["val", "test"]
    run = folder_run / "runs" / "f"
    shown = cli("eval", run, "--device", "cpu")
    assert shown.exit_code == 0 and " on imagefolder val (" in shown.stdout
    out = cli.json("eval", run, "--device", "cpu")
    assert out["split"] == "test" and out["split_name"] == "val" and out["count"] == 18
    wrong = cli("eval", run, "--split", "val", "--device", "cpu")
    assert wrong.exit_code == 2 and "an image folder's val/ is --split test" in wrong.stderr


def test_the_torchvision_preset_trains_an_image_folder_with_random_resized_crops(cli, folder_run, tmp_path):
    """`--preset torchvision`: RandomResizedCrop with torchvision's defaults, evaluation at its resize; the run
    records that resize for export and predict."""
    cfg = yaml.safe_load(cli("train", "--preset", "torchvision", "--print-config").stdout)
    d, t = cfg["data"], cfg["train"]
    assert (d["crop"], d["crop_scale"], d["eval_resize"], cfg["model"]["name"]) == \
        ("random-resized", [0.08, 1.0], 256, "resnet50-v1.5")
    assert d["crop_ratio"] == pytest.approx([0.75, 4 / 3])
    assert (t["lr"], t["batch_size"], t["epochs"], t["milestones"], t["weight_decay"]) == (0.1, 256, 90, [30, 60], 1e-4)
    out = cli.json("train", "--preset", "torchvision", "--data-dir", folder_run / "images", "--set",
                   "model.name=resnet20", "--image-size", "24", "--set", "data.eval_resize=28", "--workers", "0",
                   "--batch-size", "6", "--epochs", "3", "--lr", "0.05", "--device", "cpu", "--run-dir", tmp_path,
                   "--name", "tv")
    assert out["final"]["train_top1"] > 0.6  # three colours, learnt from random-resized crops (chance: 1/3)
    saved = torch.load(tmp_path / "tv" / "last.pt", weights_only=True)
    assert saved["input"]["resize"] == 28 and saved["input"]["image_size"] == [24, 24]
    bad = cli("train", "--preset", "torchvision", "--set", "data.crop_scale=[0.5,0.1]", "--print-config")
    assert bad.exit_code == 2 and "data.crop_scale is [low, high]" in bad.stderr


def test_the_torchvision_v2_preset_is_torchvisions_new_recipe_and_trains(cli, folder_run, tmp_path):
    """`--preset torchvision-v2`: the flags of torchvision's IMAGENET1K_V2 ResNet-50 (its README's command), each
    as a key; shrunk, it trains an image folder with all of them on (176 -> 24 px training crops, evaluation at
    224 -> 32 from 232 -> 37, TrivialAugment, mixup/cutmix, 4 repeats, EMA) and records the evaluation crop."""
    cfg = yaml.safe_load(cli("train", "--preset", "torchvision-v2", "--print-config").stdout)
    m, d, t = cfg["model"], cfg["data"], cfg["train"]
    assert (m["name"], d["image_size"], d["eval_image_size"], d["eval_resize"], d["crop"]) == \
        ("resnet50-v1.5", 176, 224, 232, "random-resized")
    assert (d["randaugment"], d["random_erasing"], d["random_erasing_mode"], d["mixup"], d["cutmix"],
            d["aug_repeats"]) == ("trivial", 0.1, "const", 0.2, 1.0, 4)
    assert (t["epochs"], t["batch_size"], t["lr"], t["weight_decay"], t["no_wd_bn_bias"], t["label_smoothing"],
            t["schedule"], t["warmup"], t["warmup_length"], t["warmup_factor"]) == \
        (600, 1024, 0.5, 2e-5, True, 0.1, "cosine", "linear", "5ep", 0.01)
    assert t["ema"] == pytest.approx((1 - min(1.0, (1 - 0.99998) * 1024 * 32 / 600)) ** (1 / 32), abs=1e-7)
    out = cli.json("train", "--preset", "torchvision-v2", "--data-dir", folder_run / "images", "--set",
                   "model.name=resnet20", "--image-size", "24", "--set", "data.eval_image_size=32", "--set",
                   "data.eval_resize=37", "--set", "train.warmup_length=1ep", "--workers", "0", "--batch-size", "6",
                   "--epochs", "2", "--device", "cpu", "--run-dir", tmp_path, "--name", "tv2")
    assert out["final"]["epoch"] == 2 and "ema_test_top1" in out["final"]
    saved = torch.load(tmp_path / "tv2" / "last.pt", weights_only=True)
    assert saved["input"]["resize"] == 37 and saved["input"]["image_size"] == [32, 32]


@pytest.mark.parametrize("preset, epochs, lr, size, eval_size, magnitude, drop_path, repeats, mixup", [
    ("timm-a2", 300, 5e-3, 224, 0, "rand-m7-mstd0.5-inc1", 0.05, 3, 0.1),
    ("timm-a3", 100, 8e-3, 160, 224, "rand-m6-mstd0.5-inc1", 0.0, 1, 0.1)])
def test_the_timm_presets_are_the_strikes_back_procedures(cli, preset, epochs, lr, size, eval_size, magnitude,
                                                          drop_path, repeats, mixup):
    """`--preset timm-a2` / `timm-a3`: procedures A2 and A3 of "ResNet strikes back" (Table 1), each flag of
    timm's command a key: LAMB, BCE with a 0.2 target threshold, cosine after 5 warm-up epochs, a global batch
    of 2048, crop-pct 0.95 with bicubic evaluation."""
    cfg = yaml.safe_load(cli("train", "--preset", preset, "--print-config").stdout)
    m, d, t = cfg["model"], cfg["data"], cfg["train"]
    assert (m["name"], m["drop_path"]) == ("resnet50-v1.5", drop_path)
    assert (d["image_size"], d["eval_image_size"], d["eval_resize"], d["eval_interpolation"], d["crop"]) == \
        (size, eval_size, 235, "bicubic", "random-resized")
    assert (d["randaugment"], d["random_erasing"], d["mixup"], d["cutmix"], d["aug_repeats"]) == \
        (magnitude, 0.0, mixup, 1.0, repeats)
    assert (t["epochs"], t["batch_size"], t["optimizer"], t["lr"], t["weight_decay"], t["no_wd_bn_bias"],
            t["loss"], t["bce_threshold"], t["label_smoothing"], t["schedule"], t["warmup"], t["warmup_length"],
            t["ema"]) == (epochs, 2048, "lamb", lr, 0.02, True, "bce", 0.2, 0.0, "cosine", "linear", "5ep", 0.0)
    assert t["lr"] * t["warmup_factor"] == pytest.approx(1e-4)  # timm's --warmup-lr


def test_the_timm_a2_preset_trains_an_image_folder(cli, folder_run, tmp_path):
    out = cli.json("train", "--preset", "timm-a2", "--data-dir", folder_run / "images", "--set",
                   "model.name=resnet20", "--image-size", "24", "--set", "data.eval_resize=28", "--set",
                   "train.warmup_length=1ep", "--workers", "0", "--batch-size", "6", "--epochs", "2", "--device",
                   "cpu", "--run-dir", tmp_path, "--name", "a2")
    assert out["final"]["epoch"] == 2 and out["final"]["test_top1"] >= 0
    saved = torch.load(tmp_path / "a2" / "last.pt", weights_only=True)
    assert saved["config"]["model"]["drop_path"] == 0.05 and saved["config"]["train"]["loss"] == "bce"
    assert saved["input"]["resize"] == 28 and saved["input"]["interpolation"] == "bicubic"
    ev = cli.json("eval", tmp_path / "a2", "--device", "cpu")
    assert ev["top1"] == pytest.approx(out["final"]["test_top1"])
    hub = cli("export", tmp_path / "a2", "--format", "hub", "-o", tmp_path / "a2-hub")
    assert hub.exit_code == 0, hub.output
    card = (tmp_path / "a2-hub" / "README.md").read_text()
    assert "| optimizer | lamb |" in card and "| loss | bce |" in card and "| stochastic depth | 0.05 |" in card


def test_loading_an_exported_program_keeps_only_its_loaders_warnings_off_the_terminal():
    """torch 2.11's torch.export.load (the GPU image's torch) makes the weights with torch.frombuffer on the
    archive's read-only bytes, and its warning reached the terminal of `export --format export` (the check) and of
    predict/eval/bench on a .pt2 (seen in a torch 2.11 venv; 2.13's loader copies); torch 2.4's calls torch.load
    without weights_only and printed a paragraph about pickles (seen in benchmarks/lowest_versions.sh's venv),
    where the file is one load_exported trusts. The filter takes exactly those warnings; every other comes
    through, a FutureWarning too."""
    import warnings

    from resnet_cli.quiet import quiet_export_load

    ours = ("The given buffer is not writable, and PyTorch does not support non-writable tensors. This means you "
            "can write to the underlying (supposedly non-writable) buffer using the tensor.")
    pickles = ("You are using `torch.load` with `weights_only=False` (the current default value), which uses the "
               "default pickle module implicitly. It is possible to construct malicious pickle data which will "
               "execute arbitrary code during unpickling")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_export_load():
            warnings.warn(ours, UserWarning)
            warnings.warn(pickles, FutureWarning)
            warnings.warn("another warning", UserWarning)
            warnings.warn("a deprecation", FutureWarning)
        warnings.warn(ours, UserWarning)
        warnings.warn(pickles, FutureWarning)
    assert [str(w.message) for w in seen] == ["another warning", "a deprecation", ours, pickles]


@pytest.mark.slow  # 3 s: two fresh processes (torch warns once a process)
def test_torchs_own_read_only_buffer_warning_is_the_one_the_filter_takes():
    """The warning comes from C++ (tensor_new.cpp) once a process: in a fresh one, torch.frombuffer on bytes warns
    on stderr, and inside quiet_export_load it does not."""
    import subprocess
    import sys

    code = ("import contextlib, torch\nfrom resnet_cli.quiet import quiet_export_load\n"
            "with {}:\n    torch.frombuffer(b'abcd', dtype=torch.uint8)\n")
    loud = subprocess.run([sys.executable, "-c", code.format("contextlib.nullcontext()")], capture_output=True,
                          text=True, timeout=60)
    assert loud.returncode == 0 and "The given buffer is not writable" in loud.stderr, loud.stderr
    quiet = subprocess.run([sys.executable, "-c", code.format("quiet_export_load()")], capture_output=True,
                           text=True, timeout=60)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


@pytest.mark.slow  # 2 s: the quick loop keeps under 90 s
def test_an_exported_file_without_its_metadata_is_one_line(cli, tmp_path):
    """#37 item 4: a .pt2 without the sidecar export writes (here: `resnet build --format export`, untrained)."""
    from PIL import Image

    assert cli("build", "resnet20", "-f", "export", "-o", tmp_path / "b.pt2").exit_code == 0
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    result = cli("predict", tmp_path / "b.pt2", tmp_path / "x.png", "--device", "cpu")
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {tmp_path / 'b.pt2'} has no b.pt2.json beside it: its classes, input "
                                     "size and normalisation are written there by resnet export; export the "
                                     "checkpoint again")
    (tmp_path / "b.pt2.json").write_text('{"model": "resnet20", "classes": ["a"]}')
    partial = cli("eval", tmp_path / "b.pt2", "--dataset", "synthetic")
    assert partial.exit_code == 2 and "has no channels, image_size, resize, mean, std in b.pt2.json" in partial.stderr


def _with_gadget(src: Path, dst: Path, marker: Path) -> Path:
    """`src` (a .pt2 archive) with its example inputs replaced by a torch.save pickle whose loading runs
    `touch marker`: torch.export.load tries weights_only=True on them, then falls back to a full unpickler
    (torch 2.13; torch 2.4 loads them with the full one straight away)."""
    import io
    import zipfile

    class Gadget:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    buffer = io.BytesIO()
    torch.save(Gadget(), buffer)
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for entry in old.infolist():
            inputs = entry.filename.endswith(("sample_inputs/model.pt", "serialized_example_inputs.pt"))
            new.writestr(entry, buffer.getvalue() if inputs else old.read(entry.filename))
    shutil.copy(sidecar(src), sidecar(dst))
    return dst


@pytest.mark.slow  # 5 s: two exports; the quick loop keeps under 90 s
def test_a_pt2_file_loads_only_when_this_user_exported_it(cli, folder_run, tmp_path, monkeypatch):
    """A .pt2 file is code: a crafted one ran `touch` when `resnet predict` loaded it. predict, eval and bench load
    one only when this user's `resnet export` wrote it (its sha256 in the cache folder's record), or with
    --trust-exported; ONNX files are data and load as before."""
    from PIL import Image

    from resnet_cli.trust import trust_record

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a record of this test's own
    run, image = folder_run / "runs" / "f", tmp_path / "x.png"
    Image.new("RGB", (24, 24), (200, 30, 30)).save(image)
    mine = tmp_path / "mine.pt2"
    assert cli("export", run, "-o", mine).exit_code == 0
    digest = hashlib.sha256(mine.read_bytes()).hexdigest()
    assert trust_record().read_text().splitlines() == [f'{digest}  "{mine.resolve()}"']
    assert cli("predict", mine, image, "--device", "cpu").exit_code == 0  # exported here: loads

    marker = tmp_path / "PWNED"
    evil = _with_gadget(mine, tmp_path / "evil.pt2", marker)
    refusal = (f"error: {evil} was not written by resnet export for this user, and a .pt2 file runs code when it "
               "is loaded (torch.export unpickles it): refused; pass --trust-exported if you trust its source, or "
               "use its ONNX export")
    for args in (["predict", evil, image], ["eval", evil, "--dataset", "imagefolder", "--data-dir",
                                             folder_run / "images"], ["bench", evil, "--mode", "infer"]):
        result = cli(*args, "--device", "cpu")
        assert result.exit_code == 2 and result.stderr.strip() == refusal, (args, result.stderr)
        assert not marker.exists(), args
    trusted = cli("predict", evil, image, "--device", "cpu", "--trust-exported")
    assert marker.exists(), trusted.output  # the file really runs a command when loaded: what was refused
    copied = tmp_path / "copied.pt2"  # another user's file, byte for byte one of ours, is ours to load
    shutil.copy(mine, copied)
    shutil.copy(sidecar(mine), sidecar(copied))
    assert cli("predict", copied, image, "--device", "cpu").exit_code == 0
    trust_record().write_text("")  # the record forgotten: the same file is refused
    assert cli("predict", mine, image, "--device", "cpu").exit_code == 2


@pytest.mark.slow  # a process of its own
def test_an_onnxscript_older_than_the_exporter_is_one_line(folder_run, tmp_path):
    """torch 2.13's exporter imports onnxscript's API for it (onnxscript._framework_apis.torch_2_11), which
    onnxscript 0.5 lacks: `resnet export` said "internal error: ModuleNotFoundError" with exit 1. Now one line
    naming the module and the upgrade, exit 2; shown in a process where that module cannot be imported."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import subprocess
    import sys

    from resnet_cli.export import onnx_exporter

    lazy = pytest.importorskip("torch.onnx._internal._lazy_import")  # where torch names the API it needs
    if onnx_exporter() != "dynamo" or not hasattr(lazy, "onnxscript_apis"):
        pytest.skip(f"torch {torch.__version__} imports no onnxscript API module for its exporter")
    api = lazy.onnxscript_apis._name
    out = tmp_path / "b.onnx"
    program = (f"import sys; sys.modules[{api!r}] = None; sys.argv = ['resnet', 'export', "
               f"{str(folder_run / 'runs' / 'f')!r}, '-o', {str(out)!r}]; from resnet_cli.cli import main; main()")
    older = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert older.returncode == 2 and not out.exists(), older.stderr
    assert older.stderr.startswith(f"error: torch {torch.__version__}'s ONNX exporter needs a newer onnxscript than ")
    assert older.stderr.strip().endswith(f"(it has no {api}): pip install -U onnxscript"), older.stderr


def _onnx_file(path: Path, weights_at: str | None) -> Path:
    """A small model in resnet export's ONNX form (its metadata, an N x 1 x 2 x 2 input, four logits: the pixels
    plus a byte each), its bytes inline, or with `weights_at` kept in another file (ONNX "external data") there."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.array([4, 3, 2, 1], np.uint8), "w")
    if weights_at is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", weights_at), ("length", "4")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Cast", ["w"], ["b"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["f", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # onnxruntime 1.19's
    meta = {"model": "tiny", "classes": ["a", "b", "c", "d"], "channels": 1, "image_size": [2, 2], "resize": 0,
            "mean": [0.5], "std": [0.5]}
    helper.set_model_props(model, {k: json.dumps(v) for k, v in meta.items()})
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.slow  # 1.0-1.3 s: the quick loop keeps under 90 s (CONTRIBUTING)
def test_an_onnx_file_that_names_another_file_is_refused(cli, tmp_path, monkeypatch):
    """onnxruntime reads an ONNX tensor's "external data" from a path relative to the working directory, past the
    gate and its byte bound: a crafted file fed any file there to the model as its weights (a secret's bytes, or a
    FIFO's that never end). resnet export writes none, so predict, eval and bench refuse such a file in one line;
    the same model with its weight inline predicts."""
    pytest.importorskip("onnxruntime")
    (tmp_path / "secret.bin").write_bytes(b"\x01\x02\x1e\x04")
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "x.png"
    Image.new("L", (2, 2), 255).save(image)
    plain = _onnx_file(tmp_path / "plain.onnx", None)
    assert cli.json("predict", plain, image, "--topk", "1")["predictions"][0]["top"][0]["class"] == "a"

    evil = _onnx_file(tmp_path / "evil.onnx", "secret.bin")
    import onnxruntime  # no idle threat: onnxruntime alone reads the secret into the weight, and the logits show it

    leaked = onnxruntime.InferenceSession(evil.read_bytes(), providers=["CPUExecutionProvider"])
    assert leaked.run(None, {"x": torch.zeros(1, 1, 2, 2).numpy()})[0].tolist() == [[1, 2, 30, 4]]
    refusal = (f"error: {evil} keeps tensor 'w' in another file: onnxruntime would read it past the byte bound, "
               "and resnet export writes one self-contained file: refused")
    for args in (["predict", evil, image], ["eval", evil, "--dataset", "synthetic"], ["bench", evil]):
        result = cli(*args)
        assert result.exit_code == 2 and result.stderr.strip() == refusal, (args, result.output)


def test_external_data_is_found_wherever_an_onnx_file_keeps_a_tensor():
    """A node's tensor attribute (Constant), a subgraph's initializer (If), a sparse initializer and a function's
    node each can name another file; each is found, and a model without one finds nothing."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from resnet_cli.exported import external_tensors

    def far(name: str) -> TensorProto:
        t = helper.make_tensor(name, TensorProto.FLOAT, [1], [0.0])
        t.data_location = TensorProto.EXTERNAL
        entry = t.external_data.add()
        entry.key, entry.value = "location", "elsewhere.bin"
        return t

    def model(*, node_t=None, branch_t=None, sparse_t=None, function_t=None):
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
        branch = helper.make_graph([helper.make_node("Identity", ["k"], ["y"])], "b", [], [out],
                                   [branch_t or helper.make_tensor("k", TensorProto.FLOAT, [1], [1.0])])
        nodes = [helper.make_node("Constant", [], ["c"], value=node_t or helper.make_tensor("c", 1, [1], [2.0])),
                 helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)]
        sparse = [helper.make_sparse_tensor(sparse_t, helper.make_tensor("i", TensorProto.INT64, [1], [0]), [1])
                  ] if sparse_t else []
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])], [out],
                                  sparse_initializer=sparse)
        body = [helper.make_node("Constant", [], ["z"], value=function_t)] if function_t else []
        functions = [helper.make_function("local", "f", [], ["z"], body, [helper.make_opsetid("", 17)])]
        return helper.make_model(graph, functions=functions, opset_imports=[helper.make_opsetid("", 17)])

    assert external_tensors(model()) == []
    assert external_tensors(model(node_t=far("in-a-node"))) == ["in-a-node"]
    assert external_tensors(model(branch_t=far("k"))) == ["k", "k"]  # the same graph as both branches
    assert external_tensors(model(sparse_t=far("sparse"))) == ["sparse"]
    assert external_tensors(model(function_t=far("in-a-function"))) == ["in-a-function"]
    onnx.checker.check_model(model())  # the shapes above are real ONNX, not stand-ins


@pytest.mark.slow  # a Fashion-MNIST run, two exports, and six evaluations of 10,000 images
def test_predict_and_eval_run_exported_files_with_the_checkpoints_figures(cli, tmp_path, fashion_dir, monkeypatch):
    """ONNX (onnxruntime) and .pt2 (torch.export) files give the checkpoint's top-1 within 0.1% on the same
    images, and its predictions, naming the runtime; their metadata carries classes and normalisation."""
    pytest.importorskip("onnxruntime")
    from PIL import Image

    run = tmp_path / "f"
    cli.json("train", "--preset", "fashion-mnist", "--data-dir", fashion_dir, "--set", "data.train_limit=1000",
             "--epochs", "1", "--device", "cpu", "--run-dir", tmp_path, "--name", "f", "--batch-size", "64")
    base = cli.json("eval", run, "--data-dir", fashion_dir, "--device", "cpu")
    for suffix, runtime in ((".onnx", "onnxruntime"), (".pt2", "torch.export")):
        exported = tmp_path / f"f{suffix}"
        assert cli("export", run, "-o", exported).exit_code == 0
        out = cli.json("eval", exported, "--data-dir", fashion_dir)
        assert out["runtime"] == runtime and out["count"] == base["count"] == 10_000
        assert abs(out["top1"] - base["top1"]) <= 0.001, (suffix, out["top1"], base["top1"])
        assert out["classes"] == base["classes"]
        text = cli("eval", exported, "--data-dir", fashion_dir).stdout
        assert text.startswith(f"resnet20 ({runtime}) on fashion-mnist test (10,000 images)")
        bench = cli.json("bench", exported, "--mode", "infer", "-b", "16", "--iters", "2", "--repeats", "2")
        assert [r["runtime"] for r in bench["results"]] == [runtime, "pytorch (fp32, eager)"]
        assert bench["vs_pytorch"] > 0 and all(r["images_per_s"] > 0 and r["batch_size"] == 16
                                               for r in bench["results"])
        assert "only infers" in cli("bench", exported, "--mode", "train").stderr
    for i in range(3):
        Image.effect_noise((28, 28), 60 + 20 * i).save(tmp_path / f"{i}.png")
    images = [tmp_path / f"{i}.png" for i in range(3)]
    want = cli.json("predict", run, *images, "--device", "cpu")["predictions"]
    for suffix in (".onnx", ".pt2"):
        got = cli.json("predict", tmp_path / f"f{suffix}", *images)
        assert [r["top"][0]["class"] for r in got["predictions"]] == [r["top"][0]["class"] for r in want]
        assert all(abs(a["top"][0]["prob"] - b["top"][0]["prob"]) < 1e-4 for a, b in zip(got["predictions"], want))
    # On the CPU, a batch past the memory left is refused before its runtime takes it (the model's shapes: the
    # runtime holds no less): eval's default 1,024 of 10,000 images, bench's -b, predict's 3 images.
    from resnet_cli import analysis
    from resnet_cli.models import build_model

    twin = build_model("resnet20", num_classes=10, in_channels=1)
    monkeypatch.setattr(analysis, "cpu_memory_left", lambda: analysis.inference_floor(twin, 28, 100))
    for suffix in (".onnx", ".pt2"):
        exported = tmp_path / f"f{suffix}"
        for args, batch in ((["eval", exported, "--data-dir", fashion_dir], "1,024"),
                            (["bench", exported, "--mode", "infer", "-b", "512"], "512")):
            refused = cli(*args)
            assert refused.exit_code == 2 and f"resnet20's one forward pass at batch {batch} and 28x28 needs at " \
                                              "least" in refused.stderr, refused.output
        assert cli.json("bench", exported, "--mode", "infer", "-b", "64", "--iters", "1", "--repeats", "1")
        monkeypatch.setattr(analysis, "cpu_memory_left", lambda: analysis.inference_floor(twin, 28, 2))
        refused = cli("predict", exported, *images)
        assert refused.exit_code == 2 and "--batch-size 64: resnet20's one forward pass at batch 3" in refused.stderr
        assert cli.json("predict", exported, *images, "-b", "2")["count"] == 3
        monkeypatch.setattr(analysis, "cpu_memory_left", lambda: analysis.inference_floor(twin, 28, 100))


def test_eval_shows_every_class_up_to_twenty_and_the_ends_of_the_ranking_beyond():
    """ImageNet's 1,000 classes were 1,000 rows: past 20 classes the table is the 10 lowest and 10 highest
    (--json keeps every class), as the confusions beyond 20 classes are the most frequent ones."""
    import io

    from rich.console import Console

    from resnet_cli.commands.eval import per_class_table

    def shown(rows) -> list[str]:
        console = Console(file=io.StringIO(), width=100)
        console.print(per_class_table(rows))
        return console.file.getvalue().splitlines()

    rows = [{"class": f"n{i:08d}", "count": 50, "accuracy": (i * 7919 % 1000) / 1000} for i in range(1000)]
    lines = shown(rows)
    assert lines[0].strip() == "10 lowest, 10 highest of 1,000 classes"
    assert lines[-1].strip() == "per-class top-1; --json: every class"
    by_accuracy = sorted(rows, key=lambda r: r["accuracy"])
    for row in by_accuracy[:10] + by_accuracy[-10:]:
        assert any(row["class"] in line and f"{row['accuracy']:.2%}" in line for line in lines), row
    assert not any(row["class"] in " ".join(lines) for row in by_accuracy[10:-10])
    assert len(lines) < 30 and any(line.split("│")[1].strip() == "..." for line in lines if "│" in line)
    few = rows[:25]
    for row in few[3:]:
        row["count"] = 0  # classes with no test images are not ranked
    assert "the 3 classes with images, of 25" in " ".join(" ".join(shown(few)).split())
    assert sum("n0000" in line for line in shown(rows[:20])) == 20  # up to 20: every class, in order
