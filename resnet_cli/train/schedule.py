"""Learning rate as a pure function of the optimizer step: resumable with nothing but the step and the plan.

The plan is what the schedule was laid out for: the run's length (cosine anneals to 0 at its end; a
warm-up given as a fraction is a fraction of it) and the warm-up steps. A resume that changes the run's
length (`--resume RUN --epochs N`) does not silently re-plan it; `LRSchedule.resized` applies one rule,
the same for every schedule, and says which:

- multistep, constant: nothing depends on the length; the lr simply continues.
- cosine, still warming up: the warm-up stays as it was; the cosine after it spans the new length.
- cosine, part-way: the rest is re-fitted, a cosine from the lr at the resume point to 0 at the new end:
  no jump.
- cosine, finished (the lr has reached 0): a warm restart (Loshchilov & Hutter's SGDR), a new cosine
  from the peak lr to 0 over the added steps; continuing from an lr of 0 would not train.

The segments added this way are saved in checkpoints, so further resumes replay them exactly.
"""

from __future__ import annotations

import math
from typing import Any

from ..config import TrainConfig, parse_length


def paper_warmup(depth: int, family: str) -> tuple[str, int]:
    """Paper section 4.2: the 110-layer (and deeper) CIFAR nets start at lr/10 for about 400 iterations."""
    if family == "cifar" and depth >= 110:
        return "constant", 400
    return "none", 0


def warmup_steps(length: str, steps_per_epoch: int, total_steps: int) -> int:
    """train.warmup_length in steps: "400" steps, "2ep" epochs, "5%" of the run's `total_steps`."""
    steps, epochs, fraction = parse_length(length, "train.warmup_length")
    if epochs:
        return max(1, round(epochs * steps_per_epoch))
    if fraction:
        return max(1, round(fraction * total_steps))
    return steps


def cosine(lr0: float, start: int, end: int, step: int) -> float:
    t = min(1.0, max(0.0, (step - start) / max(1, end - start)))
    return lr0 * 0.5 * (1 + math.cos(math.pi * t))


class LRSchedule:
    def __init__(self, cfg: TrainConfig, total_steps: int, steps_per_epoch: int, depth: int, family: str,
                 plan: dict[str, Any] | None = None) -> None:
        self.base = cfg.lr
        self.kind = cfg.schedule
        self.gamma = cfg.gamma
        unit = steps_per_epoch if cfg.milestone_unit == "epochs" else 1
        self.milestones = [m * unit for m in cfg.milestones]
        self.factor = cfg.warmup_factor
        self.warmup = cfg.warmup
        plan = dict(plan or {})
        self.total = int(plan.get("total", total_steps))  # the length the cosine was laid out for
        if cfg.warmup == "paper":
            self.warmup, default_warmup = paper_warmup(depth, family)
        else:
            default_warmup = warmup_steps(cfg.warmup_length, steps_per_epoch, self.total) \
                if cfg.warmup != "none" else 0
        self.warmup_steps = int(plan.get("warmup_steps", default_warmup))
        self.segments = [tuple(s) for s in plan.get("segments", [])]  # (start, end, lr at start): re-fitted parts

    def plan(self) -> dict[str, Any]:
        """What a checkpoint saves so that a resume continues this exact schedule."""
        return {"total": self.total, "warmup_steps": self.warmup_steps, "segments": [list(s) for s in self.segments]}

    def end(self) -> int:
        return int(self.segments[-1][1]) if self.segments else self.total

    def __call__(self, step: int) -> float:
        """The lr for optimizer step `step` (0-based)."""
        for start, end, lr0 in reversed(self.segments):
            if step >= start:
                return cosine(lr0, start, end, step)
        if step < self.warmup_steps:
            if self.warmup == "constant":
                return self.base * self.factor
            if self.warmup == "linear":
                return self.base * (self.factor + (1 - self.factor) * step / self.warmup_steps)
        if self.kind == "multistep":
            return self.base * self.gamma ** sum(step >= m for m in self.milestones)
        if self.kind == "cosine":
            return cosine(self.base, self.warmup_steps, self.total, step)
        return self.base

    def resized(self, step: int, total: int) -> str:
        """Lay the rest of the schedule out for a run that now ends at `total` (resumed at `step`); returns
        the rule applied, in words. See the module docstring."""
        if total == self.end() or step >= total:
            return ""
        if self.kind != "cosine":
            return f"{self.kind} schedule: the lr continues as planned (it does not depend on the run's length)"
        if not self.segments and step < self.warmup_steps:
            self.total = total
            return f"cosine schedule still warming up: the cosine after warm-up now ends at step {total}"
        now = self(step)
        if step >= self.end():
            self.segments.append((step, total, self.base))
            return (f"cosine schedule had finished (lr {now:.3g}): warm restart (SGDR), a new cosine from lr "
                    f"{self.base:g} to 0 over steps {step + 1}-{total}")
        self.segments.append((step, total, now))
        return f"cosine schedule re-fitted: from the current lr {now:.4g} to 0 at step {total}, no jump"
