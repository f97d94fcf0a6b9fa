"""VGG-19 as a reference model (the paper's Figure 3 sets it beside the 34-layer plain and residual nets), with
torchvision's module and parameter names (`features.N`, `classifier.N`), so a torchvision vgg19 state_dict loads
with `strict=True`. Built from a `VGGSpec` (specs.py); used by `summary`, `flops`, `build` and `reproduce figure3`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .specs import VGGSpec


class VGG(nn.Module):
    """Stages of 3x3 convolutions (with bias) and ReLUs, each closed by a 2x2 max pool; a 7x7 adaptive average
    pool; fc-4096, fc-4096 and the classifier, with dropout between them, as torchvision's `vgg19`."""

    def __init__(self, spec: "VGGSpec", num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        cin = in_channels
        for n, width in zip(spec.layers, spec.widths):
            for _ in range(n):
                layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
                cin = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(cin * 49, spec.hidden), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(spec.hidden, spec.hidden), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(spec.hidden, num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def num_classes(self) -> int:
        return self.classifier[-1].out_features

    @property
    def in_channels(self) -> int:
        return self.features[0].in_channels

    def named_stages(self) -> list[tuple[str, nn.Sequential]]:
        """(name, stage) pairs, as the VGG paper's table names them: conv1 (2 layers), ..., conv5 (4 layers), each
        with its closing max pool; then fc (the three fully connected layers)."""
        stages, start = [], 0
        for i, n in enumerate(self.spec.layers):
            end = start + 2 * n + 1
            stages.append((f"conv{i + 1}", self.features[start:end]))
            start = end
        return stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
