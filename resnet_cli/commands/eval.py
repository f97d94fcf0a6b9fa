"""`resnet eval`: evaluate a checkpoint (or a run folder, or a bare state_dict) on a dataset split."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import JsonOpt, check_positive, console, print_json


class Split(str, Enum):
    test = "test"
    train = "train"


def eval_cmd(
    source: Annotated[Path, typer.Argument(help="A checkpoint file, or a run folder (its best.pt, else last.pt).",
                                           show_default=False)],
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", show_default=False,
                                                    help="Where the dataset is \\[default: as trained]")] = None,
    split: Annotated[Split, typer.Option("--split", help="Which split to evaluate.")] = Split.test,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Evaluation batch size.")] = 1024,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    model: Annotated[Optional[str], typer.Option("--model", "-m", show_default=False,
                                                 help="Model name, for a bare state_dict (e.g. torchvision's).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", show_default=False,
                                                   help="Dataset, for a bare state_dict \\[default: as trained].")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Evaluate the first N images only (0 = all).")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a checkpoint: loss, top-1, top-5, per-class accuracy and images/s.

    Example: [bold]resnet eval runs/resnet20-fashion-mnist --json[/bold]
    """
    check_positive(batch_size, "--batch-size")
    from ..checkpoint import is_full_checkpoint, load_checkpoint
    from ..errors import BadInput

    path = source
    if source.is_dir():
        path = source / "best.pt" if (source / "best.pt").exists() else source / "last.pt"
        if not path.exists():
            raise BadInput(f"{source} holds no best.pt or last.pt")
    ckpt = load_checkpoint(path)

    from .. import config as C
    from ..registry import resolve_name

    if is_full_checkpoint(ckpt):
        cfg = C.from_dict(ckpt["config"], f"config in {path}")
        state = ckpt["model"]
        if model is not None and resolve_name(model) != cfg.model.name:
            raise BadInput(f"{path} holds a {cfg.model.name}, not a {model}")
    else:  # a bare state_dict: the model comes from --model, the shapes from the weights
        if model is None:
            raise BadInput(f"{path} is a bare state_dict; say which model it is with --model")
        state = ckpt.get("state_dict", ckpt)
        try:
            num_classes, in_channels = int(state["fc.weight"].shape[0]), int(state["conv1.weight"].shape[1])
        except (KeyError, AttributeError, IndexError):
            raise BadInput(f"{path} does not look like a ResNet state_dict (no fc.weight / conv1.weight)") from None
        cfg = C.resolve(flags={"model.name": resolve_name(model), "model.num_classes": num_classes,
                               "model.in_channels": in_channels, "data.dataset": dataset or "cifar10"})
    flags = {"data.data_dir": data_dir, "data.dataset": dataset}
    flat = C.flatten(cfg.to_dict(), "config")
    flat.update({k: v for k, v in flags.items() if v is not None})
    flat["data.test_limit"] = limit
    flat["data.train_limit"] = limit if split is Split.train else 0
    cfg = C.build_config(flat)

    import torch

    from ..data import load_data, make_loader
    from ..device import default_channels_last, resolve_device
    from ..registry import build_model
    from ..train.evaluate import evaluate

    dev = resolve_device(device)
    data = load_data(cfg.data)
    if data.num_classes > cfg.model.num_classes:
        raise BadInput(f"{path} has {cfg.model.num_classes} outputs but {cfg.data.dataset} has "
                       f"{data.num_classes} classes")
    if data.in_channels != cfg.model.in_channels:
        raise BadInput(f"{path} expects {cfg.model.in_channels}-channel images; {cfg.data.dataset} has "
                       f"{data.in_channels}")
    net = build_model(cfg.model.name, num_classes=cfg.model.num_classes, in_channels=cfg.model.in_channels)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise BadInput(f"{path} does not fit {cfg.model.name}: {first}") from None
    nhwc = default_channels_last(dev)  # as in training: measured faster here (BENCHMARKS.md)
    net.to(dev, memory_format=torch.channels_last if nhwc else torch.preserve_format)
    loader = make_loader(data, cfg.data, split.value, batch_size, dev, training=False, channels_last=nhwc)
    precision = "bf16" if dev.type == "cuda" else "fp32"
    with torch.no_grad():
        res = evaluate(net, loader, cfg.model.num_classes, dev, precision)
    per_class = [{"class": name, "accuracy": acc, "count": n}
                 for name, acc, n in zip(data.classes, res.per_class, res.class_counts)]
    out = {"checkpoint": str(path), "model": cfg.model.name, "dataset": cfg.data.dataset, "split": split.value,
           "count": res.count, "loss": res.loss, "top1": res.top1, "top5": res.top5, "img_per_s": res.img_per_s,
           "device": str(dev), "precision": precision, "per_class": per_class}
    if json_out:
        print_json(out)
        return
    from rich.table import Table

    c = console()
    c.print(f"{cfg.model.name} on {cfg.data.dataset} {split.value} ({res.count:,} images): loss {res.loss:.4f}, "
            f"top-1 {res.top1:.2%}, top-5 {res.top5:.2%}, {res.img_per_s:,.0f} img/s on {dev}")
    table = Table(title="per-class accuracy")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("top-1", justify="right")
    for row in per_class:
        table.add_row(row["class"], str(row["count"]), "-" if row["count"] == 0 else f"{row['accuracy']:.2%}")
    c.print(table)
