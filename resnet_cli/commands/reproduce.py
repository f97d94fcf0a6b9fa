"""`resnet reproduce`: the paper's tables and figures in one resumable command (resnet_cli/reproduce.py)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import JsonOpt, console, echo, fmt_m, print_json

EXPERIMENT_HELP = ("table1 (multiply-adds, two counters), table3 (shortcut options A, B, C of ResNet-34), figure3 "
                   "(VGG-19 beside the 34-layer nets), table6 (CIFAR-10 error of ResNet-20..110), figure6 "
                   "(plain vs residual curves), figure1 (plain-20 vs plain-56), or all.")


def reproduce_cmd(
    experiment: Annotated[str, typer.Argument(help=EXPERIMENT_HELP, show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the runs, report.md and results.json; "
                                      "the same command again resumes there.")] = Path("reproduce"),
    dataset: Annotated[str, typer.Option("--dataset", help="cifar10 (the paper's), fashion-mnist (a labelled proxy) "
                                         "or synthetic (a smoke test).")] = "cifar10",
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", show_default=False,
                                                    help="Where the dataset is (else the cache, downloading).")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="table6: runs per depth (mean +- std over them).")] = 1,
    steps: Annotated[Optional[int], typer.Option("--steps", show_default=False,
                                                 help="Iterations per run instead of the paper's 64,000 "
                                                 "(milestones scaled alike).")] = None,
    scale: Annotated[Optional[float], typer.Option("--scale", show_default=False,
                                                   help="The paper's length times this (0.05: 3,200 iterations).")]
    = None,
    parallel: Annotated[int, typer.Option("--parallel", "-j", help="Runs at once: one GPU each where several are "
                                          "visible, else side by side on the device.")] = 1,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N, for every run.")] = "auto",
    with_110: Annotated[bool, typer.Option("--with-110", help="figure6: also plain-110 and ResNet-110.")] = False,
    depths: Annotated[Optional[str], typer.Option("--depths", show_default=False,
                                                  help="table6/figure6: only these depths, e.g. 20,56 "
                                                  "\\[default: all of the experiment's].")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="KEY=VALUE for every run (as train --set).",
                                                      show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train what the paper's tables and figures need, skip what is done, and write report.md and results.json.

    Every run is an ordinary run folder under OUT/runs (`resnet train --preset cifar` with run.resume=auto): an
    interrupted reproduction resumes where each run stopped, and nothing finished is trained twice.

    Example: [bold]resnet reproduce figure1 --dataset fashion-mnist --scale 0.05[/bold]
    """
    from ..errors import BadInput

    if steps is not None and scale is not None:
        raise BadInput("give --steps or --scale, not both")
    if steps is not None and not 0 < steps <= 64000:
        raise BadInput(f"--steps must be in 1..64000 (the paper's length), got {steps}")
    from ..reproduce import PAPER_STEPS, Options, parse_depths, reproduce

    opts = Options(experiment, out, dataset, data_dir, seeds,
                   steps / PAPER_STEPS if steps is not None else (1.0 if scale is None else scale),
                   parallel, device, with_110, list(sets or []), parse_depths(depths))
    view = _View(enabled=not json_out)
    command = shlex.join(["resnet", *sys.argv[1:]]) if sys.argv[1:2] == ["reproduce"] else \
        f"resnet reproduce {experiment}"
    with _sigterm_as_interrupt():
        try:
            with view:
                report = reproduce(opts, command, view.update)
        except KeyboardInterrupt:
            from ..errors import Interrupted

            raise Interrupted(f"stopped; every running run saved a checkpoint. Run the same command again to go on "
                              f"(runs in {out / 'runs'})") from None
    if json_out:
        print_json(report)
    else:
        _print(report, opts)
    if report["failed"]:
        from ..errors import RunFailed

        first = report["failed"][0]
        raise RunFailed(f"{len(report['failed'])} run(s) failed: {', '.join(f['run'] for f in report['failed'])}; "
                        f"first: {first['error']} (log: {first['log']})")


class _sigterm_as_interrupt:
    """SIGTERM (a scheduler stopping the job) stops the runs as Ctrl-C does: each saves a checkpoint first."""

    def __enter__(self):
        import signal
        import threading

        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


