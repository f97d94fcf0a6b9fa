"""A run's state, in one object saved and restored as a whole, and the rules that say when it stops.

`RunState` is everything a run has done that the weights do not say: the step and epoch, the metric rows,
the progress inside an unfinished epoch, the skipped steps, the wall time of earlier processes and where
train.target_top1 was reached. A checkpoint carries it under its long-standing keys (`to_checkpoint`).

The stop rules are pure functions of the state and the metric rows, so a resumed run stops exactly
where an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunState:
    step: int = 0  # optimizer steps taken (skipped non-finite steps included: they keep the schedule's length)
    epoch: int = 0  # epochs completed
    rows: list[dict] = field(default_factory=list)  # metrics.csv, one row per epoch
    partial: dict[str, Any] = field(default_factory=dict)  # inside an epoch, for a checkpoint taken mid-epoch:
    #                                                        batch, loss_sum, correct, seen, seconds (EpochMeter)
    skipped: int = 0  # non-finite steps skipped (train.skip_nonfinite)
    prior_wall: float = 0.0  # wall seconds spent by earlier processes of this run (resumed runs)
    target: dict[str, Any] | None = None  # where train.target_top1 was first reached: epoch, step, seconds

    def to_checkpoint(self, wall_seconds: float) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "metrics": self.rows, "partial": dict(self.partial),
                "skipped": self.skipped, "wall_seconds": wall_seconds, "target": self.target}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> "RunState":
        return cls(step=int(ckpt["step"]), epoch=int(ckpt["epoch"]), rows=list(ckpt.get("metrics", [])),
                   partial=dict(ckpt.get("partial") or {}), skipped=int(ckpt.get("skipped", 0)),
                   prior_wall=float(ckpt.get("wall_seconds", 0.0)), target=ckpt.get("target"))


# ---------------------------------------------------------------- stop rules

@dataclass(frozen=True)
class StopRules:
    """When a run is done, from its config: the planned steps, the selection figure, patience and target."""

    total_steps: int
    selection: str  # the metrics column that selects best.pt (evaluations.selection_metric)
    patience: int = 0  # train.patience
    stop_at_target: bool = False  # train.stop_at_target

    def best_row(self, rows: list[dict]) -> dict | None:
        return best_row(rows, self.selection)

    def finished(self, state: RunState) -> bool:
        """Every step done, stopped at train.target_top1 as asked, or stopped early (train.patience): a resume
        has nothing left to do."""
        return (state.step >= self.total_steps or bool(self.stop_at_target and state.target)
                or patience_reached(state.rows, self.selection, self.patience))

    def stopped_early(self, state: RunState) -> bool:
        """Ended by train.patience before its last step."""
        return patience_reached(state.rows, self.selection, self.patience) and state.step < self.total_steps


def best_row(rows: list[dict], metric: str) -> dict | None:
    """The epoch best.pt holds: the best `metric` (the first of equals)."""
    return max(rows, key=lambda r: r[metric]) if rows else None


def patience_reached(rows: list[dict], metric: str, patience: int) -> bool:
    """train.patience: that many epochs since the best `metric`."""
    best = best_row(rows, metric)
    return bool(patience and best and rows[-1]["epoch"] - best["epoch"] >= patience)


def reaches_target(row: dict, metric: str, goal: float) -> bool:
    """train.target_top1: this epoch's `metric` is at least `goal` (0: no target)."""
    return bool(goal) and row[metric] >= goal


def invocation_done(epoch: int, first_epoch: int, stop_after_epochs: int) -> bool:
    """run.stop_after_epochs: this process has done its share of epochs (time-limited jobs)."""
    return bool(stop_after_epochs) and epoch >= first_epoch + stop_after_epochs
