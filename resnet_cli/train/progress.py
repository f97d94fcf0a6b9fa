"""Progress output: a rich bar per epoch on a terminal, plain lines otherwise (CI, logs)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, enabled: bool = True, force_plain: bool | None = None) -> None:
        self.enabled = enabled
        self.plain = (not sys.stdout.isatty()) if force_plain is None else force_plain
        self._bar = None
        self._task = None

    def line(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._t0 = time.perf_counter()
        self._header = f"epoch {epoch}/{epochs}"
        if not self.enabled or self.plain:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
            TimeRemainingColumn

        self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), transient=True)
        self._bar.start()
        self._task = self._bar.add_task(self._header, total=steps, stats="")

    def update(self, step_in_epoch: int, steps: int, loss: float, acc: float, lr: float, img_s: float) -> None:
        stats = f"loss {loss:.4f}  acc {acc:.2%}  lr {lr:.4g}  {img_s:,.0f} img/s"
        if not self.enabled:
            return
        if self.plain or self._bar is None:
            print(f"{self._header} step {step_in_epoch}/{steps}  {stats}", flush=True)
        else:
            self._bar.update(self._task, completed=step_in_epoch, stats=stats)

    def end_epoch(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
