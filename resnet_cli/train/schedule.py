"""Learning rate as a pure function of the optimizer step: resumable with nothing but the step."""

from __future__ import annotations

import math

from ..config import TrainConfig


def paper_warmup(depth: int, family: str) -> tuple[str, int]:
    """Paper section 4.2: the 110-layer (and deeper) CIFAR nets start at lr/10 for about 400 iterations."""
    if family == "cifar" and depth >= 110:
        return "constant", 400
    return "none", 0


class LRSchedule:
    def __init__(self, cfg: TrainConfig, total_steps: int, steps_per_epoch: int, depth: int, family: str) -> None:
        self.base = cfg.lr
        self.total = total_steps
        self.kind = cfg.schedule
        self.gamma = cfg.gamma
        unit = steps_per_epoch if cfg.milestone_unit == "epochs" else 1
        self.milestones = [m * unit for m in cfg.milestones]
        self.warmup, self.warmup_steps = (cfg.warmup, cfg.warmup_steps)
        if cfg.warmup == "paper":
            self.warmup, self.warmup_steps = paper_warmup(depth, family)
        self.factor = cfg.warmup_factor

    def __call__(self, step: int) -> float:
        """The lr for optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            if self.warmup == "constant":
                return self.base * self.factor
            if self.warmup == "linear":
                return self.base * (self.factor + (1 - self.factor) * step / self.warmup_steps)
        if self.kind == "multistep":
            return self.base * self.gamma ** sum(step >= m for m in self.milestones)
        if self.kind == "cosine":
            span = max(1, self.total - self.warmup_steps)
            t = min(1.0, (step - self.warmup_steps) / span)
            return self.base * 0.5 * (1 + math.cos(math.pi * t))
        return self.base
