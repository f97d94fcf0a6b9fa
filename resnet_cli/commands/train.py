"""`resnet train`: train a model from a preset, a config file and flags; resume a run."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ._common import JsonOpt, console, print_json

def train(
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="A preset from presets/: cifar, cifar100, "
                                                   "degradation, fashion-mnist, finetune, imagenet, smoke.",
                                                   show_default=False)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="A YAML config file (sections model, data, "
                                                   "train, run).", show_default=False)] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override any key: --set train.lr=0.05 "
                                                      "(repeatable; wins over everything).", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registry name (model.name).",
                                                 show_default=False)] = None,
    depth: Annotated[Optional[int], typer.Option("--depth", "-d", help="Depth instead of --model.",
                                                 show_default=False)] = None,
    plain: Annotated[bool, typer.Option("--plain", help="The plain twin of --model/--depth.")] = False,
    epochs: Annotated[Optional[int], typer.Option("--epochs", "-e", show_default=False,
                                                  help="train.epochs")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", show_default=False,
                                                      help="train.batch_size")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", show_default=False, help="train.lr")] = None,
    init: Annotated[Optional[str], typer.Option("--init", show_default=False,
                                                help="model.init: start from these weights (a run folder, a "
                                                     "checkpoint, or a torchvision .pth); a new head when the "
                                                     "class count differs")] = None,
    freeze: Annotated[Optional[str], typer.Option("--freeze", show_default=False,
                                                  help="train.freeze: stages to keep fixed, comma-separated as "
                                                       "`resnet summary` names them (conv1,conv2_x,conv3_x)")] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", show_default=False,
                                                    help="data.data_dir \\[default: $RESNET_CLI_DATA or "
                                                         "~/.cache/resnet-cli]")] = None,
    device: Annotated[Optional[str], typer.Option("--device", show_default=False,
                                                  help="run.device: auto, cpu, cuda, cuda:N")] = None,
    run_dir: Annotated[Optional[str], typer.Option("--run-dir", show_default=False,
                                                   help="run.run_dir \\[default: runs]")] = None,
    name: Annotated[Optional[str], typer.Option("--name", show_default=False,
                                                help="run.name \\[default: <model>-<dataset>]")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", show_default=False, help="run.seed")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue a run from RUN_DIR/last.pt (or a "
                                                   "checkpoint file).", show_default=False)] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved config and exit.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a ResNet. Precedence: defaults < --preset < --config < flags < --set.

    Writes runs/<name>/ with config.yaml, metrics.csv, last.pt and best.pt (and TensorBoard events when the
    tensorboard extra is installed).

    Recipe keys (--set KEY=VALUE; each explained in resnet_cli/config.py and the README's "Training recipes"):
    train.optimizer=adamw, train.ema=0.999, data.mixup=0.2, data.cutmix=1.0, data.random_erasing=0.25,
    data.randaugment=2,9 (or trivial), data.val_split=5000, train.patience=N, train.accum_steps=K,
    train.warmup_length=400|2ep|5%.

    Example: [bold]resnet train --preset fashion-mnist --data-dir ../shared/data/fashion-mnist[/bold]

    Fine-tune: [bold]resnet train --preset finetune --init resnet18-f37072fd.pth --data-dir DIR --freeze conv1,conv2_x[/bold]
    """
    from .. import config as C
    from ..errors import BadInput
    from ..models import resolve_name

    if plain and model is None and depth is None:
        raise BadInput("--plain needs --model or --depth")
    model_name = resolve_name(model, depth, plain) if (model is not None or depth is not None) else None
    flags: dict[str, Any] = {"model.name": model_name, "train.epochs": epochs, "train.batch_size": batch_size,
                             "train.lr": lr, "data.data_dir": data_dir, "run.device": device,
                             "run.run_dir": run_dir, "run.name": name, "run.seed": seed, "model.init": init,
                             "train.freeze": [f.strip() for f in freeze.split(",") if f.strip()]
                             if freeze is not None else None}
    if resume is not None:
        _resume(resume, preset, config, flags, set_ or [], print_config, json_out)
        return
    cfg = C.resolve(preset, config, flags, set_)
    if print_config:
        typer.echo(C.to_yaml(cfg), nl=False)
        return
    with _distributed(cfg) as dist:
        from ..train.loop import Trainer

        trainer = Trainer(cfg, _progress(json_out, dist), dist)
        _report(trainer, trainer.open_run_dir(), json_out)


def _progress(json_out: bool, dist=None):
    from ..train.progress import Progress

    return Progress(enabled=not json_out and (dist is None or dist.is_main))


@contextmanager
def _distributed(cfg):
    """The torchrun process group for the duration of a command (None when not under torchrun)."""
    from ..train.distributed import from_env

    ctx = from_env(cfg.run.device)
    try:
        yield ctx
    finally:
        if ctx is not None:
            ctx.close()


