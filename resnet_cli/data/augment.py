"""Batched augmentation as pure tensor functions: no per-sample Python, any device.

Each random function takes a `torch.Generator` so a seed fixes the result, and
works on a whole N x C x H x W batch at once (after airbench).
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

import torch


def to_float(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float, normalised per channel; `mean`/`std` are in [0, 1] units."""
    x = x.float().div_(255.0)
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by `padding` on every side, then crop each image back to H x W at a random offset."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chan, rows, cols]


def augment(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's CIFAR augmentation on a uint8 batch: pad-and-crop, then flip."""
    x = random_crop(x, padding, generator)
    return random_flip(x, generator) if flip else x


@dataclass(frozen=True)
class TrainAugment:
    """A run's training augmentation, applied by the loaders to each batch (uint8 on the device):
    pad-and-crop and flip (the paper's), RandAugment/TrivialAugment, then normalisation, random erasing,
    and mixup/cutmix, which turn the labels into soft targets. Everything random comes from the batch's
    seed, so a resumed run replays it exactly. Image folders crop and flip while decoding, so they pass
    padding 0 and flip False here."""

    padding: int = 0
    flip: bool = False
    policy: tuple | None = None  # config.parse_randaugment: ("rand", N, M), ("trivial", 1, 0) or ("timm", ...)
    erasing: float = 0.0
    erasing_mode: str = "pixel"  # data.random_erasing_mode: "pixel" (N(0, 1) noise) or "const" (zeros)
    mixup: float = 0.0
    cutmix: float = 0.0
    num_classes: int = 0  # the model's outputs: the width of soft targets

    @classmethod
    def from_config(cls, cfg, num_classes: int, decoded_with_crop: bool = False) -> "TrainAugment":
        from ..config import parse_randaugment

        return cls(padding=0 if decoded_with_crop else cfg.crop_padding, flip=cfg.flip and not decoded_with_crop,
                   policy=parse_randaugment(cfg.randaugment), erasing=cfg.random_erasing,
                   erasing_mode=cfg.random_erasing_mode, mixup=cfg.mixup, cutmix=cfg.cutmix, num_classes=num_classes)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator(device=x.device).manual_seed(seed)
        x = augment(x, self.padding, self.flip, g)
        if self.policy is not None and self.policy[0] == "timm":
            x = timm_rand_augment(x, *self.policy[1:], generator=g, fill=(mean * 255).round())
        elif self.policy is not None:
            x = auto_augment(x, *self.policy, generator=g)
        x = random_erasing(to_float(x, mean, std), self.erasing, g, mode=self.erasing_mode)
        mix = draw_mix(random.Random(seed), self.mixup, self.cutmix, x.shape[-2], x.shape[-1])
        if mix is not None:
            x, y = mix_batch(x, y, self.num_classes, mix)
        return x, y


# ---------------------------------------------------------------- random erasing

def random_erasing(x: torch.Tensor, p: float, generator: torch.Generator | None = None,
                   scale: tuple[float, float] = (0.02, 1 / 3), ratio: tuple[float, float] = (0.3, 3.3),
                   mode: str = "pixel") -> torch.Tensor:
    """Zhong et al. (2017) on a normalised float batch: with probability `p` per image, one rectangle of a
    random area (`scale` of the image) and aspect ratio (`ratio`, log-uniform) is replaced by N(0, 1) noise
    (`mode` "pixel", timm's default) or by zeros ("const": the dataset mean after normalisation, torchvision's
    RandomErasing default, value=0). torchvision retries a rectangle that does not fit; here its sides are
    clipped to the image instead, so it always fits."""
    if p <= 0:
        return x
    n, c, h, w = x.shape
    dev = x.device
    area = torch.empty(n, device=dev).uniform_(scale[0], scale[1], generator=generator) * (h * w)
    aspect = torch.empty(n, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator).exp()
    eh = (area * aspect).sqrt().round().clamp(1, h)
    ew = (area / aspect).sqrt().round().clamp(1, w)
    top = (torch.rand(n, device=dev, generator=generator) * (h - eh + 1)).floor()
    left = (torch.rand(n, device=dev, generator=generator) * (w - ew + 1)).floor()
    apply = torch.rand(n, device=dev, generator=generator) < p
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    mask = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1)) & (cols >= left.view(n, 1, 1))
            & (cols < (left + ew).view(n, 1, 1)) & apply.view(n, 1, 1))
    if mode == "const":
        return x.masked_fill(mask.unsqueeze(1), 0.0)
    noise = torch.randn(x.shape, device=dev, dtype=x.dtype, generator=generator)
    return torch.where(mask.unsqueeze(1), noise, x)


