"""`resnet list [PATTERN]`: the registered models; `--pretrained`: the published weights taken by name."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import JsonOpt, console, fmt_m, print_json


def list_models_cmd(
    pattern: Annotated[str, typer.Argument(help="Shell-style wildcard, e.g. 'resnet*' or 'plain5?'.")] = "*",
    pretrained: Annotated[bool, typer.Option(
        "--pretrained", help="List the published weights that eval, predict, export and train --init take by "
        "name (torchvision:NAME), with the accuracy their publisher reports and whether they are cached.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List registered models: name, family, block, depth, parameters and native input size.

    Example: [bold]resnet list 'resnet*'[/bold], [bold]resnet list --pretrained 'resnet50*'[/bold]
    """
    if pretrained:
        _list_pretrained(pattern, json_out)
        return
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


def _list_pretrained(pattern: str, json_out: bool) -> None:
    from .. import torchvision_weights as tv
    from ..models import model_info

    rows = tv.listing(pattern)
    if json_out:
        print_json(rows)
        return
    if not rows:
        console().print(f"no published weights match {pattern!r} (`resnet list --pretrained` lists them all)")
        return
    from rich.table import Table

    table = Table(title="torchvision's ImageNet-1k weights: give them as torchvision:NAME", caption=(
        "top-1/top-5: torchvision's published ImageNet-1k validation accuracy, not measured here (the 224 crop "
        "from `resize`, bilinear, as eval reads them). A name alone is torchvision's default (:v2 where there is "
        "one); :v1 reproduces the paper. Hub repos (hf-hub:ORG/NAME) are found on the Hub."))
    for col, justify in [("name", "left"), ("model", "left"), ("params", "right"), ("resize", "right"),
                         ("top-1", "right"), ("top-5", "right"), ("cached", "left")]:
        table.add_column(col, justify=justify, no_wrap=True)
    for r in rows:
        table.add_row(r["name"][len(tv.PREFIX):], r["model"], fmt_m(model_info(r["model"]).params),
                      str(r["resize"]), f"{r['top1']:.3%}", f"{r['top5']:.3%}", "yes" if r["cached"] else "no")
    console().print(table)