def _resume(path: Path, preset, config_file, flags: dict, sets: list[str], print_config: bool,
            json_out: bool) -> None:
    from .. import config as C
    from ..errors import BadInput
    from ..train.resume import resume_point

    if preset or config_file:
        raise BadInput("--resume takes its config from the checkpoint; drop --preset/--config")
    point = resume_point(path, {**flags, **dict(C.parse_set(s) for s in sets)})
    if print_config:
        typer.echo(C.to_yaml(point.cfg), nl=False)
        return
    with _distributed(point.cfg) as dist:
        from ..train.loop import Trainer

        trainer = Trainer(point.cfg, _progress(json_out, dist), dist, resuming=True)
        trainer.load_state(point.checkpoint)
        run_path = point.run_dir
        if trainer.finished:
            why = (f"stopped early: no better {trainer.selection} for {trainer.cfg.train.patience} epochs"
                   if trainer.stopped_early
                   else "pass a larger --epochs to train further")
            msg = f"{run_path} is finished ({trainer.epoch} epochs, {trainer.step} steps); {why}"
            if not trainer.is_main:
                return
            if json_out:
                print_json({"run_dir": str(run_path), "finished": True, "message": msg})
            else:
                typer.echo(msg)
            return
        trainer.open_run_dir(run_path)
        trainer.progress.line(f"resuming {run_path} at epoch {trainer.epoch + 1} (step {trainer.step}), "
                              f"lr {trainer.planned_lr:.4g}")
        if trainer.schedule_rule:
            trainer.progress.line(f"run length {trainer.planned_total} -> {trainer.total_steps} steps: "
                                  f"{trainer.schedule_rule}; lr now {trainer.lr_at(trainer.step):.4g}")
        _report(trainer, run_path if trainer.is_main else None, json_out)


def _report(trainer, run_path: Path | None, json_out: bool) -> None:
    trainer.progress.line(f"run folder: {run_path}")
    if trainer.dist is not None:
        trainer.progress.line(f"torchrun: {trainer.world} process(es), {trainer.dist.backend}, global batch "
                              f"{trainer.cfg.train.batch_size} ({trainer.cfg.train.batch_size // trainer.world} "
                              "per process)")
    trainer.progress.line(f"{trainer.device}: {trainer.speed.describe()}")
    trainer.run()
    if not trainer.is_main:
        return
    last = trainer.rows[-1]
    best = trainer.best_row()
    result = {"run_dir": str(run_path), "model": trainer.cfg.model.name, "dataset": trainer.cfg.data.dataset,
              "epochs": trainer.epoch, "steps": trainer.step, "final": last, "best": best,
              "selected_by": trainer.selection, "stopped_early": trainer.stopped_early,
              "device": str(trainer.device), "processes": trainer.world, "precision": trainer.speed.precision,
              "channels_last": trainer.speed.channels_last, "compile": trainer.speed.compile,
              "wall_seconds": trainer.wall_seconds(), "target": trainer.target}
    if json_out:
        print_json(result)
        return
    from rich.table import Table

    from ..train.rundir import metric_fields

    table = Table(title=f"{trainer.cfg.model.name} on {trainer.cfg.data.dataset}: {trainer.epoch} epochs, "
                        f"{trainer.step} steps")
    shown = [f for f in metric_fields(trainer.cfg) if f.endswith("_top1") and not f.startswith("train")]
    table.caption = f"best: the epoch with the highest {trainer.selection} (best.pt)"
    for col in ("", "epoch", "train loss", "train top-1", *(f.replace("_top1", " top-1").replace("_", " ")
                                                              for f in shown), "img/s"):
        table.add_column(col, justify="left" if not col else "right")
    for label, r in (("final", last), ("best", best)):
        table.add_row(label, str(r["epoch"]), f"{r['train_loss']:.4f}", f"{r['train_top1']:.2%}",
                      *(f"{r[f]:.2%}" for f in shown),
                      f"{r['img_per_s']:,.0f}")
    out = console()
    out.print(table)
    if result["stopped_early"]:
        out.print(f"stopped early at epoch {trainer.epoch}: no better {trainer.selection} for "
                  f"{trainer.cfg.train.patience} epochs")
    goal = trainer.cfg.train.target_top1
    if goal:
        t = trainer.target
        out.print(f"time to {goal:.2%} {trainer.selection}: {t['seconds']:.1f} s (epoch {t['epoch']}, step {t['step']})"
                  if t else f"time to {goal:.2%} {trainer.selection}: not reached (best {best[trainer.selection]:.2%})")
    out.print(f"run folder: {run_path}")
