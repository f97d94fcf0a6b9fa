"""The evaluations of a run, named once: which weights on which split, their metrics.csv columns, the
selection figure and the epoch line.

Every epoch ends with an evaluation of the raw weights on each split the run has (the validation split
when data.val_split holds one out, then the test set), and of the EMA weights likewise with train.ema.
One of those columns, the selection figure, picks best.pt, stops early (train.patience) and times
train.target_top1: top-1 on the validation split when there is one, else on the test set; of the EMA
weights when they are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

# metrics.csv's columns: the training ones, then every evaluation's (`metric_fields`), then the speed ones:
# `seconds` and `img_per_s` are the epoch's training alone, `eval_seconds` all of its evaluations together.
TRAIN_FIELDS = ["epoch", "step", "lr", "train_loss", "train_top1"]
SPEED_FIELDS = ["seconds", "img_per_s", "eval_seconds"]
# the columns of a run with neither a validation split nor EMA
METRIC_FIELDS = [*TRAIN_FIELDS, "test_loss", "test_top1", "test_top5", *SPEED_FIELDS]
METRICS = ("loss", "top1", "top5")


@dataclass(frozen=True)
class Evaluation:
    """One set of weights ("raw" or "ema") on one split ("val" or "test")."""

    weights: str
    split: str

    @property
    def prefix(self) -> str:
        """The columns' common start: "test", "ema_val", ..."""
        return ("ema_" if self.weights == "ema" else "") + self.split

    def column(self, metric: str) -> str:
        return f"{self.prefix}_{metric}"


def splits(cfg) -> tuple[str, ...]:
    """The splits evaluated each epoch, in order."""
    return ("val", "test") if cfg.data.val_split else ("test",)


def split_name(dataset: str, split: str) -> str:
    """How output names a split. An image folder's evaluation set is its val/ folder, so it is shown as "val",
    and images held out of its train/ (data.val_split) as "holdout". metrics.csv, --split and JSON keep the
    keys "test" and "val" for every dataset."""
    from ..config import DECODED

    if dataset in DECODED:
        return {"test": "val", "val": "holdout"}.get(split, split)
    return split


def evaluations(cfg) -> list[Evaluation]:
    """Every evaluation of an epoch, in metrics.csv order: raw weights first, then the EMA weights."""
    weights = ("raw", "ema") if cfg.train.ema else ("raw",)
    return [Evaluation(w, s) for w in weights for s in splits(cfg)]


def selection_metric(cfg) -> str:
    """The column that selects best.pt, stops early and times train.target_top1."""
    return Evaluation("ema" if cfg.train.ema else "raw", splits(cfg)[0]).column("top1")


def metric_fields(cfg) -> list[str]:
    """metrics.csv's columns for a run: the training ones, every evaluation's, the speed ones."""
    evals = [e.column(m) for e in evaluations(cfg) for m in METRICS]
    return [*TRAIN_FIELDS, *evals, *SPEED_FIELDS]


def top1_columns(cfg) -> list[str]:
    """The evaluations' top-1 columns (the final table of `resnet train`)."""
    return [e.column("top1") for e in evaluations(cfg)]


def epoch_fields(row: dict, cfg, epochs: int) -> list[str]:
    """What an epoch ends with, field by field (a line breaks only between them): training figures, each split
    (with its EMA figure), lr and speed."""
    evals = [f"{split_name(cfg.data.dataset, split)} loss {row[f'{split}_loss']:.4f} top1 {row[f'{split}_top1']:.2%}"
             + (f" (ema {row[Evaluation('ema', split).column('top1')]:.2%})" if cfg.train.ema else "")
             for split in splits(cfg)]
    speed = f"{row['seconds']:.1f}s {row['img_per_s']:,.0f} img/s"
    if row.get("eval_seconds") not in (None, ""):  # rows of runs from before the column have none
        speed += f", eval {row['eval_seconds']:.1f}s"
    return [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.4f} acc {row['train_top1']:.2%}",
            *evals, f"lr {row['lr']:.4g}", speed]
