"""Image folders' training crops (data/crops.py): regions drawn as the paper and torchvision draw them, decoded
and cut on the CPU, resized for the whole batch on the device; the resize agrees with Pillow's."""

from __future__ import annotations

import math
import random

import pytest
import torch

from resnet_cli.data.crops import canvas_side, decode_region, random_resized_box, resize_crops, scale_box
from resnet_cli.data.transforms import upright_8bit

Image = pytest.importorskip("PIL.Image")


def smooth_image(w: int, h: int, seed: int = 0):
    """A photo-like image: low-frequency colour (so a resize compares without aliasing) and a few edges."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, 256, (10, 12, 3), generator=g, dtype=torch.uint8).numpy()  # features ~w/10 wide
    return Image.fromarray(low).resize((w, h), Image.BICUBIC)


def region(path, box, canvas):
    return decode_region(lambda: Image.open(path), box, canvas, lambda im: upright_8bit(im, "RGB"))


def test_regions_are_drawn_as_the_paper_and_torchvision_draw_them():
    rng = random.Random(0)
    for _ in range(500):
        x, y, cw, ch = scale_box(500, 375, rng, 224, (256, 480))
        assert cw == ch and 0 <= x <= 500 - cw and 0 <= y <= 375 - ch
        assert round(224 * 375 / 480) <= cw <= round(224 * 375 / 256)  # shorter side 256..480, a 224 crop
    fallback = 0
    for _ in range(2000):
        x, y, cw, ch = random_resized_box(500, 375, rng, (0.08, 1.0), (3 / 4, 4 / 3))
        assert 0 <= x <= 500 - cw and 0 <= y <= 375 - ch
        if (cw, ch) == (500, 375):
            fallback += 1
            continue
        assert 0.08 * 0.95 <= cw * ch / (500 * 375) <= 1.0 and 3 / 4 * 0.97 <= cw / ch <= 4 / 3 * 1.03
    assert fallback < 20
    # a panorama: no try fits, so the centre crop at the nearest ratio
    assert random_resized_box(1000, 100, random.Random(0), (0.9, 1.0), (3 / 4, 4 / 3)) == (433, 0, 133, 100)


@pytest.mark.parametrize("size, box", [((300, 200), (40, 30, 150, 120)),  # upscaled to 224
                                       ((600, 500), (10, 20, 300, 300)),  # shrunk by 1.34 on the device
                                       ((2000, 1600), (100, 50, 1500, 1400))])  # draft 1/4, then a box reduce
def test_the_device_resize_matches_pillows(tmp_path, size, box):
    path = tmp_path / "a.jpg"
    smooth_image(*size).save(path, quality=95)
    canvas, h, w = region(path, box, canvas_side(224))
    assert canvas.shape == (3, 336, 336) and 0 < h <= 336 and 0 < w <= 336
    assert max(h, w) >= 336 / 2 or max(box[2:]) <= 336  # shrunk no further than the canvas needs
    got = resize_crops(canvas[None], torch.tensor([[h, w, 0]]), 224)[0]
    with Image.open(path) as im:
        want = im.convert("RGB").resize((224, 224), Image.BILINEAR, box=(box[0], box[1], box[0] + box[2],
                                                                        box[1] + box[3]))
    want = torch.from_numpy(__import__("numpy").asarray(want).copy()).permute(2, 0, 1)
    diff = (got.int() - want.int()).abs().float()
    # the same bilinear resize to a level or two; the draft decode (DCT scaling) and box reduce filter differently
    mean, q99 = (0.5, 2) if max(size) < 1000 else (2.0, 8)
    assert diff.mean() < mean and diff.quantile(0.99) <= q99, (diff.mean(), diff.max())


def test_flip_mirrors_exactly_and_edges_are_not_darkened(tmp_path):
    path = tmp_path / "a.png"
    smooth_image(120, 90).save(path)
    canvas, h, w = region(path, (10, 5, 100, 80), 336)
    both = resize_crops(torch.stack([canvas, canvas]), torch.tensor([[h, w, 0], [h, w, 1]]), 224)
    assert (both[1].int() - both[0].flip(-1).int()).abs().max() <= 1
    grey = tmp_path / "grey.png"
    Image.new("RGB", (50, 40), (90, 150, 210)).save(grey)
    canvas, h, w = region(grey, (0, 0, 50, 40), 336)
    out = resize_crops(canvas[None], torch.tensor([[h, w, 1]]), 224)[0]
    assert (out == torch.tensor([90, 150, 210], dtype=torch.uint8).view(3, 1, 1)).all()  # every pixel, edges too


def test_a_crop_larger_than_the_canvas_is_decoded_smaller(tmp_path):
    """A 1600-pixel region of a JPEG: libjpeg's DCT scaling (draft) decodes it at 1/4, no resize of the full
    image on the CPU."""
    path = tmp_path / "big.jpg"
    smooth_image(2000, 1600).save(path, quality=90)
    canvas, h, w = region(path, (0, 0, 2000, 1600), 336)
    assert (w, h) == (250, 200)  # draft at 1/4 (500x400), then a 2x box reduce to fit the 336 canvas
    assert math.isclose(w / h, 2000 / 1600, rel_tol=0.02)


def write_folder(root, classes=("a", "b"), per_class=8, size=(64, 48)):
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            smooth_image(*size, seed=ci * 100 + i).save(root / c / f"{i}.jpg", quality=90)


def test_a_folders_listing_is_kept_and_walked_again_when_it_changes(tmp_path, monkeypatch):
    from resnet_cli.data import imagefolder
    from resnet_cli.data.imagefolder import scan

    write_folder(tmp_path / "train")
    (tmp_path / "train" / "b" / "deeper").mkdir()
    smooth_image(64, 48).save(tmp_path / "train" / "b" / "deeper" / "x.png")
    first, classes = scan(tmp_path / "train", cache_dir=tmp_path / "index")
    assert len(first) == 17 and classes == ["a", "b"] and len(list((tmp_path / "index").iterdir())) == 1
    walks = []
    real = imagefolder._files_under
    monkeypatch.setattr(imagefolder, "_files_under", lambda *a: walks.append(a[1]) or real(*a))
    assert scan(tmp_path / "train", cache_dir=tmp_path / "index") == (first, classes) and walks == []  # from the index
    smooth_image(64, 48).save(tmp_path / "train" / "b" / "deeper" / "y.png")  # a new file two folders down
    again, _ = scan(tmp_path / "train", cache_dir=tmp_path / "index")
    assert len(again) == 18 and walks and again[-1][0].endswith("/b/deeper/y.png")
    (tmp_path / "train" / "a" / "0.jpg").unlink()
    assert len(scan(tmp_path / "train", cache_dir=tmp_path / "index")[0]) == 17
    for index in (tmp_path / "index").iterdir():
        index.write_text("{not json")  # a broken index is walked past, then rewritten
    assert scan(tmp_path / "train", cache_dir=tmp_path / "index")[0] == scan(tmp_path / "train")[0]


def test_a_kept_listing_is_read_through_the_gate_and_names_only_images_in_their_class_folders(tmp_path, monkeypatch):
    """The cache folder may be shared ($RESNET_CLI_DATA): a listing there is outside bytes. One that is a FIFO,
    too large, or names a file outside its class folder is walked past (and rewritten), never followed."""
    import json
    import os

    from resnet_cli.data import imagefolder
    from resnet_cli.data.imagefolder import scan

    write_folder(tmp_path / "train")
    truth, _ = scan(tmp_path / "train")
    cache = tmp_path / "index"
    scan(tmp_path / "train", cache_dir=cache)
    (index,) = cache.iterdir()
    kept = json.loads(index.read_text())
    (tmp_path / "secret.png").write_bytes(b"not yours")
    for planted in (["a/../../secret.png"], [str(tmp_path / "secret.png")], ["b/0.jpg"], ["a/notes.txt"], [3]):
        index.write_text(json.dumps({**kept, "classes": {**kept["classes"], "a": planted}}))
        assert scan(tmp_path / "train", cache_dir=cache)[0] == truth, planted
        assert json.loads(index.read_text()) == kept  # walked again, and the listing rewritten
    index.write_text(json.dumps({**kept, "classes": {"..": kept["classes"]["a"], "b": kept["classes"]["b"]}}))
    assert scan(tmp_path / "train", cache_dir=cache)[0] == truth
    walks = []
    real = imagefolder._files_under
    monkeypatch.setattr(imagefolder, "_files_under", lambda *a: walks.append(a[1]) or real(*a))
    assert scan(tmp_path / "train", cache_dir=cache)[0] == truth and walks == []  # the listing, read
    monkeypatch.setattr(imagefolder, "MAX_LISTING_BYTES", index.stat().st_size - 1)  # past its bound: not read
    assert scan(tmp_path / "train", cache_dir=cache)[0] == truth and walks
    monkeypatch.undo()
    index.unlink()
    os.mkfifo(index)  # a FIFO in its place: not opened for a blocking read, walked past, replaced
    assert scan(tmp_path / "train", cache_dir=cache)[0] == truth and index.is_file()
    assert json.loads(index.read_text()) == kept


def test_hidden_files_and_folders_are_neither_images_nor_classes(tmp_path, cli):
    """macOS writes `._0.jpg` (AppleDouble metadata) beside each file it copies to a drive or share: a run
    stopped at the first with "cannot decode image". Jupyter's `.ipynb_checkpoints/` was a class "holding no
    images" (torchvision's ImageFolder makes it a class). Hidden names are left out of every folder search:
    training and evaluation splits, a listing kept from before (version 1 could hold them), --data-dir alone,
    `predict` on a folder; a file named on predict's command line is read whatever its name."""
    import json

    from resnet_cli.data import imagefolder
    from resnet_cli.data.imagefolder import scan
    from resnet_cli.predict import list_images

    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)
    write_folder(tmp_path / "d" / "train", per_class=3, size=(24, 24))
    write_folder(tmp_path / "d" / "val", per_class=1, size=(24, 24))
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "d" / split / c / "._0.jpg").write_bytes(apple_double)
        (tmp_path / "d" / split / ".ipynb_checkpoints").mkdir()
        (tmp_path / "d" / split / ".ipynb_checkpoints" / "x-checkpoint.ipynb").write_text("{}")
    (tmp_path / "d" / "train" / "a" / ".thumbs").mkdir()
    smooth_image(24, 24).save(tmp_path / "d" / "train" / "a" / ".thumbs" / "0.jpg")
    cache = tmp_path / "index"
    samples, classes = scan(tmp_path / "d" / "train", cache_dir=cache)
    assert classes == ["a", "b"] and [p for p, _ in samples] == [str(tmp_path / "d" / "train" / c / f"{i}.jpg")
                                                                 for c in "ab" for i in range(3)]
    (index,) = cache.iterdir()
    kept = json.loads(index.read_text())
    index.write_text(json.dumps({**kept, "version": 1, "classes": {**kept["classes"], "a": ["a/._0.jpg"]}}))
    assert scan(tmp_path / "d" / "train", cache_dir=cache)[0] == samples  # walked again, not read
    assert imagefolder.INDEX_VERSION == 2 and json.loads(index.read_text()) == kept
    out = cli.json("train", "--data-dir", tmp_path / "d", "--model", "resnet20", "--image-size", "16", "--epochs",
                   "1", "--batch-size", "3", "--workers", "0", "--device", "cpu", "--run-dir", tmp_path / "runs")
    assert out["dataset"] == "imagefolder" and out["steps"] == 2  # 6 images of batch 3
    evaluated = cli.json("eval", out["run_dir"], "--device", "cpu")
    assert evaluated["count"] == 2 and [c["class"] for c in evaluated["per_class"]] == ["a", "b"]
    (tmp_path / "d" / "train" / "a").rename(tmp_path / "d" / "train" / ".a")
    (tmp_path / "d" / "train" / "b").rename(tmp_path / "d" / "train" / ".b")
    refused = cli("train", "--data-dir", tmp_path / "d", "--print-config")
    assert refused.exit_code == 2 and "cannot tell which dataset" in refused.stderr
    val = tmp_path / "d" / "val"
    assert list_images([val]) == [val / "a" / "0.jpg", val / "b" / "0.jpg"]
    assert list_images([val / "a" / "._0.jpg"]) == [val / "a" / "._0.jpg"]


