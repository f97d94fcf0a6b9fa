"""Read the logs gpu_check.sh and gpu_speed.sh keep: a command's JSON document, or its JSON lines, by step name."""

from __future__ import annotations

import json
from pathlib import Path


def doc(logs: Path, name: str) -> dict:
    """`train --json`'s result line (JSON Lines: the result comes last), or a command's one JSON document."""
    path = Path(logs) / f"{name}.txt"
    text = path.read_text(errors="replace") if path.exists() else ""
    for line in reversed(text.splitlines()):
        if line.startswith('{"event": "result"'):
            return json.loads(line)
    try:
        return json.loads(text[text.index("{"):])
    except ValueError:
        return {}


def json_lines(logs: Path, name: str) -> list[dict]:
    """Every line of a step's output that is one JSON object (a script printing one per measurement)."""
    path = Path(logs) / f"{name}.txt"
    found = []
    for line in (path.read_text(errors="replace") if path.exists() else "").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
    return found
