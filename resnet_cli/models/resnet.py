"""One ResNet class for every network in the registry, after He et al. (2015).

The ImageNet family (paper Table 1) and the CIFAR family (paper section 4.2)
differ only in data: the stem, the stage widths, the block type and the
shortcut type. That data lives in `ArchSpec`; `ResNet` turns a spec into a
module. Parameter and buffer names follow torchvision's `models/resnet.py`
(`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`, `fc`), so a
torchvision state_dict loads with `strict=True`.

Plain networks (the paper's "plain" baselines) are the same nets with every
shortcut removed, downsampling done by the stride-2 convolution alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # specs.py builds ResNets from its entrypoints; this module only reads a spec's fields
    from .specs import ArchSpec

def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """The paper's option A: identity with stride-2 subsampling and zero-padded channels.

    It has no parameters, which is why the CIFAR nets match Table 6's counts.
    The new channels are appended after the existing ones.
    """

    def __init__(self, stride: int, out_planes: int) -> None:
        super().__init__()
        self.stride = stride
        self.out_planes = out_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_planes - x.shape[1]))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, out_planes={self.out_planes}"


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016), as timm's DropPath: in training, each image's residual branch is
    dropped with probability `rate` (its block is the identity for that image) and the kept ones are scaled by
    1 / (1 - rate), so that evaluation, which keeps every branch, sees the same expected sum."""
    if not rate or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class _Block(nn.Module):
    """What both blocks do after their branch: add the shortcut (`downsample`, else the identity) unless the
    block is plain, the branch dropped per image in training with stochastic depth (`drop_path`)."""

    downsample: nn.Module | None
    residual: bool
    drop_path: float

    def _join(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return out
        return drop_path(out, self.drop_path, self.training) + (x if self.downsample is None else self.downsample(x))

    def extra_repr(self) -> str:
        return f"drop_path={self.drop_path:g}" if self.drop_path else ""


class BasicBlock(_Block):
    """Two 3x3 convolutions (paper Fig. 5 left)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 residual: bool, stride_in_1x1: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        self.drop_path = drop_path  # stochastic depth: the chance that training skips this block's branch
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(self._join(out, x))


class Bottleneck(_Block):
    """1x1 reduce, 3x3, 1x1 expand (paper Fig. 5 right).

    Where the stride goes is the one difference between the paper and torchvision:
    the paper's release (and `resnet50`) strides the first 1x1 conv, so the 3x3
    conv runs at the reduced resolution; torchvision's "v1.5" (`resnet50-v1.5`)
    strides the 3x3 conv instead. v1.5 costs about 0.3 GMACs more for resnet50
    (4.1 vs 3.8) and is reported to be slightly more accurate. The weights have
    the same shapes either way, so one state_dict serves both.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 residual: bool, stride_in_1x1: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        self.drop_path = drop_path
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, planes, s1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, s3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self._join(out, x))


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def stage_name(index: int) -> str:
    """The paper's name for stage `index` (0-based, `layer{index+1}` here): conv2_x, conv3_x, ... (Table 1)."""
    return f"conv{index + 2}_x"


def stage_of(name: str) -> str:
    """The stage a module or parameter name belongs to: stem (conv1, bn1), conv2_x, ..., fc."""
    top = name.split(".", 1)[0]
    if top.startswith("layer") and top[len("layer"):].isdigit():
        return stage_name(int(top[len("layer"):]) - 1)
    return "fc" if top == "fc" else "stem"


