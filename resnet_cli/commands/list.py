"""`resnet list [PATTERN]`: the registered models."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import JsonOpt, console, fmt_m, print_json


def list_models_cmd(
    pattern: Annotated[str, typer.Argument(help="Shell-style wildcard, e.g. 'resnet*' or 'plain5?'.")] = "*",
    json_out: JsonOpt = False,
) -> None:
    """List registered models: name, family, block, depth, parameters and native input size.

    Example: [bold]resnet list 'resnet*'[/bold]
    """
    from ..models import list_models, model_info

    rows = [model_info(name).as_dict() for name in list_models(pattern)]  # counted from the table: no torch
    if json_out:
        print_json(rows)
        return
    if not rows:
        console().print(f"no model matches {pattern!r}")
        return
    from rich.table import Table

    resnets = [r for r in rows if r["family"] != "reference"]
    reference = [r for r in rows if r["family"] == "reference"]
    for group, title, caption in (
            (resnets, f"{len(resnets)} models", "shortcut: the paper's option, as built unless --shortcut says "
             "(A: zero-pad, B: projection where shapes change, C: projection everywhere); plain: none. Params with "
             "the default classes (--json: exact)."),
            (reference, "reference models (the paper's Figure 3)", "not ResNets: for comparison")):
        if not group:
            continue
        table = Table(title=title, caption=caption or None)
        for col, justify in [("name", "left"), ("family", "left"), ("block", "left"), ("depth", "right"),
                             ("shortcut", "left"), ("params", "right"), ("input", "right")]:
            table.add_column(col, justify=justify, no_wrap=True)
        for r in group:
            table.add_row(r["name"], r["family"], r["block"], str(r["depth"]),
                          "plain" if r["plain"] else r["shortcut"], fmt_m(r["params"]), str(r["input_size"]))
        console().print(table)
