"""Does the device's crop resize need antialiasing? (#34 item 6)

torchvision's RandomResizedCrop resizes with antialiasing (on PIL images always, on tensors with antialias=True).
Our GPU path splits the work: the worker decodes the crop's region and shrinks it by an integer factor (a box
filter: `Image.reduce`) until it fits a canvas of 1.5x the crop, and the device resizes the batch to the crop in
one bilinear `grid_sample`, which does not antialias. So the device never shrinks by more than 1.5x. This measures
what that costs in fidelity and what an antialiased device resize would cost in time:

- reference: torchvision's crop on a PIL image (full decode, the region resized to the crop by Pillow's
  antialiased bilinear filter), which `finished_crop` (the CPU-device path) also does;
- ours: `decode_region` (with libjpeg's DCT scaling, as in training) then `resize_crops` (one grid_sample);
- ours, antialiased: the same canvases, each resized by `F.interpolate(..., antialias=True)` (one call per image:
  the images have different sizes, so no single batched call does it).

PSNR of each against the reference over random-resized boxes (torchvision's scale 0.08-1, ratio 3/4-4/3) on a
photograph (matplotlib's sample `grace_hopper.jpg`, 512x600, and a 2x upscale of it, 1024x1200), and the device
time of a batch of 64 crops of 224 px for both resizes on this machine's device.

    python benchmarks/antialias.py [--boxes 200] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from resnet_cli.data.crops import CANVAS_FACTOR, decode_region, random_resized_box, resize_crops


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def photo(scale: int) -> bytes:
    import matplotlib

    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    img = Image.open(path).convert("RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--boxes", type=int, default=200)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    crop, canvas, dev = args.crop, round(args.crop * CANVAS_FACTOR), torch.device(args.device)
    print(f"torch {torch.__version__}, device {dev}, crop {crop}, canvas {canvas}, {args.boxes} boxes per image")
    for scale in (1, 2):
        raw = photo(scale)
        w, h = Image.open(io.BytesIO(raw)).size
        rng = random.Random(0)
        plain, anti, shrink = [], [], []
        for _ in range(args.boxes):
            box = random_resized_box(w, h, rng, (0.08, 1.0), (3 / 4, 4 / 3))
            left, top, cw, ch = box
            ref_img = Image.open(io.BytesIO(raw)).convert("RGB").resize(
                (crop, crop), Image.BILINEAR, box=(left, top, left + cw, top + ch))
            ref = torch.from_numpy(np.asarray(ref_img).copy()).permute(2, 0, 1)
            canv, rh, rw = decode_region(lambda: Image.open(io.BytesIO(raw)), box, canvas,
                                         lambda im: im.convert("RGB"))
            ours = resize_crops(canv[None].to(dev), torch.tensor([[rh, rw, 0]], device=dev), crop)[0].cpu()
            region = canv[:, :rh, :rw][None].float().to(dev)
            aa = F.interpolate(region, size=(crop, crop), mode="bilinear", antialias=True, align_corners=False)
            aa = aa.round().clamp(0, 255).to(torch.uint8)[0].cpu()
            plain.append(psnr(ours, ref))
            anti.append(psnr(aa, ref))
            shrink.append(max(rw, rh) / crop)
        print(f"photo {w}x{h}: PSNR vs torchvision's antialiased crop, median (10th percentile): "
              f"grid_sample {np.median(plain):.2f} dB ({np.percentile(plain, 10):.2f}), "
              f"antialiased interpolate {np.median(anti):.2f} dB ({np.percentile(anti, 10):.2f}); "
              f"device shrink factor median {np.median(shrink):.2f}, max {max(shrink):.2f}")
    # device time of the two resizes for a batch of 64 canvases
    n = 64
    canvases = torch.randint(0, 256, (n, 3, canvas, canvas), dtype=torch.uint8, device=dev)
    sizes = torch.tensor([[random.randint(crop // 2, canvas), random.randint(crop // 2, canvas), i % 2]
                          for i in range(n)], device=dev)

    def batched():
        return resize_crops(canvases, sizes, crop)

    def per_image():
        out = torch.empty(n, 3, crop, crop, dtype=torch.uint8, device=dev)
        for i, (rh, rw, _) in enumerate(sizes.tolist()):
            out[i] = F.interpolate(canvases[i:i + 1, :, :rh, :rw].float(), size=(crop, crop), mode="bilinear",
                                   antialias=True).round_().clamp_(0, 255)[0]
        return out

    for name, fn in (("grid_sample, batched", batched), ("interpolate antialias, per image", per_image)):
        for _ in range(3):
            fn()
        times = []
        for _ in range(7):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        print(f"{name}: {1000 * np.median(times):.2f} ms per batch of {n} (median of 7)")


if __name__ == "__main__":
    main()
