"""The architectures, as data: one `ArchSpec` per registered name (no torch here).

The table below is the whole definition of the built-in models: the paper's
ImageNet family (Table 1), torchvision's v1.5 variants, the CIFAR family
(section 4.2) and the plain twins of all of them. `models/__init__.py` registers
each row as an entrypoint over the one `ResNet` class (resnet.py), which is
imported when a model is built. The paper's "FLOPs" column is in multiply-adds
(paper Table 1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Shortcut = Literal["A", "B", "C", "none"]
SHORTCUTS = ("A", "B", "C")  # the paper's options (section 3.3, Table 3); "none" is a plain net


@dataclass(frozen=True)
class ArchSpec:
    """Everything that distinguishes one registered architecture from another."""

    block: Literal["basic", "bottleneck"]
    layers: tuple[int, ...]  # blocks per stage (conv2_x, conv3_x, ...)
    widths: tuple[int, ...]  # 3x3 width of each stage; bottlenecks expand it 4x
    stem: Literal["imagenet", "cifar"]  # 7x7/2 conv + 3x3/2 max pool, or a 3x3 conv
    shortcut: Shortcut  # "A": zero-pad where shapes change; "B": project there; "C": project on every block;
    #                     "none": plain
    stride_in_1x1: bool = True  # bottleneck only: stride on the first 1x1 (paper) or the 3x3 (v1.5)

    @property
    def depth(self) -> int:
        convs_per_block = 2 if self.block == "basic" else 3
        return convs_per_block * sum(self.layers) + 2  # + stem conv + fc

    def parameters(self, num_classes: int, in_channels: int = 3) -> int:
        """Learnable parameters of the built net (convolutions without bias, BatchNorm scale and shift, fc),
        counted from this row without building it (`resnet list`); tests check it against every build."""
        expansion = 1 if self.block == "basic" else 4
        k = 7 if self.stem == "imagenet" else 3
        inplanes = self.widths[0]
        total = in_channels * inplanes * k * k + 2 * inplanes
        for i, (n, w) in enumerate(zip(self.layers, self.widths)):
            out = w * expansion
            for b in range(n):
                cin = inplanes if b == 0 else out
                changes = b == 0 and (i > 0 or cin != out)  # the block where the shape changes
                if self.shortcut == "C" or self.shortcut == "B" and changes:  # a 1x1 projection with BatchNorm
                    total += cin * out + 2 * out
                convs = [(cin, w, 3), (w, w, 3)] if self.block == "basic" else [(cin, w, 1), (w, w, 3), (w, out, 1)]
                total += sum(a * c * kk * kk + 2 * c for a, c, kk in convs)
            inplanes = out
        return total + inplanes * num_classes + num_classes


_IMAGENET_WIDTHS = (64, 128, 256, 512)
_CIFAR_WIDTHS = (16, 32, 64)

# name: (spec, paper Table 1 GMACs or None)
_IMAGENET = {
    "resnet18": (ArchSpec("basic", (2, 2, 2, 2), _IMAGENET_WIDTHS, "imagenet", "B"), 1.8),
    "resnet34": (ArchSpec("basic", (3, 4, 6, 3), _IMAGENET_WIDTHS, "imagenet", "B"), 3.6),
    "resnet50": (ArchSpec("bottleneck", (3, 4, 6, 3), _IMAGENET_WIDTHS, "imagenet", "B"), 3.8),
    "resnet101": (ArchSpec("bottleneck", (3, 4, 23, 3), _IMAGENET_WIDTHS, "imagenet", "B"), 7.6),
    "resnet152": (ArchSpec("bottleneck", (3, 8, 36, 3), _IMAGENET_WIDTHS, "imagenet", "B"), 11.3),
}
# torchvision's stride placement (stride on the 3x3 conv); the paper gives no figure.
for _d in (50, 101, 152):
    _IMAGENET[f"resnet{_d}-v1.5"] = (replace(_IMAGENET[f"resnet{_d}"][0], stride_in_1x1=False), None)

# Paper section 4.2: 6n+2 layers, n basic blocks per stage, option-A shortcuts.
_CIFAR = {f"resnet{6 * n + 2}": (ArchSpec("basic", (n, n, n), _CIFAR_WIDTHS, "cifar", "A"), None)
          for n in (3, 5, 7, 9, 18, 200)}

# The paper quotes its plain-18/34 baselines at the same FLOPs as the ResNets.
_PLAIN_GMACS = {"plain18": 1.8, "plain34": 3.6}


@dataclass(frozen=True)
class VGGSpec:
    """A VGG net (Simonyan & Zisserman 2014) as torchvision builds it: 3x3 convolutions (with bias) in stages of
    `layers` convolutions, each stage ending in a 2x2 max pool, then a 7x7 average pool and three fully connected
    layers (4096, 4096, classes). The paper's Figure 3 sets VGG-19 beside the 34-layer plain and residual nets."""

    layers: tuple[int, ...]
    widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    hidden: int = 4096

    @property
    def depth(self) -> int:
        return sum(self.layers) + 3

    def parameters(self, num_classes: int, in_channels: int = 3) -> int:
        total, cin = 0, in_channels
        for n, w in zip(self.layers, self.widths):
            for _ in range(n):
                total += cin * w * 9 + w
                cin = w
        return total + (cin * 49 + 1) * self.hidden + (self.hidden + 1) * self.hidden \
            + (self.hidden + 1) * num_classes


# The paper's Figure 3 (VGG-19: 19.6 billion multiply-adds); torchvision's parameter names, so its weights load.
_REFERENCE = {"vgg19": (VGGSpec((2, 2, 4, 4, 4)), 19.6)}


def builtin_models():
    """(ModelInfo, spec) for every built-in model, in registry order: the ResNets, their plain twins, then the
    reference nets (VGGSpec)."""
    from .registry import ModelInfo

    def info(name: str, spec: ArchSpec, family: str, paper_gmacs: float | None) -> ModelInfo:
        return ModelInfo(
            name=name, family=family, block=spec.block, depth=spec.depth, plain=spec.shortcut == "none",
            input_size=224 if family == "imagenet" else 32, default_classes=1000 if family == "imagenet" else 10,
            paper_gmacs=paper_gmacs, variant="" if spec.stride_in_1x1 or spec.block == "basic" else "v1.5",
            params=spec.parameters(1000 if family == "imagenet" else 10), shortcut=spec.shortcut)

    tables = (("imagenet", _IMAGENET), ("cifar", _CIFAR))
    for family, table in tables:
        for name, (spec, gmacs) in table.items():
            yield info(name, spec, family, gmacs), spec
    for family, table in tables:
        for name, (spec, _) in table.items():
            plain = "plain" + name[len("resnet"):]
            yield info(plain, replace(spec, shortcut="none"), family, _PLAIN_GMACS.get(plain)), \
                replace(spec, shortcut="none")
    for name, (spec, gmacs) in _REFERENCE.items():
        yield ModelInfo(name=name, family="reference", block="vgg", depth=spec.depth, plain=True, input_size=224,
                        default_classes=1000, paper_gmacs=gmacs, params=spec.parameters(1000),
                        shortcut="none"), spec
