"""Figures: matplotlib checked for up front, drawn without a display, saved atomically as PNG.

`plot`, `gradflow --png` and `eval --confusion -o` all draw through here.
"""

from __future__ import annotations

import os

from .errors import BadInput
from .files import atomic_write


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


def save_png(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Write `fig` to `path` atomically, then close it."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        pyplot().close(fig)
