"""Option types and output helpers shared by the commands (no torch here)."""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..device import DEVICE_CHOICES  # no torch there
from ..trust import TRUST_FLAG  # no torch there

MODEL_HELP = "Registry name, e.g. resnet50, resnet50-v1.5, resnet56, plain20 (see `resnet list`)"
# What every command that loads trained weights takes (checkpoint.checkpoint_file, weights.weights_file,
# torchvision_weights), and what eval, predict and bench also run in its own runtime (exported.py)
TRAINED = ("a run folder (its best.pt, else last.pt)", "a checkpoint", "a .safetensors file", "a Hub repo folder",
           "hf-hub:ORG/NAME", "torchvision:resnet50 (torchvision's weights by name)")
EXPORTED = "an .onnx or .pt2 file from resnet export"


def one_of(items: tuple[str, ...], first: bool = False) -> str:
    text = ", ".join(items[:-1]) + " or " + items[-1]
    return text[0].upper() + text[1:] if first else text


ModelArg = Annotated[Optional[str], typer.Argument(help=MODEL_HELP + ".", show_default=False)]
ModelOrTrainedArg = Annotated[Optional[str], typer.Argument(
    help=f"{MODEL_HELP}; or {one_of(TRAINED)} (the trained model).", show_default=False)]
ModelOrExportedArg = Annotated[Optional[str], typer.Argument(help=f"{MODEL_HELP}; or {EXPORTED}.",
                                                             show_default=False)]
TrainedArg = Annotated[Path, typer.Argument(help=f"{one_of(TRAINED, True)}; or a bare state_dict with "
                                            "--model.", show_default=False)]
TrainedOrExportedArg = Annotated[Path, typer.Argument(
    help=f"{one_of(TRAINED + (EXPORTED,), True)}; or a bare state_dict with --model.", show_default=False)]
DeviceOpt = Annotated[str, typer.Option("--device", help=f"{DEVICE_CHOICES}.")]
DepthOpt = Annotated[Optional[int], typer.Option(
    "--depth", "-d", help="Depth instead of a name: 18/34/50/101/152 (ImageNet) or 20/32/44/56/110/1202 (CIFAR).",
    show_default=False)]
PlainOpt = Annotated[bool, typer.Option("--plain", help="The plain twin: same net with no shortcuts.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the output file if it exists (a run's "
                                        "last.pt/best.pt never).")]
TrustExportedOpt = Annotated[bool, typer.Option(TRUST_FLAG, help="Load a .pt2 file that resnet export did "
                                                "not write for you: loading one runs code from it (torch.export "
                                                "unpickles it), so only a file whose source you trust.")]
InputSizeOpt = Annotated[Optional[str], typer.Option(
    "--input-size", "-s", help="S, or HxW for other shapes \\[default: the model's native size, 224 or 32].",
    show_default=False)]

def _shortcut_choice():
    from ..models.registry import SHORTCUT_OPTIONS  # the registry imports no torch

    return choices("Shortcut", SHORTCUT_OPTIONS)


NumClassesOpt = Annotated[Optional[int], typer.Option(
    "--num-classes", help="Classes of a registry model \\[default: 1000 or 10].", show_default=False)]
InChannelsOpt = Annotated[Optional[int], typer.Option(
    "--in-channels", help="Input channels of a registry model \\[default: 3].", show_default=False)]


def choices(name: str, values) -> type[Enum]:
    """A Typer choice type from a choice list written elsewhere once (a config `Literal`'s values, a tuple):
    members named and valued by the choices, in their order."""
    return Enum(name, [(v, v) for v in values], type=str)


def parse_input_size(text: str | None) -> int | tuple[int, int] | None:
    """`--input-size`: "224" -> 224, "160x224" -> (160, 224) (height x width); "224x224" -> 224."""
    from ..errors import BadInput

    if text is None:
        return None
    try:
        parts = [int(v) for v in str(text).lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise BadInput(f"--input-size: expected S or HxW, e.g. 224 or 160x224, got {text!r}")
    from ..data.inputs import MAX_IMAGE_SIDE

    if min(parts) <= 0 or max(parts) > MAX_IMAGE_SIDE:
        raise BadInput(f"--input-size must be 1..{MAX_IMAGE_SIDE} pixels a side: S or HxW, got {text!r}")
    return parts[0] if parts[0] == parts[-1] else (parts[0], parts[1])


def console():
    """A rich console; wide and colourless when stdout is not a terminal, so tables don't wrap in logs; control
    characters in what it prints are shown, not sent (terminal.printable).

    Markup is off: what we print (paths, model names, error text) is data, and "runs/a[1]" must stay whole.
    """
    from ..terminal import safe_console

    if sys.stdout.isatty():
        return safe_console(markup=False)
    return safe_console(width=int(os.environ.get("COLUMNS", 0)) or 160, no_color=True, highlight=False, markup=False,
                        force_terminal=False)


def echo(text: str, err: bool = False) -> None:
    """One line of output, its control characters shown, not sent (terminal.printable)."""
    import typer

    from ..terminal import printable

    typer.echo(printable(text), err=err)


def print_json(obj: Any) -> None:
    from ..terminal import data_out

    typer.echo(json.dumps(obj, indent=2), file=data_out())


def check_positive(value: int | float | None, what: str) -> None:
    from ..errors import BadInput

    if value is not None and value <= 0:
        raise BadInput(f"{what} must be positive, got {value}")


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fmt_m(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(int(n))


PLAIN_EVERY = 30.0  # seconds between plain progress lines where stderr is not a terminal (a log, CI)


class progress_bar:
    """`with progress_bar("classifying", quiet) as update:` a bar on stderr with an ETA, moved by `update(done,
    total)` (the work's own count, so no device sync), on a terminal; elsewhere (a log, CI, a SLURM job) plain
    lines on stderr, at most one every PLAIN_EVERY seconds, so a short command prints none and a long one (`data
    convert`, `data imagenet`) is seen moving. `update` is None when quiet. Transient: the result replaces the
    bar."""

    def __init__(self, label: str, quiet: bool = False) -> None:
        self.label, self.quiet, self.plain = label, quiet, not sys.stderr.isatty()
        self.bar = self.task = None
        self.first: tuple[float, int] | None = None  # (when, done) at the first update: the rate is from there
        self.said = 0.0

    def __enter__(self):
        return None if self.quiet else self.update

    def update(self, done: int, total: int) -> None:
        if self.plain:
            self._line(done, total)
            return
        if self.bar is None:
            from rich.console import Console

            from ..train.progress import rich_bar

            self.bar = rich_bar(console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total)
        self.bar.update(self.task, completed=done, total=total)

    def _line(self, done: int, total: int) -> None:
        import time

        now = time.monotonic()
        if self.first is None:
            self.first, self.said = (now, done), now
            return
        if now - self.said < PLAIN_EVERY or done >= total:
            return
        from ..train.progress import eta

        self.said = now
        share = f" ({done / total:.0%})" if total > 0 else ""
        left = eta(now - self.first[0], done - self.first[1], total - self.first[1])
        sys.stderr.write(f"{self.label}: {done:,}/{total:,}{share}, eta {left}\n")
        sys.stderr.flush()

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


ShortcutOpt = Annotated[Optional[_shortcut_choice()], typer.Option(
    "--shortcut", help="Shortcuts (paper 3.3, Table 3): A zero-padding, B projections where shapes change, C "
    "projections everywhere \\[default: the paper's, B for ImageNet nets, A for CIFAR].", show_default=False)]
