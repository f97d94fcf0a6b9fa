"""Image folders' training crops, split between the CPU and the device.

Measured (benchmarks/jpeg_pipeline.py, BENCHMARKS.md): on ImageNet-sized JPEGs, resizing on the CPU costs about
as much as decoding. So a worker only decodes (with libjpeg's DCT scaling, `draft`, when the crop is at least
twice the canvas), cuts out the crop's region, shrinks it by an integer factor (a box filter) when it is still
larger than the canvas, and places it in the top-left corner of a fixed canvas. The device then resizes the
whole batch to the crop size, mirrored where the flip fell, in one `grid_sample` (bilinear, half-pixel centres).

Two ways to choose the region (`data.crop`), both drawn from the sample's own seeded generator:
- `scale`: the paper's scale augmentation: the shorter side resized to a random length in `scale` (256-480 for a
  224 crop), then a random crop, i.e. a square of side `crop * shorter / length` in the original image;
- `random-resized`: torchvision's RandomResizedCrop: an area fraction in `crop_scale` (0.08-1) and an aspect ratio
  in `crop_ratio` (3/4-4/3, drawn log-uniformly), ten tries, then the centre crop at the nearest ratio.
"""

from __future__ import annotations

import math
import random

import torch

CANVAS_FACTOR = 1.5  # canvas side / crop side: what reaches the device is at most 1.5x the crop (less to copy
#                      and transfer), so the device's bilinear resize never shrinks by more than 1.5


DRAFT = True  # libjpeg's DCT scaling for regions at least twice the canvas (benchmarks/jpeg_pipeline.py --draft
#               measures it against full decodes: its speed, and the difference in the resized crops)


def canvas_side(crop: int) -> int:
    return math.ceil(CANVAS_FACTOR * crop)


