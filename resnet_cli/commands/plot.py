"""`resnet plot`: the paper's training curves (dashed: train, bold: test) for one or more runs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ._common import ForceOpt, JsonOpt, console, print_json


class Metric(str, Enum):
    error = "error"
    loss = "loss"
    top1 = "top1"


class XAxis(str, Enum):
    epoch = "epoch"
    step = "step"


def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (each with metrics.csv and config.yaml).",
                                               show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Figure to write: .png, .svg or .pdf.")] = Path("curves.png"),
    metric: Annotated[Metric, typer.Option("--metric", help="error (1 - top-1, %), loss, or top1 (%).")]
    = Metric.error,
    x: Annotated[XAxis, typer.Option("--x", help="Plot against epochs or iterations.")] = XAxis.epoch,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Plot training curves as in the paper's Figure 6: dashed lines for training, bold for test.

    Example: [bold]resnet plot runs/deg-plain20 runs/deg-plain56 -o docs/degradation.png[/bold]
    """
    from ..figures import figure_format, need_matplotlib

    need_matplotlib()
    figure_format(output)
    from ..files import output_path

    output = output_path(output, force)
    from ..curves import draw, load_runs

    series = load_runs(runs)
    draw([("", series)], output, metric.value, x.value)
    m = metric.value
    summary = [{"run": s.run, "model": s.label, "epochs": s.rows[-1]["epoch"], "steps": s.rows[-1].get("step"),
                f"train_{m}": s.values("train", m)[-1], f"test_{m}": s.values("test", m)[-1],
                f"best_test_{m}": (max if metric is Metric.top1 else min)(s.values("test", m))}
               for s in series]
    if json_out:
        print_json({"png": str(output), "metric": metric.value, "x": x.value, "runs": summary})
        return
    from rich.table import Table

    unit = "" if metric is Metric.loss else " %"
    table = Table(title=f"final {metric.value}{unit}")
    for col in ("model", "epochs", "train", "test", "best test"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in summary:
        table.add_row(r["model"], str(r["epochs"]), f"{r[f'train_{metric.value}']:.2f}",
                      f"{r[f'test_{metric.value}']:.2f}", f"{r[f'best_test_{metric.value}']:.2f}")
    out = console()
    out.print(table)
    out.print(f"wrote {output}")
