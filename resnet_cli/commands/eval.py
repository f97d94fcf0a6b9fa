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
    from ..train.evaluate import evaluate_checkpoint

    out = evaluate_checkpoint(source, split=split.value, data_dir=data_dir, dataset=dataset, model=model, limit=limit,
                              batch_size=batch_size, device=device)
    if json_out:
        print_json(out)
        return
    from rich.table import Table

    c = console()
    c.print(f"{out['model']} on {out['dataset']} {out['split']} ({out['count']:,} images): loss {out['loss']:.4f}, "
            f"top-1 {out['top1']:.2%}, top-5 {out['top5']:.2%}, {out['img_per_s']:,.0f} img/s on {out['device']}")
    table = Table(title="per-class accuracy")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("top-1", justify="right")
    for row in out["per_class"]:
        table.add_row(row["class"], str(row["count"]), "-" if row["count"] == 0 else f"{row['accuracy']:.2%}")
    c.print(table)
