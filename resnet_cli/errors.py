"""Known errors, and the one place that turns them into a message and an exit code (`describe`).

Commands raise these; the CLI (cli.py) prints `error: <message>` on one line of
stderr and exits with the code `describe` gives. Anything else is a bug, shown
with its traceback only under `--debug` (or RESNET_CLI_DEBUG=1).
"""

from __future__ import annotations

import re

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An error with a message a person can act on, and an exit code.

    Raised in a DataLoader worker, it comes back to the main process rebuilt by PyTorch as
    `type(message="Caught X in DataLoader worker process N.\nOriginal Traceback ...X: message")`: the rebuilt
    error keeps only the worker's message, so that it reads as it would have in the main process."""

    exit_code = EXIT_BAD_INPUT
    prefix = "error"

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(from_worker(message, type(self).__name__), *args)


class BadInput(CliError):
    """The user asked for something that cannot be done: exit 2."""


class CheckFailed(CliError):
    """A verification ran and failed (e.g. `flops --check`): exit 1."""

    exit_code = EXIT_CHECK_FAILED


class RunFailed(CliError):
    """A run could not go on (NaN loss, disk full): exit 1, state kept on disk."""

    exit_code = EXIT_CHECK_FAILED


class Interrupted(CliError):
    """A stop signal (Ctrl-C, SIGTERM, SIGUSR1): a checkpoint was saved at a step boundary; exit 128 + signal."""

    exit_code = EXIT_INTERRUPTED
    prefix = "interrupted"

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def from_worker(message: object, name: str) -> object:
    """The original message of an error `name` that a DataLoader worker raised (see CliError), else `message`."""
    if not isinstance(message, str) or not message.startswith(f"Caught {name} in DataLoader worker"):
        return message
    at = message.rfind(f"{name}: ")
    return message[at + len(name) + 2:].strip() if at >= 0 else message.splitlines()[0]


WORKER_DIED = re.compile(r"DataLoader worker \(pid\(?s?\)? ?([\d, ]+)\) (?:exited unexpectedly|is killed by signal: ?([^.]+))")


def _click():
    from typer._click import exceptions as click  # typer >= 0.26 (pyproject's bounds) vendors click

    return click


def is_usage_error(exc: BaseException) -> bool:
    """A command-line usage error (unknown option, bad value): never worth a traceback."""
    return isinstance(exc, _click().UsageError)


def lost_peer(exc: BaseException) -> bool:
    """A collective failed because another rank died (killed, out of memory, its node lost)."""
    if type(exc).__name__ in ("DistBackendError", "DistNetworkError"):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and "gloo" in text and ("Connection reset by peer" in text
                                                                 or "Connection closed by peer" in text)


def describe(exc: BaseException) -> tuple | None:
    """(message, exit code[, prefix]) for errors that are the user's or the machine's, not ours; None for a bug."""
    import errno

    click = _click()

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
    if lost_peer(exc):
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return (f"another process of this torchrun group stopped ({first}); under torchrun --max-restarts the group "
                "is started again, and --resume auto continues from last.pt", EXIT_CHECK_FAILED)
    died = WORKER_DIED.search(str(exc)) if isinstance(exc, RuntimeError) else None
    if died:
        how = f"killed by signal {died.group(2).strip()}" if died.group(2) else "it exited unexpectedly"
        return (f"a data-loading worker process (pid {died.group(1).strip()}) died ({how}): out of memory, or "
                "killed from outside; lower data.workers or the batch size, and for a run resume it with --resume",
                EXIT_CHECK_FAILED)
    if type(exc).__name__ == "OutOfMemoryError":
        return "out of device memory; try a smaller --batch-size", EXIT_CHECK_FAILED
    return None
