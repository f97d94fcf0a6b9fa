"""Evaluation: loss, top-1, top-5 and per-class accuracy, summed on the device and read once."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class EvalResult:
    loss: float
    top1: float
    top5: float
    count: int
    seconds: float
    per_class: list[float] = field(default_factory=list)  # accuracy per class (nan where a class has no samples)
    class_counts: list[int] = field(default_factory=list)

    @property
    def img_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def autocast(device: torch.device, precision: str):
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


def evaluate(model: torch.nn.Module, loader, num_classes: int, device: torch.device, precision: str = "fp32",
             all_reduce=None) -> EvalResult:
    """Evaluate in inference mode; `all_reduce` (distributed runs) sums the counters across ranks."""
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    k = min(5, num_classes)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top1 = torch.zeros((), dtype=torch.int64, device=device)
    topk = torch.zeros((), dtype=torch.int64, device=device)
    correct_per_class = torch.zeros(num_classes, dtype=torch.int64, device=device)
    count_per_class = torch.zeros(num_classes, dtype=torch.int64, device=device)
    try:
        with torch.inference_mode(), autocast(device, precision):
            for x, y in loader.batches():
                logits = model(x).float()
                loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
                pred = logits.topk(k, dim=1).indices
                hit1 = pred[:, 0] == y
                top1 += hit1.sum()
                topk += (pred == y.view(-1, 1)).any(dim=1).sum()
                correct_per_class += torch.bincount(y[hit1], minlength=num_classes)
                count_per_class += torch.bincount(y, minlength=num_classes)
    finally:
        model.train(was_training)
    if all_reduce is not None:
        loss_sum, top1, topk, correct_per_class, count_per_class = all_reduce(
            [loss_sum, top1, topk, correct_per_class, count_per_class])
    n = int(count_per_class.sum().item())
    counts = count_per_class.tolist()
    per_class = [c / m if m else float("nan") for c, m in zip(correct_per_class.tolist(), counts)]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return EvalResult(loss=loss_sum.item() / max(n, 1), top1=top1.item() / max(n, 1), top5=topk.item() / max(n, 1),
                      count=n, seconds=time.perf_counter() - t0, per_class=per_class, class_counts=counts)
