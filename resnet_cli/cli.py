"""The `resnet` command line: a Typer app whose commands live one per module in `commands/`.

Nothing here imports torch, so `resnet --help` stays fast. Errors from every
command pass through `ResnetGroup.main`, the one place that maps them to a
one-line message and an exit code (see errors.py).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click; older releases use the click package
    from typer._click import exceptions as click
except ImportError:  # pragma: no cover
    from click import exceptions as click  # type: ignore[no-redef]

from . import __version__
from .commands import bench as bench_cmd
from .commands import build as build_cmd
from .commands import eval as eval_cmd
from .commands import flops as flops_cmd
from .commands import gradflow as gradflow_cmd
from .commands import list as list_cmd
from .commands import plot as plot_cmd
from .commands import summary as summary_cmd
from .commands import train as train_cmd
from .errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_INTERRUPTED, CliError

_debug = {"on": False}


def _debugging() -> bool:
    return _debug["on"] or os.environ.get("RESNET_CLI_DEBUG", "") not in ("", "0")


def _fail(message: str, code: int, prefix: str = "error") -> None:
    if message:
        sys.stderr.write(f"{prefix}: {message}\n")
        sys.stderr.flush()
    sys.exit(code)


def _known(exc: BaseException) -> tuple | None:
    """Message and exit code for errors that are the user's or the machine's, not ours."""
    import errno

    if isinstance(exc, CliError):
        return str(exc), exc.exit_code, exc.prefix
    if type(exc).__name__ == "NoArgsIsHelpError":  # bare `resnet`: the help was the answer
        return "", 0
    if isinstance(exc, click.UsageError):
        msg = exc.format_message()
        if exc.ctx is not None:
            msg += f" (see `{exc.ctx.command_path} --help`)"
        return " ".join(msg.split()), EXIT_BAD_INPUT
    if isinstance(exc, click.ClickException):
        return " ".join(exc.format_message().split()), exc.exit_code
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"no space left on device{f' writing {exc.filename}' if exc.filename else ''}", EXIT_CHECK_FAILED
    if isinstance(exc, (PermissionError, IsADirectoryError, NotADirectoryError, FileNotFoundError)):
        return f"{exc.strerror or exc}: {exc.filename}", EXIT_BAD_INPUT
    if type(exc).__name__ == "OutOfMemoryError":
        return "out of device memory; try a smaller --batch-size", EXIT_CHECK_FAILED
    return None


class ResnetGroup(TyperGroup):
    """TyperGroup whose `main` turns known errors into one line on stderr and an exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any):
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except typer.Abort:
            _fail("aborted", EXIT_INTERRUPTED)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
            if _debugging() and not isinstance(exc, click.UsageError):
                raise
            known = _known(exc)
            if known is None:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                _fail(f"internal error: {type(exc).__name__}: {first[:300]} "
                      "(rerun with --debug for the traceback and report it)", EXIT_CHECK_FAILED)
            else:
                _fail(*known)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=ResnetGroup,
    name="resnet",
    help="Build, inspect, train, evaluate and profile ResNets (He et al., 2015).",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"resnet-cli {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks (also RESNET_CLI_DEBUG=1).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Build, inspect, train, evaluate and profile ResNets (He et al., 2015)."""
    _debug["on"] = debug


app.command("list")(list_cmd.list_models_cmd)
app.command("build")(build_cmd.build)
app.command("summary")(summary_cmd.summary)
app.command("flops")(flops_cmd.flops)
app.command("train")(train_cmd.train)
app.command("eval")(eval_cmd.eval_cmd)
app.command("plot")(plot_cmd.plot)
app.command("gradflow")(gradflow_cmd.gradflow)
app.command("bench")(bench_cmd.bench)


def main() -> None:
    app()
