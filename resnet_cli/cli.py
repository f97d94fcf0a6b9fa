"""The `resnet` command line: a Typer app whose commands live one per module in `commands/`.

Nothing here imports torch, so `resnet --help` stays fast. Errors from every
command pass through `ResnetGroup.main`, which prints the one line and exits
with the code that `errors.describe` gives them; under `--json` the error is
also printed as JSON on stdout: {"error": "...", "exit_code": N}.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from . import __version__
from .commands import bench as bench_cmd
from .commands import build as build_cmd
from .commands import data as data_cmd
from .commands import eval as eval_cmd
from .commands import export as export_cmd
from .commands import flops as flops_cmd
from .commands import gradflow as gradflow_cmd
from .commands import list as list_cmd
from .commands import plot as plot_cmd
from .commands import predict as predict_cmd
from .commands import presets as presets_cmd
from .commands import reproduce as reproduce_cmd
from .commands import summary as summary_cmd
from .commands import train as train_cmd
from .errors import EXIT_CHECK_FAILED, EXIT_INTERRUPTED, describe, is_usage_error
from .terminal import data_out, reflowed, reserved_stdout

_debug = {"on": False}


def _debugging() -> bool:
    return _debug["on"] or os.environ.get("RESNET_CLI_DEBUG", "") not in ("", "0")


def _fail(message: str, code: int, prefix: str = "error", as_json: bool = False) -> None:
    """The one line on stderr and the exit code; under --json also `{"error", "exit_code"}` on stdout."""
    if message:
        from .terminal import printable

        sys.stderr.write(f"{prefix}: {printable(message)}\n")
        sys.stderr.flush()
        if as_json:
            import json

            data_out().write(json.dumps({"error": message, "exit_code": code}) + "\n")
            data_out().flush()
    sys.exit(code)


def _set_hint(option: str) -> str:
    """`resnet train --momentum 0.8`: every config key is reachable with --set; name the one meant."""
    from .config import set_for_option

    target = set_for_option(option)
    if target is None:
        return "; any config key: --set SECTION.KEY=VALUE"
    key = target.split("=", 1)[0]
    return f"; to set {key}, use --set {target}"


class ResnetCommand(TyperCommand):
    """Every command's help as Click writes it: plain text wrapped to the terminal, option names and choices never
    cut, flags without a metavar, arguments in capitals (SOURCE), defaults in [brackets]. Set for every command
    below, in one place."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if getattr(param, "help", None):
                param.help = param.help.replace("\\[", "[")  # the escape rich mode needed before a bracket
            if isinstance(param, TyperArgument) and param.metavar is None:
                param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """`[OPTIONS] SOURCE [PATHS...]`: a required argument bare, an optional one in brackets, as Click writes
        them (Typer writes {source})."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                pieces.append(param.metavar if param.required else f"[{param.metavar}]")
        return pieces


class ResnetGroup(TyperGroup):
    """TyperGroup whose `main` turns known errors into one line on stderr and an exit code, and keeps stdout for
    the command's own output where a program reads it (--json, --csv: terminal.reserved_stdout)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any):
        args = list(sys.argv[1:] if args is None else args)
        as_json = "--json" in args
        _debug["on"] = "--debug" in args  # `resnet train ... --debug` as well as `resnet --debug train ...`
        args = [a for a in args if a != "--debug"]
        with reserved_stdout(as_json or "--csv" in args):  # stdout read by a program: our output alone
            self._run(args, as_json, prog_name=prog_name, complete_var=complete_var, **extra)

    def _run(self, args: list[str], as_json: bool, **extra: Any) -> None:
        try:
            rv = super().main(args=args, standalone_mode=False, **extra)
        except typer.Abort:
            _fail("aborted", EXIT_INTERRUPTED, as_json=as_json)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED, as_json=as_json)
        except BrokenPipeError:
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
            if _debugging() and not is_usage_error(exc):
                raise
            known = describe(exc)
            if known is not None and type(exc).__name__ == "NoSuchOption" and getattr(exc, "ctx", None) is not None \
                    and exc.ctx.command.name == "train":
                known = (known[0] + _set_hint(exc.option_name), *known[1:])
            if known is None:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                _fail(f"internal error: {type(exc).__name__}: {first[:300]} "
                      "(rerun with --debug for the traceback and report it)", EXIT_CHECK_FAILED, as_json=as_json)
            else:
                _fail(*known, as_json=as_json)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=ResnetGroup,
    name="resnet",
    help="Build, inspect, train, evaluate and profile ResNets (He et al., 2015).",
    rich_markup_mode=None,
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
    _debug["on"] = _debug["on"] or debug


app.command("list")(list_cmd.list_models_cmd)
app.command("build")(build_cmd.build)
app.command("presets")(presets_cmd.presets_cmd)
app.command("summary")(summary_cmd.summary)
app.command("flops")(flops_cmd.flops)
app.command("train")(train_cmd.train)
app.command("eval")(eval_cmd.eval_cmd)
app.command("export")(export_cmd.export_cmd)
app.command("predict")(predict_cmd.predict_cmd)
app.command("plot")(plot_cmd.plot)
app.command("gradflow")(gradflow_cmd.gradflow)
app.command("bench")(bench_cmd.bench)
app.command("reproduce")(reproduce_cmd.reproduce_cmd)
app.add_typer(data_cmd.app, name="data")
data_cmd.app.rich_markup_mode = None
for _info in (*app.registered_commands, *data_cmd.app.registered_commands):  # one place: help text the terminal wraps
    _info.help = reflowed(_info.help or _info.callback.__doc__ or "")
    _info.cls = ResnetCommand


def main() -> None:
    # DataLoader workers start from a fork server (data.loader.worker_context): a worker forked from a process
    # with threads can deadlock at birth. Set here, where the main module is this package's (guarded) entry.
    os.environ.setdefault("RESNET_CLI_WORKER_START", "forkserver")  # data.loader.WORKER_START_VAR (no torch here)
    app()
