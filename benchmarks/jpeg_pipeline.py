"""CPU work per training image on ImageNet-like JPEGs: our image-folder path against a hand-written
torchvision-reference pipeline, on the same files, in the same run, on one core (issue #24).

    python benchmarks/jpeg_pipeline.py [--images 2000] [--dir /tmp/jpegs] [--repeats 3] [--json]

The JPEGs are generated (500x375, quality 90, ~90 KB: smooth colour fields with noise, like photos in size and
entropy) and kept in --dir for the next run; nothing is committed. Each pipeline runs over every file in one
process with torch on one thread; the best of --repeats passes is reported, as images/s per core.

- decode: Pillow's decode to RGB, nothing else (the floor of any JPEG pipeline);
- reference: torchvision's ClassificationPresetTrain by hand: decode, RandomResizedCrop(224) (crop, then
  Pillow's antialiased bilinear resize), flip, PILToTensor, ConvertImageDtype(float), Normalize;
- before: this project's path before the device-side resize: decode, resize the whole image to a shorter side
  in [256, 480], crop 224, flip, to uint8;
- ours (scale | random-resized): what a DataLoader worker does now (ImageFolderDataset.__getitem__): decode
  (DCT-scaled when the region allows), cut out the region, place it on a canvas; the resize and flip are the
  device's (`device resize` reports that part, timed here on the CPU for scale).
- ours from shards (--max-size 320): the same files through `resnet data convert --max-size 320` (written once,
  not timed), then what a shard worker does: read a shard and check its sha256, then the random-resized path
  on each image.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RN50_H100_IMG_S = 5_500  # our RN50-v1.5 bf16 training step on one H100 (BENCHMARKS.md, 2026-11-26)


def make_jpegs(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / "c" / f"{i:05d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        path.parent.mkdir(exist_ok=True)
        low = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(low).resize((500, 375), Image.BICUBIC)).astype(np.int16)
        img = img + rng.integers(-25, 25, img.shape)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return paths


def rrc_box(w, h, r):
    from resnet_cli.data.crops import random_resized_box

    return random_resized_box(w, h, r, (0.08, 1.0), (3 / 4, 4 / 3))


MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def decode(path, r):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def reference(path, r):
    from PIL import Image

    with Image.open(path) as im:
        img = im.convert("RGB")
    x, y, cw, ch = rrc_box(*img.size, r)
    img = img.crop((x, y, x + cw, y + ch)).resize((224, 224), Image.BILINEAR)
    if r.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div_(255)
    return t.sub_(MEAN).div_(STD)


def before(path, r):
    from PIL import Image

    from resnet_cli.data.transforms import shorter_side_size, to_tensor

    with Image.open(path) as im:
        img = im.convert("RGB")
        img = img.resize(shorter_side_size(*img.size, r.randint(256, 480)), Image.BILINEAR)
    w, h = img.size
    x, y = r.randint(0, w - 224), r.randint(0, h - 224)
    img = img.crop((x, y, x + 224, y + 224))
    if r.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return to_tensor(img)


def ours(mode: str, cpu_device: bool = False):
    """What a worker does; `cpu_device`: training on the CPU, everything the CPU does for a batch: the worker's
    decode, region, resize and flip (crops.finished_crop), then the batch's conversion to normalised floats (the
    device's share, model_batch's to_float), so that it compares with the reference's whole pipeline."""
    from resnet_cli.data.imagefolder import ImageFolderDataset, TrainCrop

    def run(paths):
        ds = ImageFolderDataset([(p, 0) for p in paths], True, crop=224, train_crop=TrainCrop(mode))
        ds = ds.finishing_for(torch.device("cpu")) if cpu_device else ds
        batch = []
        for i in range(len(ds)):
            batch.append(ds[i][0])
            if cpu_device and (len(batch) == 64 or i == len(ds) - 1):
                normalised(torch.stack(batch))
                batch = []
    return run


