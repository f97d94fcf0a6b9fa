"""`resnet predict`: classify image files with a trained checkpoint."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ..terminal import printable
from ._common import (DeviceOpt, JsonOpt, TrainedOrExportedArg, TrustExportedOpt, check_positive, console, print_json,
                      progress_bar)


def predict_cmd(
    source: TrainedOrExportedArg,
    paths: Annotated[list[str], typer.Argument(help="Image files, folders (searched recursively) and https URLs.",
                                               metavar="IMAGES...", show_default=False)],
    topk: Annotated[int, typer.Option("--topk", "-k", help="Classes to show per image.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per forward pass.")] = 64,
    device: DeviceOpt = "auto",
    workers: Annotated[Optional[int], typer.Option("--workers", "-j", show_default=False,
                                                   help="Threads reading and transforming the next images "
                                                        "while the model runs; 0: none [default: one a core]")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", show_default=False,
                                                 help="Model name, for a bare state_dict.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", show_default=False,
                                                   help="For a bare state_dict: the dataset whose normalisation "
                                                        "and classes it was trained with.")] = None,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV: path, rank, class, index, probability.")] = False,
    trust_exported: TrustExportedOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Classify images with a trained model: top-k classes and probabilities per image.

    Each image gets the run's own evaluation transform (size, crop, grayscale or RGB, normalisation).
    Unreadable files and URLs are named on stderr and skipped.

    Example: [bold]resnet predict runs/resnet20-fashion-mnist shirt.png photos/ --topk 3[/bold]
    """
    from ..errors import BadInput

    check_positive(topk, "--topk")
    check_positive(batch_size, "--batch-size")
    if workers is not None and workers < 0:
        raise BadInput(f"--workers must not be negative, got {workers}")
    from ..predict import predict

    if csv_out and json_out:
        raise BadInput("choose one of --csv and --json")
    with progress_bar("classifying", quiet=json_out or csv_out) as on_batch:
        out = predict(source, [str(p) for p in paths], topk, batch_size, device, model, dataset, on_batch,
                      trust_exported, workers)
    for s in out["skipped"]:
        sys.stderr.write(printable(f"skipped {s['path']}: {s['error']}") + "\n")
    if json_out:
        print_json(out)
    elif csv_out:
        import csv

        from ..terminal import data_out

        writer = csv.writer(data_out(), lineterminator="\n")
        described = any("description" in t for row in out["predictions"] for t in row["top"])
        writer.writerow(["path", "rank", "class", "index", "probability"] + (["description"] if described else []))
        for row in out["predictions"]:
            for rank, t in enumerate(row["top"], start=1):
                writer.writerow([printable(row["path"]), rank, printable(t["class"]), t["index"], f"{t['prob']:.6f}"]
                                + ([printable(t.get("description", ""))] if described else []))
    else:
        from rich.table import Table

        from ..data.inputs import labelled

        runtime = f" ({out['runtime']})" if out["runtime"] != "pytorch" else ""
        table = Table(title=f"{out['model']}{runtime}: top-{out['topk']} of {out['count']} image(s)")
        more = out["topk"] > 1  # the classes after the first, in one column; none with --topk 1
        for col in ("image", "class", "probability") + (("runners-up",) if more else ()):
            table.add_column(col, justify="right" if col == "probability" else "left")
        for row in out["predictions"]:
            best = row["top"][0]
            rest = (", ".join(f"{labelled(t['class'], t.get('description', ''))} {t['prob']:.1%}"
                              for t in row["top"][1:]),) if more else ()
            table.add_row(row["path"], labelled(best["class"], best.get("description", "")), f"{best['prob']:.2%}",
                          *rest)
        console().print(table)
    if out["skipped"]:
        sys.stderr.write(f"{len(out['skipped'])} unreadable image(s) skipped, {out['count']} classified\n")
    if not out["predictions"]:
        raise BadInput("no image could be read")