class _View:
    """Every run with its state and ETA: a live table on a terminal, a line per change otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.live = None
        self.said: dict[str, str] = {}

    def __enter__(self):
        if self.enabled and sys.stdout.isatty():
            from rich.live import Live

            self.live = Live(console=console(), refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, statuses) -> None:
        if not self.enabled:
            return
        if self.live is not None:
            self.live.update(self._table(statuses))
            return
        for st in statuses:
            text = st.state + (" (resumed)" if st.resumed and st.state == "running" else "")
            if st.state == "failed":
                text += f": {st.error}"
            if self.said.get(st.spec.name) != text:
                self.said[st.spec.name] = text
                if st.state != "waiting":
                    echo(f"{st.spec.name}: {text}")

    @staticmethod
    def _table(statuses):
        from rich.table import Table

        table = Table(title="reproduce: runs")
        for col in ("run", "state", "epoch", "step", "eta"):
            table.add_column(col, justify="left" if col in ("run", "state") else "right", no_wrap=True)
        for st in statuses:
            table.add_row(st.spec.name, st.state, str(st.epoch or "-"),
                          f"{st.step:,}/{st.total:,}" if st.state == "running" else "-", st.eta())
        return table


def _print(report: dict, opts) -> None:
    from rich.table import Table

    from ..reproduce import duration

    c = console()
    note = f" ({report['note']})" if report["note"] else ""
    if "table1" in report:
        t = Table(title="Table 1: GMACs at 224x224")
        for col in ("model", "fvcore", "FlopCounter", "paper", "dev."):
            t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
        for r in report["table1"]:
            t.add_row(r["model"], f"{r['gmacs']:.3f}", f"{r['gmacs_second_counter']:.3f}",
                      "-" if r["paper_gmacs"] is None else f"{r['paper_gmacs']:.1f}",
                      "-" if r["deviation"] is None else f"{r['deviation']:+.1%}")
        c.print(t)
    if "table3" in report:
        t = Table(title="Table 3: shortcuts of the 34-layer net")
        for col in ("model", "params", "GMACs", "top-1 err.", "top-5 err."):
            t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
        for r in report["table3"]:
            t.add_row(r["model"], fmt_m(r["params"]), f"{r['gmacs']:.3f}", f"{r['paper_top1_error']:.2f}",
                      f"{r['paper_top5_error']:.2f}")
        c.print(t)
        c.print("Errors: the paper's ImageNet results (10-crop), quoted, not trained here. A: zero-padding, B: "
                "projections where dimensions increase, C: projections everywhere.")
    if "figure3" in report:
        t = Table(title="Figure 3: VGG-19 and the 34-layer nets")
        for col in ("model", "layers", "params", "GMACs", "paper", "of VGG-19"):
            t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
        for r in report["figure3"]:
            t.add_row(r["model"], str(r["layers"]), fmt_m(r["params"]), f"{r['gmacs']:.3f}",
                      f"{r['paper_gmacs']:.1f}", f"{r['share_of_vgg19']:.1%}")
        c.print(t)
        c.print("The paper: the 34-layer nets' 3.6 billion multiply-adds are 18% of VGG-19's 19.6 billion.")
    if "table6" in report:
        t = Table(title=f"Table 6: test error %{note}")
        for col in ("model", "runs", "ours", "paper", "akamaster", "time/run"):
            t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
        for r in report["table6"]:
            std = "" if r["error_std"] is None else f" ± {r['error_std']:.2f}"
            t.add_row(r["model"], str(r["runs"]), f"{r['error_mean']:.2f}{std}", f"{r['paper']:.2f}",
                      f"{r['akamaster']:.2f}", duration(r["wall_seconds_per_run"]))
        c.print(t)
        c.print("ours: best epoch on 5k validation images; akamaster: all 50k for training, best epoch on the test set.")
    for exp in ("figure6", "figure1"):
        if exp in report:
            f = report[exp]
            errs = ", ".join(f"{m} {e:.2f}%" for m, e in f["final_test_error"].items())
            c.print(f"{exp}: {f['png']} (final test error: {errs})")
    c.print(f"report: {opts.out / 'report.md'}; numbers: {opts.out / 'results.json'}")