# ---------------------------------------------------------------- mixup and cutmix

@dataclass(frozen=True)
class Mix:
    """One batch's mixing, drawn on the host (a few numbers: no device sync): images are blended with the
    batch in reverse order, `lam` of their own. `box` (top, bottom, left, right): cutmix pastes that
    rectangle from the partner instead, and `lam` is the area kept."""

    lam: float
    box: tuple[int, int, int, int] | None = None


def draw_mix(rng: random.Random, mixup: float, cutmix: float, h: int, w: int) -> Mix | None:
    """timm's per-batch rule: mixup (lambda ~ Beta(a, a)) or cutmix (box area 1 - lambda); with both on,
    each batch picks one at random. None when both are off."""
    if mixup <= 0 and cutmix <= 0:
        return None
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    lam = rng.betavariate(cutmix, cutmix) if use_cutmix else rng.betavariate(mixup, mixup)
    if not use_cutmix:
        return Mix(lam)
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = rng.randrange(h), rng.randrange(w)
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    return Mix(1 - (bottom - top) * (right - left) / (h * w), (top, bottom, left, right))


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, mix: Mix) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a float batch with itself reversed; labels become soft targets (N x num_classes) in the same
    proportion, for a cross-entropy that takes probabilities."""
    partner = x.flip(0)
    if mix.box is None:
        x = x * mix.lam + partner * (1 - mix.lam)
    else:
        top, bottom, left, right = mix.box
        x = x.clone()
        x[:, :, top:bottom, left:right] = partner[:, :, top:bottom, left:right]
    onehot = torch.nn.functional.one_hot(y, num_classes).float()
    return x, onehot * mix.lam + onehot.flip(0) * (1 - mix.lam)


def hard_labels(target: torch.Tensor) -> torch.Tensor:
    """Class indices of a batch's targets: as they are, or the largest share of mixed (soft) targets."""
    return target.argmax(1) if target.ndim == 2 else target


# ---------------------------------------------------------------- RandAugment and TrivialAugment

# torchvision's operation set for RandAugment and TrivialAugmentWide (same order of ops).
OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
       "sharpness", "posterize", "solarize", "autocontrast", "equalize")
GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
BINS = 31  # magnitudes 0..30, as torchvision's num_magnitude_bins
# timm's RandAugment has two ops torchvision's lacks; apply_ops knows all of them (auto_augment draws from OPS only)
ALL_OPS = OPS + ("invert", "solarize_add")
# timm's op set (its _RAND_TRANSFORMS, or with inc1 the increasing-severity _RAND_INCREASING_TRANSFORMS): no identity
TIMM_OPS = ("autocontrast", "equalize", "invert", "rotate", "posterize", "solarize", "solarize_add", "color",
            "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")


