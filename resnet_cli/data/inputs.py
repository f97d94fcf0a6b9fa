"""What a model trained on some data expects of an image: the input description, and the evaluation transform.

The data knows it (each dataset class builds its `InputSpec`); training saves it in checkpoints as the
"input" dict, and `export` and `predict` read it back, so an image is prepared as evaluation prepared it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from ..errors import BadInput

# ImageNet statistics: what every torchvision-compatible checkpoint expects, and what image folders use.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_SIZE, IMAGENET_RESIZE = 224, 256  # the paper's evaluation: shorter side 256, centre crop 224
MAX_IMAGE_SIDE = 4096  # pixels: any --input-size or recorded image size past this is refused (memory)
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class InputSpec:
    classes: tuple[str, ...]
    channels: int
    image_size: tuple[int, int]  # height, width
    resize: int  # > 0: shorter side resized to this, then a centre crop to image_size; 0: resized straight to it
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]
    # what each class is, where the data says ("tench, Tinca tinca" for ImageNet's n01440764: an image folder's
    # synset_words.txt, imagefolder.descriptions); () where it does not, "" for a class it leaves out
    descriptions: tuple[str, ...] = ()
    interpolation: str = "bilinear"  # the filter of the evaluation resize (config.Interpolation; timm's: bicubic)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def of(cls, classes, channels: int, image_size, resize: int, mean, std, descriptions=(),
           interpolation: str = "bilinear") -> "InputSpec":
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        return cls(tuple(str(c) for c in classes), int(channels), (int(h), int(w)), int(resize),
                   tuple(float(v) for v in mean), tuple(float(v) for v in std), tuple(str(d) for d in descriptions),
                   str(interpolation))

    def description(self, index: int) -> str:
        return self.descriptions[index] if self.descriptions else ""

    @classmethod
    def imagenet(cls, num_classes: int) -> "InputSpec":
        """torchvision's conventions for a bare ImageNet state_dict, which carries no names: 1000 outputs are
        ImageNet-1k's classes (imagenet_classes: torchvision's and timm's weights, as timm's inference names
        them), any other count numbered."""
        classes, descriptions = named_outputs(num_classes)
        return cls.of(classes, 3, IMAGENET_SIZE, IMAGENET_RESIZE, IMAGENET_MEAN, IMAGENET_STD, descriptions)

    def as_dict(self) -> dict[str, Any]:
        """The checkpoint's "input" entry (plain lists: checkpoints hold no objects)."""
        out = {"classes": list(self.classes), "channels": self.channels, "image_size": list(self.image_size),
               "resize": self.resize, "mean": list(self.mean), "std": list(self.std)}
        if self.descriptions:  # only where there are some: a record without them reads as before
            out["descriptions"] = list(self.descriptions)
        if self.interpolation != "bilinear":  # likewise
            out["interpolation"] = self.interpolation
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        """A checkpoint's "input" entry, checked: it comes from a file, and everything downstream (resizing,
        normalising, naming classes) trusts it."""
        try:
            classes, channels, resize = d["classes"], d["channels"], d["resize"]
            size, mean, std = tuple(d["image_size"]), list(d["mean"]), list(d["std"])
            descriptions = d.get("descriptions") or []
            interpolation = d.get("interpolation", "bilinear")
            ok = (isinstance(classes, (list, tuple)) and 0 < len(classes) <= MAX_CLASSES
                  and all(isinstance(c, str) and len(c) <= 1000 for c in classes)
                  and valid_descriptions(descriptions, len(classes))
                  and channels in (1, 3) and len(mean) == len(std) == channels
                  and all(isinstance(v, (int, float)) and math.isfinite(v) for v in mean + std)
                  and all(v > 0 for v in std) and len(size) == 2
                  and all(isinstance(v, int) and 0 < v <= MAX_IMAGE_SIDE for v in size)
                  and isinstance(resize, int) and 0 <= resize <= MAX_IMAGE_SIDE
                  and interpolation in interpolations())
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise BadInput("the checkpoint's input record (classes, channels, image size, mean/std) is not valid: "
                           "the file is damaged or was not written by resnet-cli")
        return cls.of(classes, channels, size, resize, mean, std, descriptions, interpolation)

    def prepared(self) -> dict[str, Any]:
        """How an image is prepared, for a report: the crop's side, the shorter side before it (0: resized whole
        to image_size) and the resize's filter."""
        return {"image_size": self.image_size[0], "resize": self.resize, "interpolation": self.interpolation}

    def tested_at(self, crop_pct: float = 0.0, image_size: int = 0) -> tuple[int, int]:
        """(crop, resize) of an evaluation at another crop and/or crop_pct (`eval --image-size/--crop-pct`): the
        crop `image_size` (0: this one), the shorter side floor(crop / crop_pct) (timm's rule), with this record's
        crop_pct where none is given."""
        crop = image_size or self.image_size[0]
        if crop_pct:
            return crop, resize_of(crop, crop_pct)
        if image_size and self.resize:
            return crop, max(crop, resize_of(crop, crop_pct_of(self.image_size[0], self.resize)))
        return crop, self.resize

    def for_outputs(self, num_classes: int) -> "InputSpec":
        """This spec for a model with `num_classes` outputs: outputs past the named classes are numbered."""
        extra = tuple(str(i) for i in range(len(self.classes), num_classes))
        return replace(self, classes=self.classes + extra,
                       descriptions=self.descriptions + ("",) * len(extra) if self.descriptions else ())

    def normalizer(self, device):
        """(mean, std) as float32 tensors on `device`."""
        import torch

        return torch.tensor(self.mean, device=device), torch.tensor(self.std, device=device)

    def transform(self, img):
        """The evaluation transform of a PIL image: grayscale or RGB as the model expects, then the shorter side
        to `resize` and a centre crop (image folders), or a resize to `image_size`; a uint8 C x H x W tensor."""
        from .transforms import center_crop, resample, to_tensor, upright_8bit

        img = upright_8bit(img, "L" if self.channels == 1 else "RGB")
        h, w = self.image_size
        if self.resize:
            return center_crop(img, self.resize, h, w, self.interpolation)
        if img.size != (w, h):
            img = img.resize((w, h), resample(self.interpolation))
        return to_tensor(img)


