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
    """Plot training curves as the paper's Fig. 6 does: dashed lines for training, bold for test.

    Example: [bold]resnet plot runs/deg-plain20 runs/deg-plain56 -o docs/degradation.png[/bold]
    """
    from ..errors import BadInput
    from ..figures import figure_format, need_matplotlib

    need_matplotlib()
    figure_format(output)
    from ..files import output_path

    output = output_path(output, force)
    import yaml

    from ..train.rundir import read_metrics

    series = []
    for run in runs:
        if not run.is_dir():
            raise BadInput(f"{run} is not a run folder")
        rows = read_metrics(run / "metrics.csv")
        if not rows:
            raise BadInput(f"{run}/metrics.csv has no rows yet")
        try:
            label = (yaml.safe_load((run / "config.yaml").read_text()) or {})["model"]["name"]
        except (OSError, KeyError, TypeError, yaml.YAMLError):
            label = run.name
        series.append({"run": str(run), "label": label, "rows": rows})
    labels = [s["label"] for s in series]
    for s in series:  # two runs of the same model: tell them apart by folder
        if labels.count(s["label"]) > 1:
            s["label"] = f"{s['label']} ({Path(s['run']).name})"

    def values(rows, split):
        if metric is Metric.loss:
            return [r[f"{split}_loss"] for r in rows]
        acc = [100 * r[f"{split}_top1"] for r in rows]
        return acc if metric is Metric.top1 else [100 - a for a in acc]

    _draw(series, values, output, metric, x)
    summary = [{"run": s["run"], "model": s["label"], "epochs": s["rows"][-1]["epoch"],
                "steps": s["rows"][-1].get("step"), f"train_{metric.value}": values(s["rows"], "train")[-1],
                f"test_{metric.value}": values(s["rows"], "test")[-1],
                f"best_test_{metric.value}": (max if metric is Metric.top1 else min)(values(s["rows"], "test"))}
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


def _draw(series, values, output: Path, metric: Metric, x: XAxis) -> None:
    from ..figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(series):
        xs = [r[x.value] for r in s["rows"]]
        color = colors[i % len(colors)]
        ax.plot(xs, values(s["rows"], "train"), color=color, linewidth=0.9, linestyle="--")
        ax.plot(xs, values(s["rows"], "test"), color=color, linewidth=2.4, label=s["label"])
    ax.set_xlabel("iterations" if x is XAxis.step else "epochs")
    ax.set_ylabel({"error": "error (%)", "loss": "loss", "top1": "top-1 accuracy (%)"}[metric.value])
    ax.set_title("dashed: training, bold: test")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, output)