@functools.lru_cache(maxsize=16)
def magnitudes(policy: str, h: int, w: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Each op's magnitude for bins 0..30 (torchvision's tables): "rand" (RandAugment) or "trivial"
    (TrivialAugmentWide, wider ranges). Cached: built once per run, not per batch (read-only)."""
    wide = policy == "trivial"

    def lin(top: float) -> torch.Tensor:
        return torch.linspace(0.0, top, BINS, device=device)

    bins = torch.arange(BINS, device=device, dtype=torch.float32)
    return {
        "shear_x": lin(0.99 if wide else 0.3), "shear_y": lin(0.99 if wide else 0.3),
        "translate_x": lin(32.0 if wide else 150.0 / 331.0 * w), "translate_y": lin(32.0 if wide else 150.0 / 331.0 * h),
        "rotate": lin(135.0 if wide else 30.0),
        "brightness": lin(0.99 if wide else 0.9), "color": lin(0.99 if wide else 0.9),
        "contrast": lin(0.99 if wide else 0.9), "sharpness": lin(0.99 if wide else 0.9),
        "posterize": 8 - (bins / ((BINS - 1) / (6 if wide else 4))).round(),
        "solarize": torch.linspace(255.0, 0.0, BINS, device=device),
    }


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * x + (1 - factor) * other).clamp(0, 255)


def _sharpness_base(x: torch.Tensor) -> torch.Tensor:
    """torchvision's "degenerate" image for sharpness: a 3x3 smoothing inside, the original on the border."""
    c = x.shape[1]
    kernel = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(c, 1, 3, 3)
    smooth = torch.nn.functional.conv2d(x, kernel, groups=c).round()
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = smooth
    return out


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    flat = high <= low
    scale = torch.where(flat, torch.ones_like(high), 255.0 / (high - low).clamp_min(1e-6))
    low = torch.where(flat, torch.zeros_like(low), low)
    return ((x - low) * scale).clamp(0, 255)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per image and channel, batched (torchvision's per-image rule)."""
    n, c, h, w = x.shape
    idx = x.round().clamp(0, 255).long().view(n * c, h * w)
    hist = torch.zeros(n * c, 256, device=x.device, dtype=torch.long).scatter_add_(1, idx, torch.ones_like(idx))
    last = (torch.arange(256, device=x.device) * (hist > 0)).amax(dim=1, keepdim=True)
    step = (hist.sum(dim=1, keepdim=True) - hist.gather(1, last)) // 255
    lut = (hist.cumsum(dim=1) + step // 2) // step.clamp_min(1)
    lut = torch.nn.functional.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    out = lut.gather(1, idx).to(x.dtype)
    return torch.where(step > 0, out, idx.to(x.dtype)).view(n, c, h, w)


def _affine(x: torch.Tensor, op: torch.Tensor, mag: dict[str, torch.Tensor],
            fill: torch.Tensor | None = None) -> torch.Tensor:
    """The geometric ops as one affine map per image about its centre (nearest pixel; the uncovered area zero, as
    torchvision fills it, or the colour `fill`, one value per channel in [0, 255], as timm does with the mean), in a
    single grid_sample; images whose op is not geometric get the identity. torchvision and timm shear about the
    corner."""
    n, _, h, w = x.shape
    zero = torch.zeros(n, device=x.device)

    def amount(name: str) -> torch.Tensor:
        return torch.where(op == OPS.index(name), mag[name], zero)

    angle = amount("rotate") * (math.pi / 180)
    cos, sin = angle.cos(), angle.sin()
    sx, sy = amount("shear_x"), amount("shear_y")
    # linear part: rotation, then shear (only one of them is non-trivial per image); pixel -> normalised units
    a, b = cos + sx * sin, -sin + sx * cos
    c, d = sin + sy * cos, cos - sy * sin
    # theta maps output to input coordinates: a positive translation moves the content right (down)
    theta = torch.stack([torch.stack([a, b * h / w, -amount("translate_x") * 2 / w], 1),
                         torch.stack([c * w / h, d, -amount("translate_y") * 2 / h], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if fill is None:
        return out
    inside = torch.nn.functional.grid_sample(torch.ones_like(x[:, :1]), grid, mode="nearest", padding_mode="zeros",
                                             align_corners=False)
    return torch.where(inside > 0, out, fill.to(out.dtype).view(1, -1, 1, 1))


def _uploaded(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on `device` without waiting for it: pinned, then copied asynchronously (a plain copy
    from pageable memory would synchronise with the device)."""
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


# apply_ops' groups, in the order images are sorted into: identity, the geometric ops (one resampling), each other op
GROUPS = (("identity", ("identity",)), ("geometric", GEOMETRIC)) + tuple(
    (name, (name,)) for name in ALL_OPS if name != "identity" and name not in GEOMETRIC)
GROUP_OF = torch.tensor([next(g for g, (_, members) in enumerate(GROUPS) if name in members) for name in ALL_OPS])


def apply_ops(x: torch.Tensor, op: torch.Tensor, mag: dict[str, torch.Tensor],
              fill: torch.Tensor | None = None) -> torch.Tensor:
    """Apply op `op[i]` (an index into ALL_OPS) with magnitude `mag[name][i]` to image i of a float batch in
    [0, 255]; geometric ops fill the uncovered area with `fill` (see `_affine`).

    `op` is on the host (drawn there), so which images take which op is known without reading the device: the
    batch is sorted by op once (`GROUPS`), each op runs on its own images only (a slice), and the results go back
    to their places in one scatter. Computing every op on the whole batch and picking per image would cost 14
    batches' work and equalize's histogram index (8 bytes an element, 308 MB at 256 x 3 x 224 x 224). One small
    upload (the sort order) per call, no host sync."""
    if op.device.type != "cpu":
        raise ValueError("apply_ops takes the ops on the host (a CPU tensor): reading them from the device would wait")
    groups = GROUP_OF[op]
    order = torch.argsort(groups, stable=True)
    sizes = torch.bincount(groups, minlength=len(GROUPS)).tolist()
    index = _uploaded(torch.cat([order, op[order]]), x.device)
    where, sorted_op = index[:len(op)], index[len(op):]
    xs = x.index_select(0, where)
    ms = {k: v.index_select(0, where) for k, v in mag.items()}
    parts, at = [], 0
    for (name, _), size in zip(GROUPS, sizes):
        if size:
            part = slice(at, at + size)
            parts.append(_one_op(name, xs[part], sorted_op[part], {k: v[part] for k, v in ms.items()}, fill))
        at += size
    return torch.empty_like(x).index_copy_(0, where, torch.cat(parts)).round()


def _one_op(name: str, x: torch.Tensor, op: torch.Tensor, mag: dict[str, torch.Tensor],
            fill: torch.Tensor | None = None) -> torch.Tensor:
    """Op `name` on every image of `x` ("geometric": each image's own geometric op, `op`, in one resampling)."""
    def factor() -> torch.Tensor:
        return (1 + mag[name]).view(-1, 1, 1, 1)

    if name == "identity":
        return x
    if name == "geometric":
        return _affine(x, op, mag, fill)
    if name == "brightness":
        return _blend(x, torch.zeros_like(x), factor())
    if name == "color":
        return _blend(x, _grayscale(x), factor())
    if name == "contrast":
        return _blend(x, _grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor())
    if name == "sharpness":
        return _blend(x, _sharpness_base(x), factor())
    if name == "posterize":
        step = (2.0 ** (8 - mag["posterize"])).view(-1, 1, 1, 1)
        return (x / step).floor() * step
    if name == "solarize":
        return torch.where(x >= mag["solarize"].view(-1, 1, 1, 1), 255 - x, x)
    if name == "autocontrast":
        return _autocontrast(x)
    if name == "invert":
        return 255 - x
    if name == "solarize_add":  # timm's: below 128, raised by the amount (at most 255)
        return torch.where(x < 128, (x + mag["solarize_add"].view(-1, 1, 1, 1)).clamp(max=255), x)
    return _equalize(x)


def auto_augment(x: torch.Tensor, policy: str, layers: int, magnitude: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """RandAugment (Cubuk et al. 2019: `layers` ops drawn per image, all at bin `magnitude` of 30, signed ops
    with a random sign) or TrivialAugment (Mueller & Hutter 2021: policy "trivial", one op per image at a
    random bin) on a uint8 batch, batched. torchvision applies one op to a whole batch; here every image
    draws its own."""
    n, _, h, w = x.shape
    dev = x.device
    table = magnitudes(policy, h, w, dev)
    # the ops are drawn on the host (apply_ops plans with them), from the batch generator's seed: no device read
    host = torch.Generator().manual_seed(generator.initial_seed() + 1) if generator is not None else None
    out = x.float()
    for _ in range(layers):
        op = torch.randint(0, len(OPS), (n,), generator=host)
        if policy == "trivial":
            level = torch.randint(0, BINS, (n,), device=dev, generator=generator)
        else:
            level = torch.full((n,), magnitude, device=dev, dtype=torch.long)
        sign = torch.where(torch.rand(n, device=dev, generator=generator) < 0.5, -1.0, 1.0)
        mag = {name: values[level] * (sign if name not in ("posterize", "solarize") else 1.0)
               for name, values in table.items()}
        out = apply_ops(out, op, mag)
    return out.clamp(0, 255).to(torch.uint8)


def timm_arguments(level: torch.Tensor, sign: torch.Tensor, increasing: bool, h: int, w: int
                   ) -> dict[str, torch.Tensor]:
    """Each op's argument at `level` (per image, in timm's units: 10 is its usual top) as timm's RandAugment maps
    it: rotate 30 x L/10 degrees, shear 0.3 x L/10, translate 0.45 x L/10 of the side, signed by `sign`;
    brightness, colour, contrast and sharpness blend by 1 + 0.9 x L/10 x sign (increasing) or 0.1 + 1.8 x L/10;
    posterize keeps 4 - int(0.4 L) bits (increasing) or int(0.4 L); solarize from 256 - int(25.6 L) (increasing)
    or int(25.6 L); solarize_add adds int(11 L) below 128."""
    def of(top: float) -> torch.Tensor:  # top x L / 10, multiplied first: whole levels give timm's integers exactly
        return level * top / 10

    enhance = of(0.9) * sign if increasing else of(1.8) + 0.1 - 1  # apply_ops blends by 1 + this
    bits, threshold = of(4).floor(), of(256).floor()
    return {"rotate": of(30) * sign, "shear_x": of(0.3) * sign, "shear_y": of(0.3) * sign,
            "translate_x": of(0.45 * w) * sign, "translate_y": of(0.45 * h) * sign,
            "brightness": enhance, "color": enhance, "contrast": enhance, "sharpness": enhance,
            "posterize": 4 - bits if increasing else bits, "solarize": 256 - threshold if increasing else threshold,
            "solarize_add": of(110).floor()}


TIMM_INDEX = torch.tensor([ALL_OPS.index(name) for name in TIMM_OPS])


def timm_rand_augment(x: torch.Tensor, layers: int, magnitude: float, std: float, top: float, increasing: bool,
                      prob: float, generator: torch.Generator | None = None,
                      fill: torch.Tensor | None = None) -> torch.Tensor:
    """timm's RandAugment (`rand_augment_transform`, "rand-m9-mstd0.5-inc1") on a uint8 batch, batched: `layers`
    ops per image drawn from timm's set (TIMM_OPS, with replacement), each applied with probability `prob`, at a
    magnitude drawn per op and image from N(`magnitude`, `std`) (uniform in [0, magnitude] for std inf) and
    clipped to [0, `top`]; geometric ops fill with `fill` (timm: the dataset's mean colour). Where it differs
    from timm's PIL ops: geometric ops resample the nearest pixel (timm: bilinear or bicubic at random) and rotate
    and shear about the centre (timm shears about the corner)."""
    n, _, h, w = x.shape
    dev = x.device
    host = torch.Generator().manual_seed(generator.initial_seed() + 2) if generator is not None else None
    out = x.float()
    for _ in range(layers):
        op = TIMM_INDEX[torch.randint(0, len(TIMM_OPS), (n,), generator=host)]
        op = torch.where(torch.rand(n, generator=host) < prob, op, 0)  # not applied: the identity (ALL_OPS[0])
        if math.isinf(std):
            level = torch.rand(n, device=dev, generator=generator) * magnitude
        else:
            level = magnitude + std * torch.randn(n, device=dev, generator=generator)
        level = level.clamp(0, top)
        sign = torch.where(torch.rand(n, device=dev, generator=generator) < 0.5, -1.0, 1.0)
        out = apply_ops(out, op, timm_arguments(level, sign, increasing, h, w), fill)
    return out.clamp(0, 255).to(torch.uint8)
