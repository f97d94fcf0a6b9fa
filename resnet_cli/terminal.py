"""Text that came from outside (file and folder names, class names, checkpoint contents, error text) made safe to
print: terminal control characters (escape sequences, bells, carriage returns, C1 codes) are shown as `\\x1b`,
never sent to the terminal. Newlines and tabs stay. JSON output needs nothing: json.dumps escapes them itself."""

from __future__ import annotations

import contextlib
import functools
import re
import sys

# control characters, and the lone surrogates by which Python keeps the bytes of a non-UTF-8 file name
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\udc80-\udcff]")


def _shown(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00 if code >= 0xDC80 else code:02x}"


def printable(text: str) -> str:
    """`text` with control characters shown as \\x1b and a non-UTF-8 file name's bytes as \\xff: printable on any
    terminal, a strict UTF-8 one included."""
    return _UNPRINTABLE.sub(_shown, text)


_data_out: list = []  # the real stdout, while a command's output on it is read by a program (reserved_stdout)


@contextlib.contextmanager
def reserved_stdout(on: bool):
    """Under --json (and predict's --csv) a program reads stdout, and it carries our output alone: for the
    command's run `sys.stdout` is stderr, so that what a dependency prints (onnxscript's exporter counts its
    rewrite rules on stdout) reaches the terminal, not the parser. `data_out()` is the real stdout, for the
    JSON (cli._fail, print_json, train's JSON Lines) and the CSV."""
    if not on:
        yield
        return
    real = sys.stdout
    _data_out.append(real)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = real
        _data_out.pop()


def data_out():
    """Where machine-read output goes: the real stdout (reserved_stdout), else stdout."""
    return _data_out[-1] if _data_out else sys.stdout


@functools.cache
def _safe_console_class():
    from rich.console import Console

    class SafeConsole(Console):
        def render_str(self, text: str, **kwargs):
            return super().render_str(printable(text), **kwargs)

    return SafeConsole


def safe_console(**options):
    """A rich Console whose every string (printed, or a table cell) goes through `printable` first."""
    return _safe_console_class()(**options)


def output_width() -> int | None:
    """Columns to fit on stdout: the terminal's (or $COLUMNS when set, as rich reads it); None for a file or pipe
    with no $COLUMNS, where a line is never broken (logs stay one line per event)."""
    import os
    import shutil

    if "COLUMNS" not in os.environ and not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def fit_fields(fields: list[str], width: int | None, indent: str = "  ", sep: str = "  ") -> str:
    """`fields` joined by `sep` into lines of at most `width` columns, broken only between fields (never inside
    a number or a name); continuation lines start with `indent`. A field longer than a line keeps a line."""
    if width is None:
        return sep.join(fields)
    lines: list[str] = []
    line = ""
    for field in fields:
        if line and len(line) + len(sep) + len(field) > width:
            lines.append(line)
            line = indent + field
        else:
            line = line + sep + field if line else field
    lines.append(line)
    return "\n".join(lines)


def reflowed(text: str) -> str:
    """A docstring as `--help` text that the terminal wraps: a line that does not end a sentence (. : ! ?) runs
    on into the next, so the source's own line breaks never leave a ragged line at 80 columns; paragraphs and
    lines that end a sentence stay as written (Typer's rich mode keeps single newlines)."""
    import inspect

    out: list[str] = []
    text = re.sub(r"\[/?(bold|dim|italic)\]", "", text).replace("\\[", "[")  # plain text: no markup to show
    for line in inspect.cleandoc(text).splitlines():
        line = line.strip()
        if out and line and out[-1] and out[-1][-1] not in ".:!?":
            out[-1] += " " + line
        else:
            out.append(line)
    return "\n".join(out)


def plural(n: int, word: str, many: str = "") -> str:
    """`1 epoch`, `2 epochs`, `1,000 images`: a count and its noun, agreeing."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"
