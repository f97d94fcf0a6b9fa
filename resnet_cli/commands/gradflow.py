"""`resnet gradflow`: per-layer gradient norms at initialisation, plain nets beside ResNets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import ForceOpt, JsonOpt, PlainOpt, check_positive, console, print_json


def gradflow(
    models: Annotated[Optional[list[str]], typer.Argument(help="Models to compare, e.g. plain56 resnet56.",
                                                          show_default=False)] = None,
    depth: Annotated[Optional[list[int]], typer.Option("--depth", "-d", help="Depths instead of names "
                                                       "(repeatable).", show_default=False)] = None,
    plain: PlainOpt = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images in the one batch.")] = 128,
    data: Annotated[str, typer.Option("--dataset", "--data", help="synthetic, fashion-mnist, mnist, cifar10 or cifar100.")]
    = "synthetic",
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", show_default=False,
                                                    help="Where the dataset is.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the weights and the batch.")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu, auto, cuda or cuda:N: where the one "
                                        "forward/backward runs (fp32; the same weights and batch everywhere).")]
    = "cpu",
    png: Annotated[Optional[Path], typer.Option("--output", "-o", "--png", help="Also plot the norms to this file "
                                                "(.png, .svg or .pdf; needs "
                                                "matplotlib).", show_default=False)] = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Gradient norm of every conv layer at initialisation, on one batch, from input to output.

    Put a plain net beside its ResNet to see the vanishing gradient the paper's shortcuts fix.

    Example: [bold]resnet gradflow plain56 resnet56 --dataset fashion-mnist -o gradflow.png[/bold]
    """
    from ..errors import BadInput
    from ..models import name_for_depth, resolve_name

    check_positive(batch_size, "--batch-size")
    names = [resolve_name(m, None, plain) for m in models or []] + [name_for_depth(d, plain) for d in depth or []]
    if not names:
        raise BadInput("name at least one model (e.g. plain56 resnet56) or give --depth")
    if png is not None:
        from ..figures import figure_format, need_matplotlib

        need_matplotlib()
        figure_format(png)
        from ..files import output_path

        png = output_path(png, force)
    from ..gradflow import gradflow_report, sparkline

    results = gradflow_report(names, data, data_dir, batch_size, seed, device)
    if png is not None:
        _plot(results, png, data)
    if json_out:
        print_json({"data": data, "batch_size": batch_size, "seed": seed, "device": device, "models": results,
                    "png": str(png) if png else None})
        return
    _print(results, sparkline)
    if png is not None:
        console().print(f"wrote {png}")


def _print(results: list[dict], sparkline) -> None:
    from rich.table import Table

    norms = [layer["norm"] for r in results for layer in r["layers"] if layer["norm"] > 0]
    lo, hi = min(norms), max(norms)
    out = console()
    for r in results:
        table = Table(title=f"{r['model']}: gradient norm per conv layer at initialisation (loss {r['loss']:.3f})")
        for col, j in (("stage", "left"), ("layers", "right"), ("first", "right"), ("last", "right"),
                       ("min", "right"), ("max", "right"), ("per layer (log scale, shared)", "left")):
            table.add_column(col, justify=j)
        stages: dict[str, list[float]] = {}
        for layer in r["layers"]:
            stages.setdefault(layer["stage"], []).append(layer["norm"])
        for stage, vals in stages.items():
            table.add_row(stage, str(len(vals)), f"{vals[0]:.2e}", f"{vals[-1]:.2e}", f"{min(vals):.2e}",
                          f"{max(vals):.2e}", sparkline(vals, lo, hi))
        out.print(table)
        out.print(f"first conv / last conv gradient norm: {r['first_norm']:.3e} / {r['last_norm']:.3e} = "
                  f"{r['first_over_last']:.3g}")
    if len(results) > 1:
        base = results[-1]
        for r in results[:-1]:
            out.print(f"first-layer gradient norm, {r['model']} vs {base['model']}: "
                      f"{r['first_norm'] / base['first_norm']:.3g}x")


def _plot(results: list[dict], png: Path, data: str) -> None:
    from ..figures import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(8, 4.5))
    for r in results:
        ax.semilogy([layer["index"] for layer in r["layers"]], [layer["norm"] for layer in r["layers"]],
                    marker=".", label=r["model"])
    ax.set_xlabel("conv layer (input to output)")
    ax.set_ylabel("gradient norm of the weight")
    ax.set_title(f"Gradient flow at initialisation ({data}, one batch)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, png)
