"""Per-image transforms on PIL images (decoded in worker processes): resize, crop, to a uint8 tensor.

Image-folder training and evaluation, and `predict`'s evaluation transform (`InputSpec.transform`), all
prepare an image with these, so what predict sees is what evaluation saw.
"""

from __future__ import annotations

import torch


HIGH_BIT_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


# How Pillow turns decoded pixels upright for each EXIF orientation (2-8; 1 leaves them as stored).
UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
           7: "TRANSVERSE", 8: "ROTATE_90"}


def upright_8bit(img, mode: str):
    """An opened PIL image decoded for a model: turned as a viewer shows it (its EXIF orientation, read before
    decoding: image_files.orientation), in 8-bit `mode` (L or RGB). High-bit-depth integer images (16-bit PNGs
    open as I;16, or as I) are scaled to 0-255, where PIL's own convert would clip every value above 255 to
    white."""
    from PIL import Image

    from .image_files import orientation

    turn = UPRIGHT.get(orientation(img))
    full = HIGH_BIT_MODES.get(img.mode)
    if full is None:
        out = img.convert(mode)
    else:
        import numpy as np

        values = np.asarray(img)  # the decoded pixels (uint16 or int32), not copied
        if img.mode == "I" and values.size and values.max() > 65535:  # a 32-bit integer image: its own range
            full = float(values.max())
        # scaled in place in one float32 array: 7 bytes a pixel at the peak, traced, where float64 temporaries
        # took 24 (4.3 GB for the largest image Pillow decodes); every 16-bit value maps as in float64 (tested)
        scaled = np.multiply(values, np.float32(255.0 / full), dtype=np.float32)
        np.clip(np.rint(scaled, out=scaled), 0, 255, out=scaled)
        gray = Image.fromarray(scaled.astype(np.uint8), "L")
        out = gray.convert(mode)
    return out.transpose(getattr(Image, turn)) if turn else out


def resample(interpolation: str):
    """Pillow's filter for an interpolation's name (config.Interpolation)."""
    from PIL import Image

    return {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]


MAX_WHOLE_ASPECT = 32  # an image whose sides differ more than this is never resized whole (see `resized_regions`)


def shorter_side_size(w: int, h: int, size: int) -> tuple[int, int]:
    """(width, height) of a `w` x `h` image with its shorter side resized to `size`, the aspect ratio kept."""
    if w <= h:
        return size, max(1, round(h * size / w))
    return max(1, round(w * size / h)), size


def resized_regions(img, size: int, boxes, interpolation: str = "bilinear") -> list:
    """The regions `boxes` ((left, top, right, bottom), in pixels of the image resized so that its shorter side is
    `size`) of the PIL image `img` so resized (bilinear, or as `interpolation` says): an evaluation's centre crop,
    or its ten crops.

    Resized whole, an image of extreme aspect ratio costs memory without bound: a 200-byte PNG of 40,000 x 1
    pixels resized to a shorter side of 256 is 10,240,000 x 256 pixels, 7.3 GiB, from any image folder, shard or
    URL given to `predict`. Where the resized image's longer side would be over MAX_WHOLE_ASPECT times its shorter
    one, only the regions are resized, each from its own part of the image (Pillow's resize with a source box, the
    same scale), so no more than the crops is ever allocated; their pixels can differ by 1 from a whole resize's.
    Anything of a region past the resized image is black, as Pillow's crop leaves it."""
    from PIL import Image

    w, h = img.size
    rw, rh = shorter_side_size(w, h, size)
    if max(rw, rh) <= MAX_WHOLE_ASPECT * size:
        resized = img.resize((rw, rh), resample(interpolation))
        return [resized.crop(box) for box in boxes]
    sx, sy = w / rw, h / rh
    out = []
    for left, top, right, bottom in boxes:
        region = Image.new(img.mode, (right - left, bottom - top))
        x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, rw), min(bottom, rh)
        if x1 > x0 and y1 > y0:
            part = img.resize((x1 - x0, y1 - y0), resample(interpolation), box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
            region.paste(part, (x0 - left, y0 - top))
        out.append(region)
    return out


def centre_box(rw: int, rh: int, h: int, w: int) -> tuple[int, int, int, int]:
    """The centre `h` x `w` box of an `rw` x `rh` image (left, top, right, bottom), as Pillow crops it."""
    left, top = (rw - w) // 2, (rh - h) // 2
    return left, top, left + w, top + h


def to_tensor(img) -> torch.Tensor:
    """A PIL image (L or RGB) as a uint8 C x H x W tensor."""
    w, h = img.size
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(h, w, len(img.getbands())).permute(2, 0, 1).contiguous()


def center_crop(img, resize: int, h: int, w: int, interpolation: str = "bilinear") -> torch.Tensor:
    """The evaluation crop: the shorter side of the PIL image `img` resized to `resize` (`interpolation`), then
    its centre `h` x `w`, as a uint8 tensor (bounded in memory whatever the image's shape: `resized_regions`)."""
    box = centre_box(*shorter_side_size(*img.size, resize), h, w)
    return to_tensor(resized_regions(img, resize, [box], interpolation)[0])


def ten_crops(img, resize: int, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """The paper's 10-crop test (after AlexNet) of the PIL image `img` with its shorter side resized to `resize`:
    the four corners and the centre, each also mirrored, as a uint8 10 x C x size x size tensor."""
    from PIL import Image

    w, h = shorter_side_size(*img.size, resize)
    corners = [(0, 0), (w - size, 0), (0, h - size), (w - size, h - size), ((w - size) // 2, (h - size) // 2)]
    crops = resized_regions(img, resize, [(x, y, x + size, y + size) for x, y in corners], interpolation)
    return torch.stack([to_tensor(c) for c in crops] + [to_tensor(c.transpose(Image.FLIP_LEFT_RIGHT)) for c in crops])


def whole_views(img, scales, interpolation: str = "bilinear") -> tuple[torch.Tensor, ...]:
    """The paper's fully-convolutional multi-scale test of the PIL image `img` (section 3.4): per scale, the whole
    image with its shorter side resized to it, and its mirror, as a uint8 2 x C x H x W tensor (H and W follow the
    image's shape). An image with sides more than MAX_WHOLE_ASPECT apart is seen at its centre MAX_WHOLE_ASPECT:1
    (`resized_regions`: memory stays bounded whatever the image)."""
    from PIL import Image

    out = []
    for size in scales:
        rw, rh = shorter_side_size(*img.size, size)
        w, h = min(rw, MAX_WHOLE_ASPECT * size), min(rh, MAX_WHOLE_ASPECT * size)
        view = resized_regions(img, size, [centre_box(rw, rh, h, w)], interpolation)[0]
        out.append(torch.stack([to_tensor(view), to_tensor(view.transpose(Image.FLIP_LEFT_RIGHT))]))
    return tuple(out)
