"""What a resumed run is: the checkpoint's own config, with only the changes that keep it the same run.

A resume may change the run's length (the lr schedule then follows LRSchedule.resized's rule, printed),
when it stops early, where it runs, reads from and logs to, and the speed switches (the same
arithmetic in another memory layout or compiled; a resume on another device re-resolves them anyway).
Anything else (the lr, the model, the data...) would make a different run, so it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config as C
from ..checkpoint import checkpoint_file, load_checkpoint
from ..errors import BadInput

RESUMABLE = {"train.epochs", "train.steps", "run.device", "data.data_dir", "run.stop_after_epochs",
             "train.channels_last", "train.compile", "train.compile_mode", "train.compile_min_steps",
             "train.checkpoint_every", "train.log_interval", "train.target_top1", "train.stop_at_target",
             "train.patience", "run.tensorboard", "data.workers"}


@dataclass
class ResumePoint:
    cfg: C.Config  # the checkpoint's config with the allowed changes
    checkpoint: dict[str, Any]  # the training state to load (Trainer.load_state)
    run_dir: Path  # the run folder it continues


def resume_point(source: Path, changes: dict[str, Any]) -> ResumePoint:
    """The run `source` (a run folder's last.pt, or a checkpoint file) continues, with `changes`
    ({dotted key: value}, None values ignored) applied where RESUMABLE allows."""
    try:
        path = checkpoint_file(source, prefer="last")
    except BadInput:
        raise BadInput(f"--resume {source}: no last.pt in that folder") from None
    ckpt = load_checkpoint(path)
    if "optimizer" not in ckpt or "step" not in ckpt or not isinstance(ckpt.get("config"), dict):
        raise BadInput(f"--resume {path}: not a training checkpoint (no optimizer state)")
    changes = {k: v for k, v in changes.items() if v is not None}
    refused = sorted(set(changes) - RESUMABLE)
    if refused:
        raise BadInput(f"cannot change {', '.join(refused)} when resuming (only {', '.join(sorted(RESUMABLE))}); "
                       "start a new run instead")
    flat = C.flatten(ckpt["config"], f"config in {path}")
    flat.update(changes)
    return ResumePoint(C.build_config(flat), ckpt, path.parent)