class ResNet(nn.Module):
    """A residual (or plain) network built from an `ArchSpec`."""

    def __init__(self, spec: ArchSpec, num_classes: int = 1000, in_channels: int = 3,
                 zero_init_residual: bool = False, drop_path: float = 0.0) -> None:
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if in_channels <= 0:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        if zero_init_residual and spec.shortcut == "none":
            raise ValueError("zero_init_residual needs shortcuts; a plain net would output a constant")
        if not 0 <= drop_path < 1:
            raise ValueError(f"drop_path is a probability in [0, 1), got {drop_path}")
        if drop_path and spec.shortcut == "none":
            raise ValueError("drop_path needs shortcuts; a plain net's block is its only path")
        self.spec = spec
        self.frozen: tuple[str, ...] = ()  # stages fixed by freeze()
        block = BLOCKS[spec.block]
        self.inplanes = spec.widths[0]
        if spec.stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = conv3x3(in_channels, self.inplanes)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        # The CIFAR nets have no max pool; an Identity keeps forward() uniform.
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if spec.stem == "imagenet" else nn.Identity()
        # stochastic depth's rate grows linearly from 0 (the first block) to drop_path (the last), as in timm
        blocks = sum(spec.layers)
        rates = iter([drop_path * b / max(1, blocks - 1) for b in range(blocks)])
        for i, (n, width) in enumerate(zip(spec.layers, spec.widths)):
            self.add_module(f"layer{i + 1}", self._make_layer(block, width, n, 1 if i == 0 else 2, rates))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(spec.widths[-1] * block.expansion, num_classes)
        self._init_weights(zero_init_residual)

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    @property
    def in_channels(self) -> int:
        return self.conv1.in_channels

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.spec.layers))]

    def named_stages(self) -> list[tuple[str, nn.Sequential]]:
        """(paper name, stage) pairs: ("conv2_x", layer1), ("conv3_x", layer2), ..."""
        return [(stage_name(i), stage) for i, stage in enumerate(self.stages)]

    def stage_names(self) -> list[str]:
        """The parts `freeze` takes, named as `resnet summary` prints them: conv1 (the stem), conv2_x, ..., fc."""
        return ["conv1", *(name for name, _ in self.named_stages()), "fc"]

    def _stage_modules(self, name: str) -> list[nn.Module]:
        if name == "conv1":
            return [self.conv1, self.bn1]
        if name == "fc":
            return [self.fc]
        return [dict(self.named_stages())[name]]

    def freeze(self, names: list[str] | tuple[str, ...]) -> None:
        """Fix the named parts (`stage_names`) for fine-tuning: their parameters get no gradient, and their
        BatchNorm layers keep their running statistics (eval mode even while the rest of the net trains).
        The state_dict does not change, so a checkpoint loads into an unfrozen net as usual."""
        unknown = [n for n in names if n not in self.stage_names()]
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; this net has {', '.join(self.stage_names())}")
        self.frozen = tuple(names)
        for name in names:
            for module in self._stage_modules(name):
                module.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "ResNet":
        super().train(mode)
        for name in self.frozen:
            for module in self._stage_modules(name):
                for m in module.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def _make_layer(self, block, planes: int, blocks: int, stride: int, drop_rates) -> nn.Sequential:
        spec = self.spec
        out_planes = planes * block.expansion
        residual = spec.shortcut != "none"
        layers = []
        for b in range(blocks):
            s = stride if b == 0 else 1
            layers.append(block(self.inplanes, planes, s, self._shortcut(self.inplanes, out_planes, s), residual,
                                spec.stride_in_1x1, next(drop_rates)))
            self.inplanes = out_planes
        return nn.Sequential(*layers)

    def _shortcut(self, inplanes: int, out_planes: int, stride: int) -> nn.Module | None:
        """A block's shortcut (paper section 3.3, Table 3): None is the identity. Where the shape changes, option A
        subsamples and pads with zeros, B projects (1x1 conv + BatchNorm); C projects on every block."""
        changes = stride != 1 or inplanes != out_planes
        if self.spec.shortcut == "C" or self.spec.shortcut == "B" and changes:
            return nn.Sequential(conv1x1(inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))
        if self.spec.shortcut == "A" and changes:
            return PadShortcut(stride, out_planes)
        return None

    def _init_weights(self, zero_init_residual: bool) -> None:
        # He et al. 2015 ("Delving deep into rectifiers"), as the paper's section 3.4
        # says; fan_out as in the original release and torchvision. fc keeps
        # PyTorch's default, as torchvision does.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Goyal et al. 2017: each residual branch starts as zero, so every
            # block starts as the identity. Not in the paper; off by default.
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))
