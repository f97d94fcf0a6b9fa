"""`resnet summary`: the paper's Table 1 for one model, read off the real module."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._common import (DepthOpt, InChannelsOpt, InputSizeOpt, JsonOpt, ModelOrTrainedArg, NumClassesOpt, PlainOpt,
                      ShortcutOpt, check_positive, console, fmt_int, fmt_m, parse_input_size, print_json)


def summary(
    model: ModelOrTrainedArg = None,
    depth: DepthOpt = None,
    plain: PlainOpt = False,
    input_size: InputSizeOpt = None,
    num_classes: NumClassesOpt = None,
    in_channels: InChannelsOpt = None,
    shortcut: ShortcutOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Batch size for the memory estimate.")] = 1,
    detail: Annotated[bool, typer.Option("--detail", help="Add a row per module.")] = False,
    max_depth: Annotated[Optional[int], typer.Option("--max-depth", show_default=False,
                                                     help="With --detail: modules down to this nesting level "
                                                          "(1: stages and stem) \\[default: all].")] = None,
    device: Annotated[Optional[str], typer.Option("--device", show_default=False,
                                                  help="cuda or cuda:N: also measure one training step's peak "
                                                       "memory at --batch-size there.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a model laid out as the paper's Table 1: output size, block, parameters and multiply-adds per stage.

    MODEL is a registry name, or trained weights (the trained model, its class count included).
    Output sizes come from running the model, so they follow --input-size (S or HxW).
    Multiply-adds count conv and fc layers, as the paper does (BatchNorm is left out).
    Memory: parameters, forward activations for --batch-size, and a training estimate; with --device, one
    fp32 training step's peak, measured on that GPU.

    Example: [bold]resnet summary --depth 50[/bold]
    """
    from ..analysis import summarize
    from ..errors import BadInput
    from ..models import resolve_name

    size = parse_input_size(input_size)
    for value, what in ((num_classes, "--num-classes"), (in_channels, "--in-channels"), (batch_size, "--batch-size"),
                        (max_depth, "--max-depth")):
        check_positive(value, what)
    from ..checkpoint import names_weights

    if model is not None and depth is None and names_weights(model):
        source = model
    else:
        source = resolve_name(model, depth, plain)
    if max_depth is not None and not detail:
        raise BadInput("--max-depth limits the --detail view: add --detail")
    out = summarize(source, size, detail, plain, num_classes, in_channels, batch_size, max_depth, device,
                    shortcut.value if shortcut else "")
    if json_out:
        print_json({k: v for k, v in out.items() if k != "plain"})
        return

    from rich.table import Table

    name, total = out["model"], out["total"]
    size = out["input_size"]
    size = f"{size}x{size}" if isinstance(size, int) else "x".join(map(str, size))
    title = f"{name} at {size} ({out['family']} family, {out['depth']} layers" + \
        (", no shortcuts" if out["plain"] else f", shortcuts {out['shortcut']}") + f", {out['num_classes']} classes)"
    unit, scale = ("G", 1e9) if total["macs"] >= 1e9 else ("M", 1e6)  # a CIFAR net's stages in G would read 0.0xx
    places = 3 if unit == "G" else 2

    def stage_table(block) -> Table:
        table = Table(title=title, show_footer=True)
        table.add_column("layer", footer="total")
        table.add_column("output size", justify="right")
        table.add_column("channels", justify="right")
        table.add_column("block")
        table.add_column("params", justify="right", footer=fmt_int(total["params"]))
        table.add_column(f"{unit}MACs", justify="right", footer=f"{total['macs'] / scale:.{places}f}")
        for r in out["stages"]:
            h, w = r["output_size"]
            table.add_row(r["layer"], f"{h}x{w}", str(r["channels"]), block(r["block"]), fmt_int(r["params"]),
                          f"{r['macs'] / scale:.{places}f}")
        return table

    from rich.measure import Measurement

    c = console()
    table = stage_table(str)
    if Measurement.get(c, c.options.update_width(10_000), table).maximum > c.width:  # narrow: the paper's cells
        table = stage_table(stacked)
    c.print(table)
    c.print(f"Multiply-adds count conv + fc, as the paper's \"FLOPs\" do; "
            f"BatchNorm would add {total['bn_macs'] / scale:.{2 if unit == 'G' else 1}f} {unit}.")
    p, mem = out["params"], out["memory_bytes"]
    if out["checkpoint"]:
        c.print(f"from {out['checkpoint']}")
    c.print(f"Parameters: {fmt_int(p['total'])} ({fmt_int(p['trainable'])} trainable, {fmt_int(p['frozen'])} frozen). "
            f"Memory (fp32, batch {out['batch_size']}): parameters {mem['parameters'] / 2**20:.1f} MiB, forward "
            f"activations {mem['forward_activations'] / 2**20:.1f} MiB, training estimate "
            f"{mem['training_estimate'] / 2**20:.1f} MiB (weights, gradients, momentum, buffers, activations).")
    if "measured_training_peak" in mem:
        c.print(f"Measured on {out['device']}: one fp32 SGD step at batch {out['batch_size']} peaked at "
                f"{mem['measured_training_peak'] / 2**20:.1f} MiB (kernels' workspaces included).")
    if detail:
        t = Table(title=f"{name}: every module")
        for col, j in [("module", "left"), ("type", "left"), ("output shape", "right"), ("params", "right"),
                       ("MACs", "right")]:
            t.add_column(col, justify=j)
        for r in out["modules"]:
            shape = "x".join(map(str, r["output_shape"])) if r["output_shape"] else "-"
            t.add_row("  " * (r["depth"] - 1) + r["name"], r["type"], shape, fmt_m(r["params"]), fmt_m(r["macs"]))
        c.print(t)


def stacked(block: str) -> str:
    """A stage's block as the paper's Table 1 sets it, one convolution a line and the count beside the middle
    one ("[1x1, 64 ]", "[3x3, 64 ] x 3", "[1x1, 256]"), what follows (VGG's pool) on a line of its own; any
    other cell (the stem, a pool, the classifier) longer than those lines broken after its last comma."""
    import re

    found = re.fullmatch(r"\[(.+)\] x (\d+)(?:, )?(.*)", block)
    if found is None:
        head, comma, tail = block.rpartition(", ")
        return f"{head},\n{tail}" if comma and len(block) > 16 else block  # "[1x1, 1024] x 6" is 15
    convs, count, rest = found[1].split(" / "), found[2], found[3]
    width = max(map(len, convs))
    lines = [f"[{conv.ljust(width)}]" + (f" x {count}" if i == (len(convs) - 1) // 2 else "")
             for i, conv in enumerate(convs)]
    return "\n".join(lines + ([rest] if rest else []))