def scale_box(w: int, h: int, rng: random.Random, crop: int, scale: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the paper's scale augmentation in original pixels: the shorter side resized to
    a length drawn from `scale`, then a random `crop` square."""
    side = min(w, h, max(1, round(crop * min(w, h) / rng.randint(*scale))))
    return rng.randint(0, w - side), rng.randint(0, h - side), side, side


def random_resized_box(w: int, h: int, rng: random.Random, scale: tuple[float, float],
                       ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """(left, top, width, height) as torchvision's RandomResizedCrop.get_params draws it."""
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, w - cw), rng.randint(0, h - ch), cw, ch
    in_ratio = w / h  # the fallback: a centre crop at the ratio nearest the image's
    if in_ratio < min(ratio):
        cw, ch = w, round(w / min(ratio))
    elif in_ratio > max(ratio):
        cw, ch = round(h * max(ratio)), h
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def _decoded(open_image, need: int, to_rgb):
    """(the image `open_image()` returns, decoded by `to_rgb`, its horizontal and vertical scales): libjpeg's DCT
    scaling (1/2, 1/4, 1/8) does up to `need` of a shrink the caller will make anyway, when it is at least 2. The
    two scales differ where a side is not a multiple of the factor (526 x 319 at 1/8 decodes to 66 x 40). Sizes
    and scales are the image's as shown (`to_rgb` turns it upright: image_files.shown_size)."""
    from .image_files import shown_size

    with open_image() as im:
        full_w, full_h = shown_size(im)
        if DRAFT and need >= 2 and im.format == "JPEG":
            im.draft("RGB", (max(1, im.size[0] // need), max(1, im.size[1] // need)))
        img = to_rgb(im)
    return img, img.size[0] / full_w, img.size[1] / full_h


def decode_region(open_image, box: tuple[int, int, int, int], canvas: int, to_rgb,
                  times: dict[str, float] | None = None) -> tuple[torch.Tensor, int, int]:
    """Decode `box` of the image `open_image()` returns (a PIL image, not yet loaded), shrunk by integer factors
    until it fits `canvas`, into the top-left of a uint8 3 x canvas x canvas tensor; (canvas, height, width).
    `to_rgb(img)` gives the decoded image upright in 8-bit RGB (transforms.upright_8bit), and `box` is in the
    coordinates of the image as shown. `times`, when given, adds the seconds spent decoding and cropping
    (`resnet data bench`)."""
    import time

    import numpy as np

    t0 = time.perf_counter()
    left, top, cw, ch = box
    img, fx, fy = _decoded(open_image, max(1, max(cw, ch) // canvas), to_rgb)  # the shrink that fits the region
    t1 = time.perf_counter()
    x0, y0 = min(math.floor(left * fx), img.size[0] - 1), min(math.floor(top * fy), img.size[1] - 1)
    region = img.crop((x0, y0, min(img.size[0], max(x0 + 1, round((left + cw) * fx))),
                       min(img.size[1], max(y0 + 1, round((top + ch) * fy)))))
    k = math.ceil(max(region.size) / canvas)
    if k > 1:
        region = region.reduce(k)
    w, h = region.size
    out = np.zeros((canvas, canvas, 3), dtype=np.uint8)
    out[:h, :w] = np.asarray(region)
    if w < canvas:  # the last column and row once more: bilinear samples just past the edge read the edge
        out[:h, w] = out[:h, w - 1]
    if h < canvas:
        out[h, :w + 1] = out[h - 1, :w + 1]
    result = torch.from_numpy(out).permute(2, 0, 1)
    if times is not None:
        times["decode"] = times.get("decode", 0.0) + t1 - t0
        times["crop"] = times.get("crop", 0.0) + time.perf_counter() - t1
    return result, h, w


def finished_crop(open_image, box: tuple[int, int, int, int], crop: int, flip: int, to_rgb,
                  times: dict[str, float] | None = None) -> torch.Tensor:
    """What `decode_region` and the device's `resize_crops` do together, in the worker, where the device is the
    CPU itself (nothing to offload, so no canvas): decode `box` (DCT-scaled by libjpeg's draft when the region
    is at least twice the crop), resize it to `crop` x `crop` in one antialiased bilinear Pillow resize (as
    torchvision's RandomResizedCrop on PIL images), mirror it where the flip fell; uint8 3 x crop x crop."""
    import time

    import numpy as np
    from PIL import Image

    t0 = time.perf_counter()
    left, top, cw, ch = box
    img, fx, fy = _decoded(open_image, max(1, min(cw, ch) // crop), to_rgb)  # the region stays >= the crop
    t1 = time.perf_counter()
    w, h = img.size
    img = img.resize((crop, crop), Image.BILINEAR, box=(left * fx, top * fy, min(w, (left + cw) * fx),
                                                        min(h, (top + ch) * fy)))
    if flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    out = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    if times is not None:
        times["decode"] = times.get("decode", 0.0) + t1 - t0
        times["crop"] = times.get("crop", 0.0) + time.perf_counter() - t1
    return out


def resize_crops(canvases: torch.Tensor, sizes: torch.Tensor, out: int) -> torch.Tensor:
    """A batch of canvases (uint8 B x 3 x C x C, each image in its top-left `sizes[i] = (h, w, flip)`) resized to
    uint8 B x 3 x out x out on their device: one bilinear grid_sample, mirrored where flip is 1."""
    import torch.nn.functional as F

    n, c = canvases.shape[:2]
    side = canvases.shape[-1]
    h, w, flip = sizes.to(torch.float32).unbind(1)
    theta = torch.zeros(n, 2, 3, device=canvases.device)
    theta[:, 0, 0] = (w / side) * (1 - 2 * flip)  # x: output [-1, 1] onto the content's [-1, -1 + 2w/C]
    theta[:, 0, 2] = w / side - 1
    theta[:, 1, 1] = h / side
    theta[:, 1, 2] = h / side - 1
    grid = F.affine_grid(theta, [n, c, out, out], align_corners=False)
    x = F.grid_sample(canvases.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)
