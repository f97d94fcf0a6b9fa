"""`resnet summary`: the paper's Table 1 for one model, read off the real module."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import (DepthOpt, InputSizeOpt, JsonOpt, ModelArg, PlainOpt, check_positive, console, fmt_g,
                      fmt_int, fmt_m, print_json)


def summary(
    model: ModelArg = None,
    depth: DepthOpt = None,
    plain: PlainOpt = False,
    input_size: InputSizeOpt = None,
    detail: Annotated[bool, typer.Option("--detail", help="Add a row per module.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show a model laid out as the paper's Table 1: output size, block, parameters and multiply-adds per stage.

    Output sizes come from running the model, so they follow --input-size.
    Multiply-adds count conv and fc layers, as the paper does (BatchNorm is left out).

    Example: [bold]resnet summary --depth 50[/bold]
    """
    from ..analysis import summarize
    from ..models import resolve_name

    check_positive(input_size, "--input-size")
    out = summarize(resolve_name(model, depth, plain), input_size, detail)
    if json_out:
        print_json({k: v for k, v in out.items() if k != "plain"})
        return

    from rich.table import Table

    name, size, total = out["model"], out["input_size"], out["total"]
    title = f"{name} at {size}x{size} ({out['family']} family, {out['depth']} layers" + \
        (", no shortcuts)" if out["plain"] else ")")
    table = Table(title=title, show_footer=True)
    table.add_column("layer", footer="total")
    table.add_column("output size", justify="right")
    table.add_column("channels", justify="right")
    table.add_column("block")
    table.add_column("params", justify="right", footer=fmt_int(total["params"]))
    table.add_column("GMACs", justify="right", footer=f"{total['macs'] / 1e9:.3f}")
    for r in out["stages"]:
        h, w = r["output_size"]
        table.add_row(r["layer"], f"{h}x{w}", str(r["channels"]), r["block"], fmt_int(r["params"]),
                      f"{r['macs'] / 1e9:.3f}")
    c = console()
    c.print(table)
    c.print(f"Multiply-adds count conv + fc, as the paper's \"FLOPs\" do; "
            f"BatchNorm would add {fmt_g(total['bn_macs'])} G.")
    if detail:
        t = Table(title=f"{name}: every module")
        for col, j in [("module", "left"), ("type", "left"), ("output shape", "right"), ("params", "right"),
                       ("MACs", "right")]:
            t.add_column(col, justify=j)
        for r in out["modules"]:
            shape = "x".join(map(str, r["output_shape"])) if r["output_shape"] else "-"
            t.add_row("  " * (r["depth"] - 1) + r["name"], r["type"], shape, fmt_m(r["params"]), fmt_m(r["macs"]))
        c.print(t)
