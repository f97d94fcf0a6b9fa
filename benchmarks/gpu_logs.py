"""Read the logs gpu_check.sh and gpu_speed.sh keep: a command's JSON document, or its JSON lines, by step name."""

from __future__ import annotations

import json
from pathlib import Path


def doc(logs: Path, name: str) -> dict:
    """`train --json`'s result line (JSON Lines: the result comes last), or a command's one JSON document."""
    text = _text(logs, name)
    for line in reversed(text.splitlines()):
        if line.startswith('{"event": "result"'):
            return json.loads(line)
    try:
        return json.loads(text[text.index("{"):])
    except ValueError:
        return {}


def json_lines(logs: Path, name: str) -> list[dict]:
    """Every line of a step's output that is one JSON object (a script printing one per measurement)."""
    found = []
    for line in _text(logs, name).splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
    return found


def _text(logs: Path, name: str) -> str:
    """A step's whole output ("" when the step never ran)."""
    path = Path(logs) / f"{name}.txt"
    return path.read_text(errors="replace") if path.exists() else ""
