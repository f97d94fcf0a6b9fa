"""`resnet list [PATTERN]`: the registered models."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import JsonOpt, console, fmt_int, print_json


def list_models_cmd(
    pattern: Annotated[str, typer.Argument(help="Shell-style wildcard, e.g. 'resnet*' or 'plain5?'.")] = "*",
    json_out: JsonOpt = False,
) -> None:
    """List registered models: name, family, block, depth, parameters and native input size.

    Example: [bold]resnet list 'resnet*'[/bold]
    """
    import torch

    from ..models import build_model, list_models, model_info

    rows = []
    for name in list_models(pattern):
        info = model_info(name)
        with torch.device("meta"):  # shapes only: no memory, no init cost
            params = sum(p.numel() for p in build_model(name).parameters())
        rows.append({**info.as_dict(), "params": params})
    if json_out:
        print_json(rows)
        return
    if not rows:
        console().print(f"no model matches {pattern!r}")
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} models")
    for col, justify in [("name", "left"), ("family", "left"), ("block", "left"), ("depth", "right"),
                         ("shortcuts", "left"), ("params", "right"), ("input", "right")]:
        table.add_column(col, justify=justify)
    for r in rows:
        shortcuts = "none (plain)" if r["plain"] else ("A: zero-pad" if r["family"] == "cifar" else "B: projection")
        table.add_row(r["name"], r["family"], r["block"], str(r["depth"]), shortcuts, fmt_int(r["params"]),
                      f"{r['input_size']}x{r['input_size']}")
    console().print(table)
