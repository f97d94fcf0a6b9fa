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

        values = np.asarray(img, dtype=np.float64)
        if img.mode == "I" and values.size and values.max() > 65535:  # a 32-bit integer image: its own range
            full = float(values.max())
        gray = Image.fromarray(np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8), "L")
        out = gray.convert(mode)
    return out.transpose(getattr(Image, turn)) if turn else out


def resample(interpolation: str):
    """Pillow's filter for an interpolation's name (config.Interpolation)."""
    from PIL import Image

    return {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]


def resize_shorter(img, size: int, interpolation: str = "bilinear"):
    """A PIL image with its shorter side resized to `size` (bilinear, or as `interpolation` says), the aspect ratio
    kept."""
    w, h = img.size
    if w <= h:
        return img.resize((size, max(1, round(h * size / w))), resample(interpolation))
    return img.resize((max(1, round(w * size / h)), size), resample(interpolation))


def to_tensor(img) -> torch.Tensor:
    """A PIL image (L or RGB) as a uint8 C x H x W tensor."""
    w, h = img.size
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(h, w, len(img.getbands())).permute(2, 0, 1).contiguous()


def crop_to_tensor(img, left: int, top: int, size: int, flip: bool = False) -> torch.Tensor:
    """A `size` x `size` crop at (left, top), mirrored when `flip`, as a uint8 tensor."""
    img = img.crop((left, top, left + size, top + size))
    if flip:
        from PIL import Image

        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return to_tensor(img)


def center_crop(img, h: int, w: int) -> torch.Tensor:
    """The centre `h` x `w` of a PIL image as a uint8 tensor (the evaluation crop)."""
    iw, ih = img.size
    left, top = (iw - w) // 2, (ih - h) // 2
    return to_tensor(img.crop((left, top, left + w, top + h)))


def ten_crops(img, size: int) -> torch.Tensor:
    """The paper's 10-crop test (after AlexNet): the four corners and the centre, each also mirrored, as a
    uint8 10 x C x size x size tensor."""
    from PIL import Image

    w, h = img.size
    corners = [(0, 0), (w - size, 0), (0, h - size), (w - size, h - size), ((w - size) // 2, (h - size) // 2)]
    crops = [to_tensor(img.crop((x, y, x + size, y + size))) for x, y in corners]
    mirrored = img.transpose(Image.FLIP_LEFT_RIGHT)
    crops += [to_tensor(mirrored.crop((w - x - size, y, w - x, y + size))) for x, y in corners]
    return torch.stack(crops)