def resize_of(crop: int, crop_pct: float) -> int:
    """The shorter side before a centre crop of `crop` that keeps `crop_pct` of it, as timm computes it."""
    return math.floor(crop / crop_pct)


def crop_pct_of(crop: int, resize: int) -> float:
    """The crop_pct timm reads back as this resize (resize_of): 4 decimals where they do (0.875), more where not."""
    for digits in (4, 6, 8):
        if resize_of(crop, round(crop / resize, digits)) == resize:
            return round(crop / resize, digits)
    return crop / (resize + 0.5)


def interpolations() -> tuple[str, ...]:
    from typing import get_args

    from ..config import Interpolation

    return get_args(Interpolation)


def named_outputs(num_classes: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(classes, descriptions) of a model's outputs when nothing names them: ImageNet-1k's for 1000 outputs,
    else numbered (and no descriptions)."""
    from .imagenet_classes import COUNT, imagenet_1k

    return imagenet_1k() if num_classes == COUNT else (tuple(map(str, range(num_classes))), ())


def valid_descriptions(descriptions: Any, count: int) -> bool:
    """Whether `descriptions` from a file (a checkpoint's input record, a shard index) can describe `count`
    classes: none, or one text (at most 1,000 characters) per class."""
    return isinstance(descriptions, (list, tuple)) and len(descriptions) in (0, count) \
        and all(isinstance(d, str) and len(d) <= 1000 for d in descriptions)


def labelled(name: str, description: str = "") -> str:
    """A class as a person reads it: its description's first name and the class ("tench (n01440764)"), or the
    class alone where it has no description."""
    first = description.split(",")[0].strip()
    return f"{first} ({name})" if first and first != name else name


class DescribedByInput:
    """`classes`, `num_classes` and `channels` of anything that holds an `input` InputSpec: the datasets and
    their loaders."""

    input: InputSpec

    @property
    def classes(self) -> list[str]:
        return list(self.input.classes)

    @property
    def num_classes(self) -> int:
        return self.input.num_classes

    @property
    def channels(self) -> int:
        return self.input.channels
