"""Figures: matplotlib checked for up front, drawn without a display, saved atomically as PNG, SVG or PDF
(by the file's suffix).

`plot`, `gradflow -o` and `eval --confusion -o` all draw through here.
"""

from __future__ import annotations

import os

from .errors import BadInput
from .files import atomic_write


FORMATS = ("png", "svg", "pdf")


def figure_format(path: str | os.PathLike) -> str:
    """The format a figure file's suffix asks for; any other suffix is refused before the work is done."""
    suffix = os.path.splitext(str(path))[1].lower().lstrip(".")
    if suffix not in FORMATS:
        raise BadInput(f"{path}: a figure is written as {', '.join('.' + f for f in FORMATS)}; got "
                       f"{'.' + suffix if suffix else 'no suffix'}")
    return suffix


def need_matplotlib() -> None:
    """One line and exit 2 when the plot extra is missing, before any work is done."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BadInput('plots need matplotlib: pip install "resnet-cli[plot]"') from None


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    need_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Write `fig` to `path` atomically in the format its suffix names, then close it."""
    fmt = figure_format(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
    finally:
        pyplot().close(fig)
