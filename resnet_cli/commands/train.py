"""`resnet train`: train a model from a preset, a config file and flags; resume a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional, get_args, get_type_hints

import typer

from .. import config as C
from ..terminal import plural
from ._common import TRAINED, ShortcutOpt, choices, console, echo, one_of

# Shorthands for common keys; each is one config key, named in its help (choices from the config's types).
Dataset = choices("Dataset", get_args(get_type_hints(C.DataConfig)["dataset"]))
Optimizer = choices("Optimizer", get_args(get_type_hints(C.TrainConfig)["optimizer"]))
Schedule = choices("Schedule", get_args(get_type_hints(C.TrainConfig)["schedule"]))
Precision = choices("Precision", get_args(C.Precision))
Tracker = choices("Tracker", C.TRACKERS)


def train(
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="A preset (`resnet presets` lists them, "
                                                   "with what each is for).",
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
    shortcut: ShortcutOpt = None,
    drop_path: Annotated[Optional[float], typer.Option("--drop-path", show_default=False,
                                                       help="model.drop_path: stochastic depth (0.05)")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", "-e", show_default=False,
                                                  help="train.epochs")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", show_default=False,
                                                 help="train.steps: stop after N optimizer steps instead of epochs")]
    = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", show_default=False,
                                                      help="train.batch_size")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", show_default=False, help="train.lr")] = None,
    init: Annotated[Optional[str], typer.Option("--init", show_default=False,
                                                help="model.init: start from these weights: "
                                                     + one_of(TRAINED + ("a torchvision .pth",))
                                                     + "; a new head when the class count differs")] = None,
    freeze: Annotated[Optional[str], typer.Option("--freeze", show_default=False,
                                                  help="train.freeze: stages to keep fixed, comma-separated as "
                                                       "`resnet summary` names them (conv1,conv2_x,conv3_x)")] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", show_default=False,
                                                    help="data.data_dir \\[default: $RESNET_CLI_DATA or "
                                                         "~/.cache/resnet-cli]; alone (no dataset named), its "
                                                         "dataset is recognised from the files")] = None,
    dataset: Annotated[Optional[Dataset], typer.Option("--dataset", show_default=False,
                                                       help="data.dataset")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-j", show_default=False,
                                                   help="data.workers (image folders)")] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", show_default=False,
                                                      help="data.image_size (image-folder crop; synthetic size)")]
    = None,
    opt: Annotated[Optional[Optimizer], typer.Option("--opt", show_default=False, help="train.optimizer")] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--wd", "--weight-decay", show_default=False,
                                                          help="train.weight_decay")] = None,
    sched: Annotated[Optional[Schedule], typer.Option("--sched", show_default=False, help="train.schedule")] = None,
    precision: Annotated[Optional[Precision], typer.Option("--precision", show_default=False,
                                                           help="train.precision")] = None,
    ema: Annotated[Optional[float], typer.Option("--ema", show_default=False,
                                                 help="train.ema (a decay such as 0.999; 0 = off)")] = None,
    label_smoothing: Annotated[Optional[float], typer.Option("--smoothing", "--label-smoothing", show_default=False,
                                                             help="train.label_smoothing")] = None,
    logger: Annotated[Optional[list[Tracker]], typer.Option("--logger", show_default=False,
                                                            help="train.loggers: log to this tracker too "
                                                                 "(repeatable; MLflow and W&B read their own "
                                                                 "environment)")] = None,
    device: Annotated[Optional[str], typer.Option("--device", show_default=False,
                                                  help="run.device: auto, cpu, cuda, cuda:N")] = None,
    run_dir: Annotated[Optional[str], typer.Option("--run-dir", show_default=False,
                                                   help="run.run_dir \\[default: runs]")] = None,
    name: Annotated[Optional[str], typer.Option("--name", show_default=False,
                                                help="run.name \\[default: <model>-<dataset>]")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", show_default=False, help="run.seed")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue a run from RUN_DIR/last.pt (or a "
                                                  "checkpoint file); auto: resume run_dir/name if it has a last.pt, "
                                                  "else start it there (one command line for restarts; run.resume).",
                                                  show_default=False)] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved config and exit.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="JSON Lines: an object per message, log interval "
                                           "and epoch, then the result.")] = False,
) -> None:
    """Train a ResNet. Precedence: defaults < --preset < --config < flags < --set.

    Writes runs/<name>/ with config.yaml, metrics.csv, last.pt and best.pt (and TensorBoard events when the
    tensorboard extra is installed; --logger mlflow, wandb or jsonl for more).

    Recipe keys (--set KEY=VALUE; each explained in resnet_cli/config.py and docs/training.md):
    train.optimizer=adamw (or lamb), train.ema=0.999, data.mixup=0.2, data.cutmix=1.0, data.random_erasing=0.25,
    data.randaugment=2,9 (or trivial, or timm's rand-m9-mstd0.5-inc1), data.aug_repeats=3, data.eval_image_size=224, data.val_split=5000,
    train.loss=bce, train.bce_threshold=0.2, model.drop_path=0.05, train.patience=N, train.accum_steps=K,
    train.warmup_length=400|2ep|5%.

    Example: [bold]resnet train --preset fashion-mnist --data-dir ../shared/data/fashion-mnist[/bold]

    Fine-tune: [bold]resnet train --preset finetune --init torchvision:resnet18 --data-dir DIR --freeze conv1,conv2_x[/bold]

    Restartable (torchrun --max-restarts, SLURM --requeue): [bold]resnet train --preset imagenet --name r50 --resume auto[/bold]
    """
    from ..errors import BadInput
    from ..models import resolve_name

    if plain and model is None and depth is None:
        raise BadInput("--plain needs --model or --depth")
    model_name = resolve_name(model, depth, plain) if (model is not None or depth is not None) else None
    flags: dict[str, Any] = {"model.name": model_name, "model.shortcut": shortcut, "model.drop_path": drop_path,
                             "train.epochs": epochs, "train.steps": steps,
                             "train.batch_size": batch_size,
                             "train.lr": lr, "data.data_dir": data_dir, "run.device": device,
                             "run.run_dir": run_dir, "run.name": name, "run.seed": seed, "model.init": init,
                             "train.freeze": [f.strip() for f in freeze.split(",") if f.strip()]
                             if freeze is not None else None,
                             "data.dataset": dataset, "data.workers": workers, "data.image_size": image_size,
                             "train.optimizer": opt, "train.weight_decay": weight_decay, "train.schedule": sched,
                             "train.precision": precision, "train.ema": ema, "train.label_smoothing": label_smoothing,
                             "train.loggers": [t.value for t in logger] if logger else None}
    flags = {k: v.value if hasattr(v, "value") else v for k, v in flags.items()}
    if resume == "auto":  # a new run's config, which a last.pt in run_dir/name, if any, must agree with
        flags["run.resume"], resume = "auto", None
    if resume is not None:
        from ..train.resume import resume_point

        if preset or config:
            raise BadInput("--resume takes its config from the checkpoint; drop --preset/--config")
        point = resume_point(Path(resume), {**flags, **dict(C.parse_set(s) for s in set_ or [])})
        cfg = point.cfg
    else:
        from ..data import identify_dataset

        point, cfg = None, C.resolve(preset, config, flags, set_, identify=identify_dataset)
    if print_config:  # the config the run would train: fitted to the data where it is here (never downloaded)
        from ..train.session import config_to_run

        cfg, note = config_to_run(cfg)
        if note:
            echo(note)
        typer.echo(C.to_yaml(cfg), nl=False)
        return
    from ..train.session import resume_run, train_run

    result = resume_run(point, json_lines=json_out) if point is not None else train_run(cfg, json_lines=json_out)
    if result is None:  # not rank 0: rank 0 reports
        return
    if json_out:  # JSON Lines: the progress events, then this
        from ..terminal import data_out

        typer.echo(json.dumps(result.as_json()), file=data_out())
    elif result.message:
        echo(result.message)
    else:
        _render(result)


def _render(r) -> None:
    """The final table: the last epoch and the selected one, each evaluation's top-1."""
    from rich.table import Table

    from ..train.evaluations import split_name

    def header(column: str) -> str:  # "ema_test_top1" -> "ema test top-1" (an image folder's: "ema val top-1")
        weights, _, split = column.removesuffix("_top1").rpartition("_")
        return " ".join(filter(None, (weights, split_name(r.dataset, split), "top-1")))

    table = Table(title=f"{r.model} on {r.dataset}: {plural(r.epochs, 'epoch')}, {plural(r.steps, 'step')}")
    folder = split_name(r.dataset, "test") != "test"
    table.caption = f"best: the epoch with the highest {r.selected_by} (best.pt)" + \
        ("; metrics.csv's test columns are the image folder's val split" if folder else "")
    for col in ("", "epoch", "train loss", "train top-1", *map(header, r.columns), "img/s"):
        table.add_column(col, justify="left" if not col else "right")
    for label, row in (("final", r.final), ("best", r.best)):
        table.add_row(label, str(row["epoch"]), f"{row['train_loss']:.4f}", f"{row['train_top1']:.2%}",
                      *(f"{row[c]:.2%}" for c in r.columns), f"{row['img_per_s']:,.0f}")
    out = console()
    out.print(table)
    if r.stopped_early:
        out.print(f"stopped early at epoch {r.epochs}: no better {r.selected_by} for {plural(r.patience, 'epoch')}")
    if r.goal:
        t = r.target
        out.print(f"time to {r.goal:.2%} {r.selected_by}: {t['seconds']:.1f} s (epoch {t['epoch']}, step {t['step']})"
                  if t else f"time to {r.goal:.2%} {r.selected_by}: not reached (best {r.best[r.selected_by]:.2%})")
    out.print(f"run folder: {r.run_dir}")