def test_an_image_folders_evaluation_split_is_val_or_a_name_timm_reads_for_it(tmp_path, cli):
    """Roboflow's and many Kaggle exports name it valid/: such a folder was refused ("k/val does not exist").
    valid/, validation/, eval/ and evaluation/ are read as val/ (timm's names for it) by train, eval and data
    convert; two of them are one line (never guessed), and test/ is never taken for it: the refusal says so."""
    from resnet_cli import config as C
    from resnet_cli.data import load_data

    root = tmp_path / "k"
    write_folder(root / "train", per_class=3, size=(24, 24))
    write_folder(root / "valid", per_class=2, size=(24, 24))
    cfg = C.build_config({"data.dataset": "imagefolder", "data.data_dir": str(root), "data.image_size": 16})
    data = load_data(cfg.data)
    assert (data.count("train"), data.count("test"), data.input.classes) == (6, 4, ("a", "b"))
    assert load_data(cfg.data, need_train=False).count("test") == 4
    converted = cli("data", "convert", root, tmp_path / "s", "--shard-images", "100")
    assert converted.exit_code == 0 and "6 train images in 1 shards, 4 val images in 1 shards" in converted.stdout
    write_folder(root / "evaluation", per_class=1, size=(24, 24))
    both = cli("train", "--data-dir", root, "--model", "resnet20", "--epochs", "1", "--device", "cpu")
    assert both.exit_code == 2 and both.stderr.strip() == (f"error: {root} has both valid/ and evaluation/: which one "
                                                           "is the evaluation split is never guessed; keep one "
                                                           "(move or rename the other)")
    for name in ("valid", "evaluation"):
        (root / name).rename(root / ("test" if name == "valid" else "elsewhere"))
    refused = cli("train", "--data-dir", root, "--model", "resnet20", "--epochs", "1", "--device", "cpu")
    assert refused.exit_code == 2 and refused.stderr.strip().endswith("it has test/: to evaluate on it, name it val/")


