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
    from ..models import model_info, resolve_name

    name = resolve_name(model, depth, plain)
    check_positive(input_size, "--input-size")
    info = model_info(name)
    size = input_size or info.input_size

    from ..analysis import count_macs, module_rows, output_shapes, param_count, stage_rows
    from ..models import build_model

    net = build_model(name)
    macs = count_macs(net, size)
    shapes = output_shapes(net, size)
    rows = stage_rows(net, size, macs, shapes)
    details = module_rows(net, size, macs, shapes) if detail else []
    total = {"params": param_count(net), "macs": macs.macs, "bn_macs": macs.bn_macs}
    if json_out:
        out = {"model": name, "input_size": size, "family": info.family, "depth": info.depth,
               "stages": [r.as_dict() for r in rows], "total": total,
               "counted_ops": "conv + fc multiply-adds (BatchNorm in bn_macs)"}
        if detail:
            out["modules"] = [r.as_dict() for r in details]
        print_json(out)
        return

    from rich.table import Table

    title = f"{name} at {size}x{size} ({info.family} family, {info.depth} layers" + \
        (", no shortcuts)" if info.plain else ")")
    table = Table(title=title, show_footer=True)
    table.add_column("layer", footer="total")
    table.add_column("output size", justify="right")
    table.add_column("channels", justify="right")
    table.add_column("block")
    table.add_column("params", justify="right", footer=fmt_int(total["params"]))
    table.add_column("GMACs", justify="right", footer=f"{total['macs'] / 1e9:.3f}")
    for r in rows:
        c, h, w = r.output
        table.add_row(r.layer, f"{h}x{w}", str(c), r.block, fmt_int(r.params), f"{r.macs / 1e9:.3f}")
    out = console()
    out.print(table)
    out.print(f"Multiply-adds count conv + fc, as the paper's \"FLOPs\" do; "
              f"BatchNorm would add {fmt_g(total['bn_macs'])} G.")
    if detail:
        t = Table(title=f"{name}: every module")
        for col, j in [("module", "left"), ("type", "left"), ("output shape", "right"), ("params", "right"),
                       ("MACs", "right")]:
            t.add_column(col, justify=j)
        for r in details:
            shape = "x".join(map(str, r.output)) if r.output else "-"
            t.add_row("  " * (r.depth - 1) + r.name, r.type, shape, fmt_m(r.params), fmt_m(r.macs))
        out.print(t)
