"""`resnet build`: build a registered model and write it as a checkpoint, TorchScript or torch.export file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..export import FORMATS
from ._common import (DepthOpt, ForceOpt, JsonOpt, ModelArg, PlainOpt, ShortcutOpt, check_positive, choices, echo,
                      fmt_int, print_json)


Format = choices("Format", ("checkpoint", *FORMATS[:2]))  # onnx files come from trained runs: `resnet export`


def build(
    model: ModelArg = None,
    depth: DepthOpt = None,
    plain: PlainOpt = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.", show_default=False)] = ...,
    num_classes: Annotated[Optional[int], typer.Option(
        "--num-classes", help="Classes \\[default: 1000 for ImageNet nets, 10 for CIFAR nets].",
        show_default=False)] = None,
    in_channels: Annotated[int, typer.Option("--in-channels", help="Input channels (1 for grayscale).")] = 3,
    zero_init_residual: Annotated[bool, typer.Option(
        "--zero-init-residual", help="Start each residual branch at zero (Goyal et al.).")] = False,
    shortcut: ShortcutOpt = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="checkpoint (state_dict + config), "
                                        "torchscript, or export (torch.export .pt2).")] = Format("checkpoint"),
    seed: Annotated[int, typer.Option("--seed", help="Seed for the initial weights.")] = 0,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Build a model and write it to a file; prints its parameters and the file size.

    Example: [bold]resnet build --depth 56 --num-classes 100 -o resnet56.pt[/bold]
    """
    from ..checkpoint import save_checkpoint
    from ..files import output_path
    from ..config import ModelConfig
    from ..models import model_info, resolve_name

    name = resolve_name(model, depth, plain)
    check_positive(num_classes, "--num-classes")
    check_positive(in_channels, "--in-channels")
    output = output_path(output, force)

    import torch

    from ..models import build_model

    torch.manual_seed(seed)
    arch = ModelConfig(name, num_classes or model_info(name).default_classes, in_channels,
                       zero_init_residual, shortcut=shortcut.value if shortcut else "").architecture()
    net = build_model(**arch).eval()
    params = sum(p.numel() for p in net.parameters())
    config = {"model": arch}
    if fmt.value == "checkpoint":
        from .. import __version__

        save_checkpoint(output, {"model": net.state_dict(), "config": config, "resnet_cli": __version__})
    else:
        from ..export import write_model

        size = model_info(name).input_size
        write_model(net, fmt.value, output, (size, size))  # any batch size; spatial size fixed at the native one
    result = {"model": name, "params": params, "format": fmt.value, "path": str(output),
              "bytes": output.stat().st_size, "config": config["model"]}
    if fmt.value == "torchscript":
        from ..export import TORCHSCRIPT_NOTE

        echo(TORCHSCRIPT_NOTE, err=True)
    if json_out:
        print_json(result)
    else:
        echo(f"wrote {output} ({fmt.value}): {name}, {fmt_int(params)} parameters, "
                   f"{result['bytes'] / 2**20:.1f} MiB")