def test_samples_hold_an_image_folders_pairs_in_three_objects(tmp_path):
    """What every DataLoader worker gets (pickled, from a fork server): the names' bytes and 16 bytes a sample,
    whatever their number, not an object per sample (ImageNet's 1.28M Path tuples were 475 MB, 17 s to unpickle
    in each worker: BENCHMARKS.md)."""
    import os
    import pickle

    from resnet_cli.data.imagefolder import scan
    from resnet_cli.data.samples import Samples

    names = ["cat/0.jpg", "cat/sub dir/1.png", "dog/été.jpg", os.fsdecode(b"dog/\xff\xfe.jpg")]  # not UTF-8: kept
    samples = Samples.of(tmp_path, names, [0, 0, 1, 1])
    assert list(samples) == [(f"{tmp_path}/{n}", y) for n, y in zip(names, [0, 0, 1, 1])]
    assert os.fsencode(samples[3][0]).endswith(b"\xff\xfe.jpg") and samples[-1] == samples[3]
    assert samples[1:3] == [samples[1], samples[2]] and isinstance(samples[1:3], Samples)
    assert samples.take([3, 0, 3]) == [samples[3], samples[0], samples[3]] and len(samples[5:]) == 0
    with pytest.raises(IndexError):
        samples[4]
    blob = pickle.dumps(samples, protocol=pickle.HIGHEST_PROTOCOL)
    assert pickle.loads(blob) == samples
    many = Samples.of(tmp_path, [f"c{i % 10}/{i}.jpg" for i in range(20_000)], [i % 10 for i in range(20_000)])
    held = sum(len(f"c{i % 10}/{i}.jpg") for i in range(20_000)) + 16 * 20_000
    assert held < len(pickle.dumps(many, protocol=pickle.HIGHEST_PROTOCOL)) < held + 1024
    write_folder(tmp_path / "train")
    found, classes = scan(tmp_path / "train")
    assert isinstance(found, Samples) and len(found) == 16 and classes == ["a", "b"]
    assert [y for _, y in found] == sorted(y for _, y in found) and found[0][0].startswith(f"{tmp_path}/train/a/")