def normalised(x: torch.Tensor) -> torch.Tensor:
    from resnet_cli.data.augment import to_float

    return to_float(x, MEAN.view(-1), STD.view(-1))


def from_shards(folder: Path, paths, cpu_device: bool = False):
    """The worker's share from `convert --max-size 320` shards of these files (converted once, untimed);
    `cpu_device`: with the resize, flip and normalisation a CPU device adds (as `ours`)."""
    from resnet_cli.data.imagefolder import ImageFolderDataset, TrainCrop
    from resnet_cli.data.shard_convert import convert
    from resnet_cli.data.shard_source import Source, read_index
    from resnet_cli.data.shards import read_shard

    out = folder / "shards-320"
    if not (out / "index.json").exists():
        (folder / "as-folder" / "train").mkdir(parents=True, exist_ok=True)
        link = folder / "as-folder" / "train" / "c"
        if not link.exists():
            link.symlink_to(paths[0].parent)
        convert(folder / "as-folder", out, shard_images=500, max_size=320)
    source = Source(str(out))
    index = read_index(source)
    ds = ImageFolderDataset([], True, crop=224, train_crop=TrainCrop("random-resized"))
    ds = ds.finishing_for(torch.device("cpu")) if cpu_device else ds

    def run(_paths):
        from PIL import Image

        for shard in index["splits"]["train"]["shards"]:
            batch = []
            for i, (key, image, label) in enumerate(read_shard(source, shard, 1)):
                batch.append(ds.prepare(lambda: Image.open(io.BytesIO(image)), i, label, key)[0])
                if cpu_device and len(batch) == 64:
                    normalised(torch.stack(batch))
                    batch = []
            if cpu_device and batch:
                normalised(torch.stack(batch))
    return run


def per_file(fn):
    def run(paths):
        r = random.Random(0)
        for p in paths:
            fn(p, r)
    return run


def device_resize_cpu(paths):
    """The device's share, timed on this CPU for scale: resize_crops over batches of 64 canvases."""
    from resnet_cli.data.crops import resize_crops

    canvases = torch.randint(0, 256, (64, 3, 336, 336), dtype=torch.uint8)
    sizes = torch.tensor([[300, 280, i % 2] for i in range(64)])
    for _ in range(math.ceil(len(paths) / 64)):
        resize_crops(canvases, sizes, 224)


