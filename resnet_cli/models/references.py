"""The best published figure for each model, which `resnet flops --check` checks (no torch here).

One row per registry name: what is compared (multiply-adds at 224x224 with 1000 classes, or parameters of the
CIFAR nets with 10 classes), the figure, and where it was published. A model without a row, or counted under
other conditions (another input size, class count, channel count or shortcut option), has nothing to be checked
against: `flops --check` names it and fails, unless --allow-unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SOURCES = {
    "T1": "the paper's Table 1 (multiply-adds, billions)",
    "T6": "the paper's Table 6 (parameters; a plain net has its residual twin's, option A adding none)",
    "F3": "the paper's Figure 3 (multiply-adds, billions)",
    "tv": "torchvision's published GFLOPS of its v1.5 weights (multiply-adds, billions)",
}


@dataclass(frozen=True)
class Reference:
    quantity: Literal["gmacs", "params"]
    value: float
    source: str  # a key of SOURCES

    @property
    def conditions(self) -> str:
        return "at 224x224, 1000 classes, RGB" if self.quantity == "gmacs" else "with 10 classes, RGB"

    def label(self) -> str:
        value = f"{self.value:g}" if self.quantity == "gmacs" else f"{self.value / 1e6:g}M"
        return f"{value} {self.source}"


REFERENCES: dict[str, Reference] = {
    **{f"resnet{d}": Reference("gmacs", g, "T1") for d, g in ((18, 1.8), (34, 3.6), (50, 3.8), (101, 7.6),
                                                              (152, 11.3))},
    "plain18": Reference("gmacs", 1.8, "T1"),
    "plain34": Reference("gmacs", 3.6, "T1"),
    # torchvision's model cards: ResNet50_Weights 4.09, ResNet101_Weights 7.8, ResNet152_Weights 11.51 GFLOPS
    "resnet50-v1.5": Reference("gmacs", 4.09, "tv"),
    "resnet101-v1.5": Reference("gmacs", 7.8, "tv"),
    "resnet152-v1.5": Reference("gmacs", 11.51, "tv"),
    **{f"{kind}{d}": Reference("params", p, "T6") for kind in ("resnet", "plain")
       for d, p in ((20, 0.27e6), (32, 0.46e6), (44, 0.66e6), (56, 0.85e6), (110, 1.7e6), (1202, 19.4e6))},
    "vgg19": Reference("gmacs", 19.6, "F3"),
}


def reference_for(name: str) -> Reference | None:
    return REFERENCES.get(name)
