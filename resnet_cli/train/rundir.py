"""Run folders: created atomically, auto-numbered, never overwritten; metrics written atomically."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..errors import BadInput
from ..files import atomic_write_text, ensure_writable_dir
from .evaluations import METRIC_FIELDS


def create_run_dir(parent: str | os.PathLike, name: str) -> Path:
    """Make `parent/name`, or `name-2`, `name-3`, ... if taken.

    `mkdir` is atomic, so two runs started at once with the same name get different folders.
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise BadInput(f"run name {name!r} must be a plain folder name")
    parent = ensure_writable_dir(parent)
    for i in range(1, 10_000):
        candidate = parent / (name if i == 1 else f"{name}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as e:
            raise BadInput(f"cannot create run folder {candidate}: {e.strerror}") from None
    raise BadInput(f"too many runs named {name!r} in {parent}")


def write_metrics(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    """metrics.csv with `fields` (default METRIC_FIELDS), then any other column a row has (grad_norm_*)."""
    fields = list(fields or METRIC_FIELDS)
    fields += sorted({k for r in rows for k in r if k not in fields})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.csv, numbers parsed."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise BadInput(f"no metrics.csv in {path.parent}") from None
    out = []
    for row in rows:
        parsed = {}
        for k, v in row.items():
            try:
                parsed[k] = int(v) if k in ("epoch", "step") else float(v)
            except (TypeError, ValueError):
                parsed[k] = v
        out.append(parsed)
    return out
