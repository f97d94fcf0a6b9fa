"""`resnet train` as one domain call: `train_run(cfg)` or `resume_run(point)` -> `RunResult`.

A session joins the process group (torchrun) or stands as one process, builds the run, restores a
checkpoint when resuming, opens the run folder, says how the run is set up, trains, and returns what the
command renders. Off rank 0 it returns None: rank 0 alone reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..terminal import plural
from .build import build_run
from .distributed import SingleProcess, from_env
from .evaluations import top1_columns
from .loop import Resumed, Trainer
from .progress import Progress
from .resume import ResumePoint, auto_point


@dataclass
class RunResult:
    """What a finished (or stopped) invocation of `resnet train` reports."""

    run_dir: str
    model: str
    dataset: str
    epochs: int
    steps: int
    final: dict | None  # the last metrics row
    best: dict | None  # the row best.pt holds
    selected_by: str  # its column
    stopped_early: bool
    device: str
    processes: int
    precision: str
    channels_last: bool
    compile: bool
    wall_seconds: float
    target: dict | None  # where train.target_top1 was reached
    cuda_graph_replays: int | None = None  # steps replayed from the CUDA graph in this invocation; None: graphs off
    goal: float = 0.0  # train.target_top1
    patience: int = 0  # train.patience
    columns: tuple[str, ...] = ()  # the evaluations' top-1 columns, for the table
    message: str = ""  # set when there was nothing to train: why (a finished run resumed)

    def as_json(self) -> dict[str, Any]:
        """The last line of `train --json` (after the progress events)."""
        if self.message:
            return {"event": "result", "run_dir": self.run_dir, "finished": True, "message": self.message}
        keys = ("run_dir", "model", "dataset", "epochs", "steps", "final", "best", "selected_by", "stopped_early",
                "device", "processes", "precision", "channels_last", "compile", "wall_seconds", "target",
                "cuda_graph_replays")
        return {"event": "result", **{k: getattr(self, k) for k in keys}}


def train_run(cfg: Config, quiet: bool = False, json_lines: bool = False) -> RunResult | None:
    """A new run of `cfg`, in a new run folder. `quiet`: no output; `json_lines`: progress as JSON Lines."""
    return _session(cfg, quiet, json_lines, None)


def resume_run(point: ResumePoint, quiet: bool = False, json_lines: bool = False) -> RunResult | None:
    """The run a checkpoint continues, in its own folder; a finished run is reported, not trained."""
    return _session(point.cfg, quiet, json_lines, point)


def config_to_run(cfg: Config) -> tuple[Config, str]:
    """The config `train_run(cfg)` would train (--print-config), and a note ("" when none): under run.resume auto
    with a last.pt in the run folder, the resumed run's; else fitted to the data (model.num_classes/in_channels,
    data.image_size/channels), when the data is here. --print-config never downloads: without the data, the
    config is printed unfitted, and the note says which keys the data will set."""
    if cfg.run.resume == "auto":
        point = auto_point(cfg, SingleProcess(torch.device("cpu")))
        if point is not None:
            return point.cfg, ""
    import dataclasses

    from ..config import fitted_keys
    from ..data import load_data
    from ..errors import BadInput

    try:
        data = load_data(dataclasses.replace(cfg.data, download=False))
    except BadInput:
        keys = ", ".join(sorted(fitted_keys(cfg))) or "none"
        return cfg, (f"# not fitted: {cfg.data.dataset} is not here (--print-config downloads nothing); the run "
                     f"sets {keys} from the data")
    return cfg.fitted(data.num_classes, data.channels, data.input.image_size[0]), ""


def _session(cfg: Config, quiet: bool, json_lines: bool, point: ResumePoint | None) -> RunResult | None:
    process = from_env(cfg.run.device)
    try:
        if point is None and cfg.run.resume == "auto":  # the same command line starts the run and resumes it
            point = auto_point(cfg, process)
            cfg = point.cfg if point is not None else cfg
        progress = Progress(enabled=not quiet and process.is_main, json_lines=json_lines)
        run = build_run(cfg, process, progress, resuming=point is not None)
        trainer = Trainer(run, progress)
        if point is not None:
            resumed = trainer.restore(point.checkpoint)
            if trainer.finished:
                return _already_finished(trainer, point.run_dir) if process.is_main else None
        try:
            run_dir = trainer.open_run_dir(point.run_dir if point is not None else None)
            if point is not None:
                _say_resumed(trainer, progress, point.run_dir, resumed)
            _say_setup(trainer, progress, run_dir)
            trainer.fit()
        finally:
            trainer.close()
        return _result(trainer) if process.is_main else None
    finally:
        process.close()


def _say_resumed(trainer: Trainer, progress: Progress, run_dir: Path, resumed: Resumed) -> None:
    step = trainer.state.step
    progress.line(f"resuming {run_dir} at epoch {trainer.state.epoch + 1} (step {step}), lr {resumed.lr:.4g}")
    if resumed.rule:
        progress.line(f"run length {resumed.planned_total} -> {trainer.run.plan.total_steps} steps: "
                      f"{resumed.rule}; lr now {trainer.lr_at(step):.4g}")


def _say_setup(trainer: Trainer, progress: Progress, run_dir: Path | None) -> None:
    run = trainer.run
    progress.line(f"run folder: {run_dir}")
    spread = run.process.describe(run.cfg.train.batch_size)
    if spread:
        progress.line(spread)
    progress.line(f"{run.device}: {run.speed.describe()}")


def _already_finished(trainer: Trainer, run_dir: Path) -> RunResult:
    why = (f"stopped early: no better {trainer.selection} for {trainer.cfg.train.patience} epochs"
           if trainer.rules.stopped_early(trainer.state) else "pass a larger --epochs to train further")
    message = f"{run_dir} is finished ({plural(trainer.state.epoch, 'epoch')}, {plural(trainer.state.step, 'step')}); {why}"
    result = _result(trainer, run_dir)
    result.message = message
    return result


def _result(trainer: Trainer, run_dir: Path | None = None) -> RunResult:
    run, state, cfg = trainer.run, trainer.state, trainer.cfg
    return RunResult(
        run_dir=str(run_dir or trainer.run_dir), model=cfg.model.name, dataset=cfg.data.dataset,
        epochs=state.epoch, steps=state.step, final=state.rows[-1] if state.rows else None,
        best=trainer.rules.best_row(state.rows), selected_by=trainer.selection,
        stopped_early=trainer.rules.stopped_early(state), device=str(run.device), processes=run.process.world,
        precision=run.speed.precision, channels_last=run.speed.channels_last, compile=run.speed.compile,
        wall_seconds=trainer.wall_seconds(), target=state.target,
        cuda_graph_replays=run.step.graph.replays if run.step.graph is not None else None, goal=cfg.train.target_top1,
        patience=cfg.train.patience, columns=tuple(top1_columns(cfg)))
