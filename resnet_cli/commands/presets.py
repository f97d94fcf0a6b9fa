"""`resnet presets`: the presets `resnet train --preset` takes, with what each is for."""

from __future__ import annotations

from ._common import JsonOpt, console, print_json


def presets_cmd(json_out: JsonOpt = False) -> None:
    """List the training presets and their descriptions.

    Example: [bold]resnet presets[/bold], then [bold]resnet train --preset NAME --print-config[/bold]
    """
    from ..config import preset_descriptions, presets_dir

    rows = [{"name": name, "description": text} for name, text in preset_descriptions().items()]
    if json_out:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} presets (in {presets_dir()})")
    table.add_column("name", no_wrap=True)
    table.add_column("description")
    for r in rows:
        table.add_row(r["name"], r["description"])
    console().print(table)
