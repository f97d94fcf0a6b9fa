"""Training curves as the paper draws them (Fig. 1, Fig. 6): dashed lines for training, bold for test, error in
percent against iterations or epochs. `resnet plot` and `resnet reproduce` draw through here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRICS = ("error", "loss", "top1")
AXES = ("epoch", "step")
YLABEL = {"error": "error (%)", "loss": "loss", "top1": "top-1 accuracy (%)"}


@dataclass
class Series:
    run: str  # the run folder
    label: str  # the model's name (with the folder's name where two runs share a model)
    rows: list[dict[str, Any]]  # metrics.csv

    def values(self, split: str, metric: str) -> list[float]:
        """train or test `metric` per row: error and top-1 in percent."""
        if metric == "loss":
            return [r[f"{split}_loss"] for r in self.rows]
        acc = [100 * r[f"{split}_top1"] for r in self.rows]
        return acc if metric == "top1" else [100 - a for a in acc]


def load_runs(runs: list[Path]) -> list[Series]:
    """Each run folder's metrics and model name; a folder that is not a run, or has no rows yet, is refused. Both
    files come through the gate (a run folder may come from anywhere): config.yaml as every config is read."""
    from .config import read_yaml
    from .errors import BadInput
    from .train.rundir import read_metrics

    series = []
    for run in runs:
        if not Path(run).is_dir():
            raise BadInput(f"{run} is not a run folder")
        rows = read_metrics(Path(run) / "metrics.csv")
        if not rows:
            raise BadInput(f"{run}/metrics.csv has no rows yet")
        config = Path(run) / "config.yaml"
        model = (read_yaml(config, "run config") if config.exists() or config.is_symlink() else {}).get("model")
        label = str(model.get("name") or Path(run).name) if isinstance(model, dict) else Path(run).name
        series.append(Series(str(run), label, rows))
    labels = [s.label for s in series]
    for s in series:  # two runs of the same model: tell them apart by folder
        if labels.count(s.label) > 1:
            s.label = f"{s.label} ({Path(s.run).name})"
    return series


def draw(panels: list[tuple[str, list[Series]]], output: Path, metric: str = "error", x: str = "epoch",
         title: str = "dashed: training, bold: test") -> None:
    """One panel per (title, series), side by side with a shared y axis, written to `output` (.png/.svg/.pdf)."""
    from .figures import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(8 if len(panels) == 1 else 5.5 * len(panels), 5),
                             sharey=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, series) in zip(axes[0], panels):
        for i, s in enumerate(series):
            xs = [r[x] for r in s.rows]
            color = colors[i % len(colors)]
            ax.plot(xs, s.values("train", metric), color=color, linewidth=0.9, linestyle="--")
            ax.plot(xs, s.values("test", metric), color=color, linewidth=2.4, label=s.label)
        ax.set_xlabel("iterations" if x == "step" else "epochs")
        ax.set_title(name or title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    axes[0][0].set_ylabel(YLABEL[metric])
    if len(panels) > 1 or panels[0][0]:  # named panels: the figure's title goes above them
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, 45 * len(panels) + 35)))
    fig.tight_layout()
    save_figure(fig, output)
