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
from .rundir import run_name

RESUMABLE = {"train.epochs", "train.steps", "run.device", "data.data_dir", "run.stop_after_epochs",
             "train.channels_last", "train.compile", "train.compile_mode", "train.compile_min_steps",
             "train.deterministic", "train.cuda_graphs", "train.checkpoint_every", "train.log_interval", "train.target_top1", "train.stop_at_target",
             "train.patience", "run.tensorboard", "train.loggers", "data.workers", "run.resume"}
# Where the run lives: --resume auto found the folder by them, so they agree by construction.
WHERE = {"run.run_dir", "run.name"}


@dataclass
class ResumePoint:
    cfg: C.Config  # the checkpoint's config with the allowed changes
    checkpoint: dict[str, Any]  # the training state to load (Trainer.load_state)
    run_dir: Path  # the run folder it continues


def resume_point(source: Path, changes: dict[str, Any], ckpt: dict[str, Any] | None = None) -> ResumePoint:
    """The run `source` (a run folder's last.pt, or a checkpoint file; `ckpt` when already loaded) continues,
    with `changes` ({dotted key: value}, None values ignored) applied where RESUMABLE allows."""
    try:
        path = checkpoint_file(source, prefer="last")
    except BadInput:
        raise BadInput(f"--resume {source}: no last.pt in that folder") from None
    ckpt = ckpt if ckpt is not None else load_checkpoint(path)
    if "optimizer" not in ckpt or "step" not in ckpt or not isinstance(ckpt.get("config"), dict):
        raise BadInput(f"--resume {path}: not a training checkpoint (no optimizer state)")
    changes = {k: v for k, v in changes.items() if v is not None}
    refused = sorted(set(changes) - RESUMABLE)
    if refused:
        raise BadInput(f"cannot change {', '.join(refused)} when resuming (only {', '.join(sorted(RESUMABLE))}); "
                       "start a new run instead")
    flat = C.flatten(ckpt["config"], f"config in {path}")
    from ..data.shard_source import refuse_saved_command

    refuse_saved_command(flat.get("data.data_dir", ""), changes.get("data.data_dir"), str(path))
    if flat.get("data.dataset") == "shards" and changes.get("data.workers", flat.get("data.workers")) \
            != flat.get("data.workers"):
        import sys

        print(f"note: data.workers {flat.get('data.workers')} -> {changes['data.workers']}: shards are dealt to "
              "workers by their number, so this epoch's remaining batches differ from the uninterrupted run's",
              file=sys.stderr, flush=True)
    flat.update(changes)
    return ResumePoint(C.build_config(flat), ckpt, path.parent)


def auto_point(cfg: C.Config, process) -> ResumePoint | None:
    """run.resume: auto. The run folder run_dir/name has a last.pt: the run it continues, with the command
    line's resumable keys applied (any other key that differs is one BadInput line naming them); no last.pt:
    None, a new run starts there. Rank 0 decides and the others follow; every rank must see the file (a run
    folder on a file system all nodes share), or all of them stop with one line."""
    folder = Path(cfg.run.run_dir) / run_name(cfg)
    last = folder / "last.pt"
    if not process.broadcast(last.is_file() if process.is_main else None):
        return None
    if process.max(int(not last.is_file())):
        raise BadInput(f"--resume auto: rank 0 found {last} but rank(s) of another node do not: put run.run_dir "
                       "on a file system every node shares (checkpoints are written by global rank 0)")
    ckpt = load_checkpoint(last)
    if not isinstance(ckpt.get("config"), dict):
        raise BadInput(f"--resume auto: {last} is not a training checkpoint")
    saved = C.flatten(C.from_dict(ckpt["config"], f"config in {last}").to_dict(), "checkpoint")
    given = C.flatten(cfg.to_dict(), "command line")
    differ = {k for k in given if given[k] != saved.get(k)} - WHERE - C.fitted_keys(cfg)  # fitted: the data's
    conflicts = sorted(differ - RESUMABLE)
    if conflicts:
        shown = ", ".join(f"{k} {saved.get(k)!r} (now {given[k]!r})" for k in conflicts[:4])
        raise BadInput(f"--resume auto: {folder} was started with other settings: {shown}"
                       f"{f' and {len(conflicts) - 4} more' if len(conflicts) > 4 else ''}; run the command it was "
                       "started with, or choose another --name")
    return resume_point(last, {k: given[k] for k in differ}, ckpt)
