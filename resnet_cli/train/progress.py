"""Progress output: a rich bar per epoch on a terminal, plain lines otherwise (CI, logs).

Under `train --json` the same events are JSON Lines on stdout instead: {"event": "message"|"progress"|
"epoch", ...}, one object per line, then the command's result. The bar moves with the host's own step count (no device sync: the steps are queued, the figures of a
log interval are read at its end) at most twice a second, and shows an ETA; plain lines carry the ETA
of the epoch at each log interval. A closed stdout (`resnet train ... | head`) ends the output, never
the run: it goes on writing its run folder.
"""

from __future__ import annotations

import contextlib
import sys
import time

from ..terminal import data_out, fit_fields, output_width, printable


def eta(elapsed: float, done: int, total: int) -> str:
    """Time left at the rate so far, as H:MM:SS (or M:SS); "-:--" before the first step."""
    if done <= 0 or elapsed <= 0:
        return "-:--"
    left = int(round(elapsed / done * max(total - done, 0)))
    h, rem = divmod(left, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def rich_bar(stats: bool = False, console=None):
    """A transient rich bar (not started): label, bar, done/total, the task's `stats` field when asked, time left.
    Training's epochs and evaluations, and the commands' `progress_bar`, all draw this one."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
        TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if stats:
        columns.append(TextColumn("{task.fields[stats]}"))
    return RichProgress(*columns, TimeRemainingColumn(), console=console, transient=True)


class Progress:
    def __init__(self, enabled: bool = True, force_plain: bool | None = None, json_lines: bool = False) -> None:
        self.enabled = enabled
        self.json = json_lines
        self.plain = json_lines or ((not sys.stdout.isatty()) if force_plain is None else force_plain)
        self._bar = None
        self._task = None
        self._moved = 0.0  # monotonic time of the bar's last move
        self._epoch = 0

    def _print(self, text: str) -> None:
        if not self.enabled:
            return
        try:
            print(printable(text), flush=True, file=data_out())  # under --json the real stdout
        except BrokenPipeError:  # the reader went away: stop printing, keep training
            self.closed()

    def closed(self) -> None:
        """stdout was closed: print nothing more (and let the interpreter's final flush find /dev/null)."""
        import os

        self.enabled = False
        self.end_epoch()
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), data_out().fileno())
        except (OSError, ValueError):
            pass

    def _event(self, kind: str, **fields) -> None:
        import json

        self._print(json.dumps({"event": kind, **fields}))

    def line(self, text: str) -> None:
        if self.json:
            self._event("message", text=text)
        else:
            self._print(text)

    def epoch(self, row: dict, fields: list[str]) -> None:
        """An epoch's metrics row: its fields on one line, broken between fields to fit a terminal (or $COLUMNS);
        the row itself under --json."""
        if self.json:
            self._event("epoch", **row)
        else:
            self._print(fit_fields(fields, output_width()))

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._t0 = time.perf_counter()
        self._epoch = epoch
        self._header = f"epoch {epoch}/{epochs}"
        if not self.enabled or self.plain:
            return
        self._bar = rich_bar(stats=True)
        self._bar.start()
        self._task = self._bar.add_task(self._header, total=steps, stats="")

    def advance(self, step_in_epoch: int) -> None:
        """Every step: move the bar (at most twice a second) from the host's step count."""
        if self._bar is None:
            return
        now = time.monotonic()
        if now - self._moved >= 0.5:
            self._moved = now
            self._bar.update(self._task, completed=step_in_epoch)

    def update(self, step_in_epoch: int, steps: int, loss: float, acc: float, lr: float, img_s: float,
               first: int = 0) -> None:
        """A log interval's figures; `first` is the epoch's first step in this process (a mid-epoch resume)."""
        stats = f"loss {loss:.4f}  acc {acc:.2%}  lr {lr:.4g}  {img_s:,.0f} img/s"
        if not self.enabled:
            return
        if self.json:
            elapsed, done = time.perf_counter() - self._t0, step_in_epoch - first
            self._event("progress", epoch=self._epoch, step_in_epoch=step_in_epoch, steps=steps, loss=loss,
                        top1=acc, lr=lr, img_per_s=img_s,
                        eta_seconds=round(elapsed / done * (steps - step_in_epoch), 1) if done > 0 else None)
        elif self.plain or self._bar is None:
            left = eta(time.perf_counter() - self._t0, step_in_epoch - first, steps - first)
            self._print(f"{self._header} step {step_in_epoch}/{steps}  {stats}  eta {left}")
        else:
            self._bar.update(self._task, completed=step_in_epoch, stats=stats)

    @contextlib.contextmanager
    def evaluation(self, label: str):
        """`with progress.evaluation("test") as on_batch:` a transient bar with an ETA while a split is evaluated,
        moved by `on_batch(done, total)` (the host's count); None in plain or JSON output."""
        if not self.enabled or self.plain:
            yield None
            return
        bar = rich_bar()
        task = bar.add_task(f"epoch {self._epoch} evaluating {label}", total=None)
        bar.start()

        def on_batch(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            yield on_batch
        finally:
            try:
                bar.stop()
            except BrokenPipeError:
                pass

    def end_epoch(self) -> None:
        if self._bar is not None:
            try:
                self._bar.stop()
            except BrokenPipeError:
                pass
            self._bar = None