def draft_check(folder: Path, n: int, repeats: int) -> None:
    """Draft decoding (DCT scaling) on or off, on large photos (2000x1500, where a region is often twice the
    canvas): the worker's rate, and how far the crops the device makes from it differ (mean |difference| in
    pixel levels, PSNR) from full decodes with the same regions."""
    from PIL import Image

    from resnet_cli.data import crops
    from resnet_cli.data.imagefolder import ImageFolderDataset, TrainCrop

    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        path = folder / "large" / f"{i:04d}.jpg"
        paths.append(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            low = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
            img = np.asarray(Image.fromarray(low).resize((2000, 1500), Image.BICUBIC)).astype(np.int16)
            Image.fromarray((img + rng.integers(-20, 20, img.shape)).clip(0, 255).astype(np.uint8)).save(path, quality=90)
    ds = ImageFolderDataset([(p, 0) for p in paths], True, crop=224, train_crop=TrainCrop("random-resized"))
    rates, outs = {}, {}
    for draft in (True, False):
        crops.DRAFT = draft
        best = 0.0
        for _ in range(repeats):
            t0 = time.perf_counter()
            items = [ds[i] for i in range(n)]
            best = max(best, n / (time.perf_counter() - t0))
        rates[draft] = best
        outs[draft] = crops.resize_crops(torch.stack([c for c, _, _ in items]), torch.stack([s for _, s, _ in items]),
                                         224).float()
    crops.DRAFT = True
    refs = []  # Pillow's antialiased resize of the full decode, same region and flip: the quality reference
    for i, path in enumerate(paths):
        rng = random.Random(ds.epoch_seed * 1_000_003 + i)
        with Image.open(path) as im:
            x, y, cw, ch = ds.train_crop.box(*im.size, rng, 224)
            img = im.convert("RGB").resize((224, 224), Image.BILINEAR, box=(x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        refs.append(torch.from_numpy(np.array(img)).permute(2, 0, 1).float())
    ref = torch.stack(refs)

    def psnr(a):
        return 10 * math.log10(255 ** 2 / float(((a - ref) ** 2).mean()))

    print(f"{n} JPEGs 2000x1500 q90, random-resized 224, one core: draft {rates[True]:.0f} img/s, full decode "
          f"{rates[False]:.0f} img/s ({rates[True] / rates[False]:.2f}x). Against Pillow's antialiased resize of the "
          f"full decode: draft {(outs[True] - ref).abs().mean():.2f} levels mean |difference|, PSNR "
          f"{psnr(outs[True]):.1f} dB; full decode {(outs[False] - ref).abs().mean():.2f} levels, PSNR "
          f"{psnr(outs[False]):.1f} dB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/resnet-cli-jpegs"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--draft", action="store_true", help="only the draft check on 2000x1500 photos")
    ap.add_argument("--make-folder", type=Path, help="only write the JPEGs as an image folder there (train/ with "
                    "4 classes, the last fifth as val/; hard links) for `resnet data bench`, and exit")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.make_folder:
        paths = make_jpegs(a.dir, a.images)
        for i, path in enumerate(paths):
            split = "val" if i >= len(paths) * 4 // 5 else "train"
            target = a.make_folder / split / f"c{i % 4}" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.link(path, target)
        print(f"{a.make_folder}: {len(paths)} images")
        return
    if a.draft:
        draft_check(a.dir, min(a.images, 200), a.repeats)
        return
    paths = make_jpegs(a.dir, a.images)
    size_kb = sum(p.stat().st_size for p in paths) / len(paths) / 1024
    pipelines = {"decode": per_file(decode), "reference": per_file(reference), "before": per_file(before),
                 "ours (scale)": ours("scale"), "ours (random-resized)": ours("random-resized"),
                 "ours from shards --max-size 320": from_shards(a.dir, paths),
                 "device resize (on this CPU)": device_resize_cpu,
                 "CPU device: folder, all": ours("random-resized", cpu_device=True),
                 "CPU device: shards 320, all": from_shards(a.dir, paths, cpu_device=True)}
    rates = {}
    for name, run in pipelines.items():
        best = 0.0
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            run(paths)
            best = max(best, len(paths) / (time.perf_counter() - t0))
        rates[name] = best
    ref = rates["reference"]
    import PIL

    out = {"images": len(paths), "mean_kb": round(size_kb, 1), "pillow": PIL.__version__, "torch": torch.__version__,
           "cpu": os.uname().machine, "img_per_s_per_core": {k: round(v) for k, v in rates.items()},
           "vs_reference": {k: round(v / ref, 2) for k, v in rates.items()},
           "cores_for_rn50_h100": {k: round(RN50_H100_IMG_S / rates[k], 1) for k in
                                   ("reference", "before", "ours (scale)", "ours (random-resized)",
                                    "ours from shards --max-size 320")}}
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{len(paths)} JPEGs, 500x375 q90, {size_kb:.0f} KB mean; Pillow {PIL.__version__}, torch {torch.__version__}, "
          "one core")
    print(f"{'pipeline':30s} {'img/s/core':>10s} {'x ref':>6s} {'cores for 5,500 img/s':>22s}")
    for k, v in rates.items():
        cores = f"{RN50_H100_IMG_S / v:.1f}" if k in out["cores_for_rn50_h100"] else ""
        print(f"{k:30s} {v:10.0f} {v / ref:6.2f} {cores:>22s}")


if __name__ == "__main__":
    main()
