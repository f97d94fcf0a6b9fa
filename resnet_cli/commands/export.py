"""`resnet export`: write a trained model as ONNX, torch.export (.pt2) or TorchScript, and check the file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..export import EXPORT_FORMATS
from ._common import ForceOpt, JsonOpt, TrainedArg, choices, echo, parse_input_size, print_json


Format = choices("Format", EXPORT_FORMATS)


MAX_EXPORT_BATCH = 4096


def export_cmd(
    source: TrainedArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.", show_default=False)] = ...,
    fmt: Annotated[Optional[Format], typer.Option("--format", "-f", show_default=False,
                                                  help="A program: onnx, export (torch.export .pt2), "
                                                       "torchscript; weights: safetensors, hub (a Hugging Face "
                                                       "model repo folder) \\[default: from the suffix: .onnx, "
                                                       ".pt2, .pt, .safetensors]")] = None,
    batch_size: Annotated[str, typer.Option("--batch-size", "-b", help="A fixed batch size, or dynamic.")]
    = "dynamic",
    input_size: Annotated[Optional[str], typer.Option("--input-size", "-s", show_default=False,
                                                      help="S or HxW \\[default: the size it is evaluated at]")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Largest allowed |file - PyTorch| on the "
                                             "check batch; exit 1 above it.")] = 1e-3,
    model: Annotated[Optional[str], typer.Option("--model", "-m", show_default=False,
                                                 help="Model name, for a bare state_dict.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", show_default=False,
                                                   help="For a bare state_dict: the dataset it was trained on.")]
    = None,
    device: Annotated[str, typer.Option("--device", help="Trace and check on cpu, auto, cuda or cuda:N. A .pt2 or "
                                        "TorchScript file runs on the device it was traced on; ONNX runs anywhere.")]
    = "cpu",
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export trained weights for other runtimes, then run the file once and compare it with PyTorch.

    The file carries the class names and the input normalisation (ONNX metadata; FILE.json beside the others).
    ONNX needs the onnx extra: pip install "resnet-cli\\[onnx]".

    Example: [bold]resnet export runs/resnet20-fashion-mnist -o fashion.onnx[/bold]
    """
    from ..errors import BadInput, CheckFailed
    from ..export import export_checkpoint

    if batch_size == "dynamic":
        batch = None
    else:
        try:
            batch = int(batch_size)
        except ValueError:
            batch = 0
        if not 0 < batch <= MAX_EXPORT_BATCH:  # the file is traced and checked at this batch: it must fit in memory
            raise BadInput(f"--batch-size must be 1..{MAX_EXPORT_BATCH} or dynamic, got {batch_size!r}")
    if not tolerance > 0 or tolerance == float("inf"):  # NaN fails every comparison
        raise BadInput(f"--tolerance must be a positive number, got {tolerance}")
    size = parse_input_size(input_size)
    out = export_checkpoint(source, output, fmt.value if fmt else None, batch,
                            (size, size) if isinstance(size, int) else size, tolerance,
                            model, dataset, force, device)
    if out["format"] == "torchscript":
        from ..export import TORCHSCRIPT_NOTE

        echo(TORCHSCRIPT_NOTE, err=True)
    if json_out:
        print_json(out)
    elif "weights" in out:  # safetensors or a Hub folder: weights, read back as every command reads them
        what = (f"hub: {', '.join(Path(f).name for f in out['files'])}; timm: {out['timm'] or 'no equivalent'}"
                if out["format"] == "hub" else "safetensors, metadata in the file")
        echo(f"wrote {out['path']}{'/' if out['format'] == 'hub' else ''} ({what}): {out['model']}, "
             f"{out['weights']} weights, {out['bytes'] / 2**20:.1f} MiB")
        echo(f"check: max |read back - PyTorch| = {out['max_abs_diff']:.2e} on a batch of {out['check_batch']} "
             f"(tolerance {out['tolerance']:.0e}): {'ok' if out['ok'] else 'FAILED'}")
    else:
        on = "" if out["device"] == "cpu" else f", traced on {out['device']}"
        echo(f"wrote {out['path']} ({out['format']}, batch {out['batch_size']}, input "
                   f"{'x'.join(map(str, out['input_size']))}{on}): {out['model']}, {out['bytes'] / 2**20:.1f} MiB; "
                   f"metadata {out['metadata']}")
        echo(f"check: max |file - PyTorch| = {out['max_abs_diff']:.2e} on a batch of {out['check_batch']} "
                   f"(tolerance {out['tolerance']:.0e}): {'ok' if out['ok'] else 'FAILED'}")
    if not out["ok"]:
        raise CheckFailed(f"{out['path']} differs from the PyTorch model by {out['max_abs_diff']:.2e} "
                          f"(> {out['tolerance']:.0e})")
