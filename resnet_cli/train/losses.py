"""The training loss, from a `train` config section: cross-entropy (the paper's), or binary cross-entropy, one
sigmoid per class, as timm's "ResNet strikes back" recipes train (Wightman et al. 2021: better with mixup and
cutmix, whose mixed labels it reads as several classes present at once).

Both take class indices or the soft targets mixup and cutmix make (N x classes), and apply
train.label_smoothing the same way (target x (1 - s) + s / classes). Evaluation always reports cross-entropy
(the loss columns of val and test), so that runs trained either way compare.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class BinaryCrossEntropy(torch.nn.Module):
    """timm's BinaryCrossEntropy: targets one-hot (or soft), smoothed, then, with `threshold` > 0, each class
    present (1) where its share exceeds it, else 0 (timm's --bce-target-thresh; the strikes-back recipes: 0.2);
    the mean over every image and class."""

    def __init__(self, smoothing: float = 0.0, threshold: float = 0.0) -> None:
        super().__init__()
        self.smoothing, self.threshold = smoothing, threshold

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        classes = logits.shape[-1]
        if target.ndim == 1:  # class indices
            target = F.one_hot(target, classes).float()
        target = target.float()
        if self.smoothing:
            target = target * (1 - self.smoothing) + self.smoothing / classes
        if self.threshold:
            target = (target > self.threshold).float()
        return F.binary_cross_entropy_with_logits(logits.float(), target)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}, threshold={self.threshold}"


def make_loss(t) -> torch.nn.Module:
    """train.loss (ce, bce) with train.label_smoothing and train.bce_threshold."""
    if t.loss == "bce":
        return BinaryCrossEntropy(t.label_smoothing, t.bce_threshold)
    return torch.nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
