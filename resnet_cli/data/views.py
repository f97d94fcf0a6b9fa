"""What an evaluation sees of each image: the centre crop, the paper's 10 crops, or its fully-convolutional
multi-scale test (`eval --ten-crop`, `eval --scales`); transforms.py makes the pixels of each."""

from __future__ import annotations

from dataclasses import dataclass

PAPER_SCALES = (224, 256, 384, 480, 640)  # section 3.4: "the shorter side is in {224, 256, 384, 480, 640}"
MAX_SCALES = 8  # eval --scales: each is a forward pass of every image, twice


@dataclass(frozen=True)
class Views:
    """What an evaluation sees of each image (`eval --ten-crop`, `--scales`), probabilities averaged over the
    views: the centre crop (the default; one view); the paper's 10-crop test (`ten_crop`); or its
    fully-convolutional multi-scale test (`scales`, after VGG's dense evaluation: the whole image at each shorter
    side, and its mirror)."""

    ten_crop: bool = False
    scales: tuple[int, ...] = ()

    @property
    def per_image(self) -> int:
        return 10 if self.ten_crop else 2 * len(self.scales) if self.scales else 1

    def label(self) -> str:
        """How a report names them ("" for the centre crop)."""
        if self.scales:
            return f"whole at {'/'.join(map(str, self.scales))}, mirrored"
        return "10-crop" if self.ten_crop else ""

    @property
    def per_pass(self) -> int:
        """Views of one image in one forward pass: all of them, or, for whole images, its two at one scale."""
        return 2 if self.scales else self.per_image

    def images_per_batch(self, batch_size: int) -> int:
        """Images in a batch of at most `batch_size` views: whole images differ in shape, so one a batch."""
        return 1 if self.scales else max(1, batch_size // self.per_image)


def parse_scales(text: str) -> tuple[int, ...]:
    """`eval --scales`: "paper" (PAPER_SCALES) or distinct shorter sides, comma-separated ("224,256,384"); a
    ValueError saying what is wrong."""
    from ..gate import MAX_IMAGE_SIZE

    if text.strip().lower() == "paper":
        return PAPER_SCALES
    try:
        scales = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--scales takes shorter sides in pixels, comma-separated (224,256,384,480,640), or "
                         f"'paper'; got {text!r}") from None
    if not 0 < len(scales) <= MAX_SCALES or len(set(scales)) != len(scales) \
            or not all(0 < s <= MAX_IMAGE_SIZE for s in scales):
        raise ValueError(f"--scales takes 1-{MAX_SCALES} distinct sides of 1-{MAX_IMAGE_SIZE} pixels, got {text!r}")
    return scales
