"""Known errors, and the one place that turns them into a message and an exit code.

Commands raise these; `cli.main` prints `error: <message>` on one line of
stderr and exits with the code. Anything else is a bug, shown with its
traceback only under `--debug` (or RESNET_CLI_DEBUG=1).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An error with a message a person can act on, and an exit code."""

    exit_code = EXIT_BAD_INPUT
    prefix = "error"


class BadInput(CliError):
    """The user asked for something that cannot be done: exit 2."""


class CheckFailed(CliError):
    """A verification ran and failed (e.g. `flops --check`): exit 1."""

    exit_code = EXIT_CHECK_FAILED


class RunFailed(CliError):
    """A run could not go on (NaN loss, disk full): exit 1, state kept on disk."""

    exit_code = EXIT_CHECK_FAILED


class Interrupted(CliError):
    """Ctrl-C: a checkpoint was saved at a step boundary; exit 130."""

    exit_code = EXIT_INTERRUPTED
    prefix = "interrupted"
