"""TensorBoard event files in the run folder, beside metrics.csv, with the same scalars (the library writes them).

`run.tensorboard: auto` writes them when the `tensorboard` package is installed (the `tensorboard` extra);
`on` makes its absence an error; `off` never writes. A resumed run purges the events after its resume step,
so a run stopped and resumed shows one clean curve.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput

EXTRA = 'pip install "resnet-cli[tensorboard]"'


def available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (raises without the tensorboard package)
    except ImportError:
        return False
    return True


def check(setting: str) -> bool:
    """Whether a run with `run.tensorboard: setting` writes events; `on` without the package is bad input."""
    if setting == "off":
        return False
    if available():
        return True
    if setting == "on":
        raise BadInput(f"run.tensorboard is on but the tensorboard package is not installed: {EXTRA}")
    return False


class Scalars:
    """Writes each metrics.csv row's numbers as scalars at the row's optimizer step."""

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def add(self, row: dict) -> None:
        for key, value in row.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, global_step=row["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