def test_the_walk_finds_what_sorted_rglob_found_in_its_order(tmp_path):
    """`listing` walks with os.scandir (a minute of CPU less at ImageNet's size): the same files, folders and
    order as the rglob walk it replaced, on a tree with every kind of name and link, hidden names (which that
    walk listed) left out."""
    import json
    import os
    import sys

    from resnet_cli.data.imagefolder import listing

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from listing_cost import rglob_walk

    root = tmp_path / "train"
    for rel in ("b/x.jpg", "b/a/y.PNG", "b/a/z/deep.webp", "b/a.jpg", "b/a-b.jpg", "b/A.JPEG", "b/.hidden.jpg",
                "b/..two.jpg", "b/.jpg", "b/noext", "b/notes.txt", "b/a.", "a/1.jpg", "c d/é.jpg", "c d/z/0.png",
                "b/.thumbs/0.jpg", ".ipynb_checkpoints/x.jpg", "b/a..b.jpg", "b/gray.pgm"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    (root / "b" / "empty").mkdir()
    os.symlink(root / "a", root / "b" / "linked-folder")  # noted, not entered
    os.symlink(root / "a" / "1.jpg", root / "b" / "linked.jpg")  # a file through a link: listed
    os.symlink(root / "nowhere.jpg", root / "b" / "dangling.jpg")
    os.symlink(root / "a", root / "linked-class")  # a class folder through a link: entered
    (root / "stray.jpg").write_bytes(b"")  # not in a class folder
    classes, dirs = rglob_walk(root)  # the walk before (imagefolder.py until 2026-12-07)
    shown = {c: [f for f in files if "/." not in f] for c, files in classes.items() if not c.startswith(".")}
    dirs = {d: mtime for d, mtime in dirs.items() if d == "." or not any(p[0] == "." for p in d.split("/"))}
    assert listing(root) == shown and len(shown) == len(classes) - 1 and "b/.hidden.jpg" in classes["b"]
    assert "b/gray.pgm" in shown["b"]  # every extension torchvision's ImageFolder reads
    classes = shown
    assert classes["b"][:6] == ["b/A.JPEG", "b/a/y.PNG", "b/a/z/deep.webp", "b/a-b.jpg", "b/a..b.jpg",
                               "b/a.jpg"]  # a folder where its name sorts, as a component
    assert "b/a/z/deep.webp" in classes["b"] and classes["linked-class"] == ["linked-class/1.jpg"]
    listing(root, tmp_path / "cache")
    (saved,) = (tmp_path / "cache").iterdir()
    assert json.loads(saved.read_text())["dirs"] == dirs


def test_a_saved_listings_names_are_checked_name_by_name():
    from resnet_cli.data.imagefolder import _all_inside

    for bad in (["cat/../x.jpg"], ["cat/a/../../x.jpg"], ["/etc/x.jpg"], ["cat/x.txt"], ["cat/x"], [None], [["x"]],
                ["catalogue/a.jpg"], ["dog/a.jpg"], ["cat/._a.jpg"], ["cat/.ipynb_checkpoints/a.jpg"]):
        assert not _all_inside(["cat/ok.jpg", *bad], "cat"), bad
    assert not _all_inside(["../a.jpg"], "..") and not _all_inside(["a/b.jpg"], "a/b") and not _all_inside("cat/", "cat")
    assert not _all_inside([".a/b.jpg"], ".a") and not _all_inside([], "")
    assert _all_inside(["cat/a..b.jpg", "cat/d.e/F.PNG", "cat/x.y.webp"], "cat") and _all_inside([], "cat")


@pytest.mark.slow  # worker processes
def test_training_workers_persist_across_epochs_and_each_epoch_draws_anew(tmp_path):
    from resnet_cli.data.imagefolder import FolderLoader, ImageFolderDataset, TrainCrop, scan
    from resnet_cli.data.inputs import InputSpec

    write_folder(tmp_path / "train", per_class=8)
    samples, classes = scan(tmp_path / "train")
    spec = InputSpec.of(classes, 3, 32, 37, [0.5] * 3, [0.25] * 3)

    def loader(workers):
        ds = ImageFolderDataset(samples, True, crop=32, resize=37, train_crop=TrainCrop("random-resized"))
        return FolderLoader(ds, 4, spec, torch.device("cpu"), train=True, seed=3, workers=workers)

    warm = loader(2)
    epochs = [[x for x, _ in warm.batches(epoch)] for epoch in range(3)]
    assert warm.data_loader() is warm._loader and warm._loader.persistent_workers
    pids = {w.pid for w in warm._loader._iterator._workers}
    list(warm.batches(3))
    assert {w.pid for w in warm._loader._iterator._workers} == pids  # the same processes, epoch after epoch
    assert not torch.equal(epochs[1][0], epochs[2][0])  # the epoch reaches the persistent workers
    for epoch in range(3):  # as a fresh loader (no workers) draws them: nothing stale in the workers
        fresh = [x for x, _ in loader(0).batches(epoch)]
        assert len(fresh) == len(epochs[epoch]) == 4 and all(torch.equal(a, b) for a, b in zip(epochs[epoch], fresh))
    tail = [x for x, _ in warm.batches(2, start=2)]
    assert all(torch.equal(a, b) for a, b in zip(tail, epochs[2][2:])) and len(tail) == len(epochs[2]) - 2


def test_on_a_cpu_device_the_worker_finishes_the_crop_as_the_device_would(tmp_path):
    """#37 item 7: where the device is the CPU, a training worker returns the finished crop (resized, flipped;
    nothing left for the "device", the same cores); on a GPU it keeps the canvas for the device's grid_sample.
    The two crops of one region agree within a few levels (antialiased Pillow against the device's bilinear
    sampling of a box-reduced canvas), far closer than either to the other's mirror image."""
    from resnet_cli.data.imagefolder import ImageFolderDataset, TrainCrop, on_device

    path = tmp_path / "a.jpg"
    smooth_image(500, 375).save(path, quality=95)
    ds = ImageFolderDataset([(path, 0)] * 8, True, crop=64, train_crop=TrainCrop("random-resized"))
    assert ds.finishing_for(torch.device("cuda")) is ds and not ds.finish_in_worker
    cpu = ds.finishing_for(torch.device("cpu"))
    assert cpu.finish_in_worker and not ds.finish_in_worker  # a copy: the dataset itself is unchanged
    flips = set()
    for i in range(8):
        canvas, sizes, _ = ds[i]
        finished, fsizes, _ = cpu[i]
        assert canvas.shape == (3, canvas_side(64), canvas_side(64)) and finished.shape == (3, 64, 64)
        assert fsizes.tolist() == [64, 64, 0]
        flips.add(int(sizes[2]))
        device = resize_crops(canvas[None], sizes[None], 64)[0]
        diff = (device.float() - finished.float()).abs().mean()
        mirrored = (device.flip(-1).float() - finished.float()).abs().mean()
        assert diff < 8 and diff < mirrored / 2, (i, diff, mirrored)  # the same region, the same flip
    assert flips == {0, 1}

    class Loader:  # on_device leaves a finished batch as it is: no resize on the CPU
        train, device, seed, rank, channels_last, augment, prefetch = True, torch.device("cpu"), 0, 0, False, None, True
        mean, std = torch.zeros(3), torch.ones(3)

    batch = (torch.stack([cpu[i][0] for i in range(4)]), torch.stack([cpu[i][1] for i in range(4)]), torch.zeros(4))
    (x, _), = list(on_device(Loader(), [batch], 64, 0, 0))
    assert torch.allclose(x, batch[0].float() / 255)


def test_uploads_stage_the_next_batch_before_handing_out_this_one():
    """#34 item 3: on CUDA each batch's copy is issued (on a side stream) before the batch ahead of it is handed to
    the step, so the copy overlaps that step; every batch comes out once, in order, the last one too, and a loop
    that stops early stages at most one batch it does not use. On the CPU the batches pass as they are."""
    from resnet_cli.data.imagefolder import one_ahead, uploads

    log = []
    out = one_ahead(range(4), lambda i: log.append(f"stage {i}") or i, lambda i: log.append(f"hand {i}") or i * 10)
    assert list(out) == [0, 10, 20, 30]
    assert log == ["stage 0", "stage 1", "hand 0", "stage 2", "hand 1", "stage 3", "hand 2", "hand 3"]
    assert list(one_ahead([], lambda i: i, lambda i: i)) == []
    log.clear()
    early = one_ahead(range(100), lambda i: log.append(i) or i, lambda i: i)
    assert [next(early), next(early)] == [0, 1] and log == [0, 1, 2]
    early.close()

    batches = [(torch.full((2, 3), i), torch.tensor([i, i])) for i in range(3)]
    for ahead in (True, False):
        got = list(uploads(iter(batches), torch.device("cpu"), ahead))
        assert [(int(x[0, 0]), y.tolist()) for x, y in got] == [(0, [0, 0]), (1, [1, 1]), (2, [2, 2])]


def test_a_draft_decoded_jpeg_whose_sides_are_not_multiples_of_the_factor_crops_to_its_edges(tmp_path, monkeypatch):
    """libjpeg's DCT scaling rounds each side up on its own (526 x 319 at 1/8: 66 x 40), so the two scales differ:
    a box reaching the bottom edge, scaled by the horizontal one, ran past the decoded image, and the CPU-device
    crop failed with Pillow's "box can't exceed original image size" (a run stopped at "cannot decode image").
    Both crops now reach the edges and agree with a full decode."""
    from resnet_cli.data import crops
    from resnet_cli.data.transforms import upright_8bit

    path = tmp_path / "odd.jpg"
    smooth_image(526, 319).save(path, quality=90)

    def rgb(im):
        return upright_8bit(im, "RGB")

    for box in ((0, 0, 526, 319), (200, 100, 326, 219), (0, 150, 300, 169)):
        drafted = crops.finished_crop(lambda: Image.open(path), box, 32, 0, rgb)
        canvas, h, w = crops.decode_region(lambda: Image.open(path), box, 48, rgb)
        monkeypatch.setattr(crops, "DRAFT", False)
        full = crops.finished_crop(lambda: Image.open(path), box, 32, 0, rgb)
        monkeypatch.setattr(crops, "DRAFT", True)
        assert drafted.shape == full.shape == (3, 32, 32)
        assert (drafted.float() - full.float()).abs().mean() < 6, box
        assert canvas[:, h - 1, :w].float().mean() > 20  # the region's last row is image, not the black past it


def quadrants(w: int, h: int):
    """Four solid colours, one per quadrant: any wrong turn or mirror moves them, by far more than JPEG's noise."""
    import numpy as np

    a = np.zeros((h, w, 3), np.uint8)
    a[:h // 2, :w // 2], a[:h // 2, w // 2:] = (230, 20, 20), (20, 230, 20)
    a[h // 2:, :w // 2], a[h // 2:, w // 2:] = (20, 20, 230), (230, 230, 20)
    return Image.fromarray(a)


def tagged(img, orientation: int, fmt: str) -> bytes:
    """`img` saved as `fmt` with an EXIF Orientation tag (a TIFF's own tag for a TIFF), as a phone saves a photo."""
    import io

    buffer, exif = io.BytesIO(), Image.Exif()
    exif[0x0112] = orientation
    extra = {"tiffinfo": {0x0112: orientation}} if fmt == "TIFF" else {"exif": exif.tobytes()}
    img.save(buffer, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}), **extra)
    return buffer.getvalue()


def upright(a, orientation: int):
    """The pixels `a` (H x W x C) as shown under an EXIF orientation, from its definition (numpy, not Pillow)."""
    import numpy as np

    turned = {1: a, 2: a[:, ::-1], 3: a[::-1, ::-1], 4: a[::-1], 5: a.transpose(1, 0, 2), 6: np.rot90(a, -1),
              7: a[::-1, ::-1].transpose(1, 0, 2), 8: np.rot90(a, 1)}[orientation]
    return np.ascontiguousarray(turned)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_every_reader_sees_an_image_as_a_viewer_shows_it(fmt, tmp_path):
    """A phone stores a portrait photo's pixels sideways with an EXIF Orientation tag. Training crops (on the
    device's canvas and finished in a CPU worker), the evaluation crop and predict's transform all turn it as
    the EXIF standard defines (sizes included: a crop box is drawn on the image as shown); a TIFF, which
    Pillow's decoder turns itself, is turned once. Each reader gives the tagged file what it gives an upright copy
    without a tag (saved again in its format); before, the pixels went in as stored (a wrong turn differs by
    about 100 levels, not 8)."""
    import io

    import numpy as np
    from PIL import features

    from resnet_cli.data import image_files
    from resnet_cli.data.imagefolder import ImageFolderDataset, TrainCrop
    from resnet_cli.data.inputs import InputSpec

    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow was built without WebP")
    spec = InputSpec.of(["a"], 3, 16, 18, (0.5,) * 3, (0.5,) * 3)
    for orientation in range(1, 9):
        data = tagged(quadrants(96, 48), orientation, fmt)
        stored = np.asarray(quadrants(96, 48)) if fmt in ("PNG", "TIFF") else \
            np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # decoded as stored: Pillow turns no JPEG
        shown = Image.fromarray(upright(stored, orientation))  # the reference (Pillow < 10.1 turned a TIFF twice)
        assert image_files.shown_size(image_files.opened(data)) == shown.size == ((48, 96) if orientation >= 5
                                                                                 else (96, 48))
        assert np.array_equal(np.asarray(upright_8bit(image_files.opened(data), "RGB")), np.asarray(shown))
        (tmp_path / "tagged").write_bytes(data)
        shown.save(tmp_path / "upright", fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
        files = [ImageFolderDataset([(tmp_path / name, 0)], False, crop=16, resize=18) for name in ("tagged",
                                                                                               "upright")]
        pairs = [(files[0][0][0], files[1][0][0])]  # the evaluation crop
        pairs.append(tuple(spec.transform(image_files.opened((tmp_path / n).read_bytes()))
                           for n in ("tagged", "upright")))  # predict
        for seed in range(3):  # training: the canvas for the device, and the crop a CPU worker finishes
            train = [ImageFolderDataset(d.samples, True, crop=16, train_crop=TrainCrop("random-resized"))
                     for d in files]
            pairs.append(tuple(d[(0, seed)][0] for d in train))
            pairs.append(tuple(d.finishing_for(torch.device("cpu"))[(0, seed)][0] for d in train))
            assert train[0][(0, seed)][1].tolist() == train[1][(0, seed)][1].tolist()  # the same region's size
        for a, b in pairs:
            assert a.shape == b.shape and (a.float() - b.float()).abs().mean() < 8, (orientation, fmt)


def test_a_damaged_exif_block_leaves_the_pixels_as_stored_without_a_warning():
    """EXIF is untrusted metadata: a block Pillow cannot parse counts as no tag (viewers show the pixels as stored),
    with no warning on stderr per image and per worker, and never refuses an image that decodes."""
    import io
    import warnings

    import numpy as np

    from resnet_cli.data import image_files

    img, buffer = quadrants(40, 20), io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(buffer, "JPEG", quality=95, exif=exif.tobytes()[:-7])  # the orientation entry cut short
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = upright_8bit(image_files.opened(buffer.getvalue()), "RGB")
    assert caught == [] and out.size == (40, 20)
    assert np.abs(np.asarray(out, int) - np.asarray(img, int)).mean() < 8
    assert image_files.orientation(image_files.opened(tagged(img, 9, "JPEG"))) == 1  # no such orientation
