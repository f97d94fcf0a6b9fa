"""`resnet eval`: evaluate a checkpoint (or a run folder, or a bare state_dict) on a dataset split."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import (DeviceOpt, ForceOpt, JsonOpt, TrainedOrExportedArg, TrustExportedOpt, check_positive, console,
                      print_json, progress_bar)


class Split(str, Enum):
    test = "test"
    val = "val"
    train = "train"


class Weights(str, Enum):
    auto = "auto"
    ema = "ema"
    raw = "raw"


def eval_cmd(
    source: TrainedOrExportedArg,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", show_default=False,
                                                    help="Where the dataset is \\[default: as trained]")] = None,
    split: Annotated[Split, typer.Option("--split", help="Which split to evaluate: test is the dataset's "
                                         "evaluation set (an image folder's val/); val the images the run held out "
                                         "with data.val_split.")] = Split.test,
    weights: Annotated[Weights, typer.Option("--weights", help="auto: the EMA weights when the run kept them "
                                             "(train.ema), else the raw ones.")] = Weights.auto,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Evaluation batch size.")] = 1024,
    device: DeviceOpt = "auto",
    model: Annotated[Optional[str], typer.Option("--model", "-m", show_default=False,
                                                 help="Model name, for a bare state_dict (e.g. torchvision's).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", show_default=False,
                                                   help="Dataset: needed for a bare state_dict \\[default: as trained].")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Evaluate the first N images only (0 = all).")] = 0,
    ten_crop: Annotated[bool, typer.Option("--ten-crop", help="Image folders: the paper's 10-crop test (four "
                                           "corners and the centre, and their mirrors; probabilities averaged).")]
    = False,
    scales: Annotated[Optional[str], typer.Option("--scales", show_default=False,
                                                  help="Image folders: the paper's fully-convolutional multi-scale "
                                                       "test (section 3.4): each whole image, and its mirror, with "
                                                       "the shorter side at each of these sizes (224,256,384,480,640"
                                                       ", or 'paper'); probabilities averaged.")] = None,
    crop_pct: Annotated[Optional[float], typer.Option("--crop-pct", show_default=False,
                                                      help="Image folders: resize the shorter side to crop / "
                                                           "crop-pct before cropping (0.875: 224 from 256) "
                                                           "\\[default: as trained]")] = None,
    image_size: Annotated[int, typer.Option("--image-size", help="Image folders: evaluate at this crop size, the "
                                            "resize in proportion (0 = as trained, or as a timm repo says).")] = 0,
    confusion: Annotated[bool, typer.Option("--confusion", help="Print the confusion matrix (a table up to 20 "
                                            "classes, the most frequent confusions beyond).")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", show_default=False,
                                                   help="With --confusion: also draw it to this file (.png, .svg or .pdf; matplotlib).")]
    = None,
    force: ForceOpt = False,
    trust_exported: TrustExportedOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a checkpoint: loss, top-1, top-5, per-class accuracy and images/s.

    Example: [bold]resnet eval runs/resnet20-fashion-mnist --json[/bold]
    """
    check_positive(batch_size, "--batch-size")
    from ..errors import BadInput
    from ..train.evaluate import evaluate_checkpoint, evaluate_exported

    if output is not None:
        if not confusion:
            raise BadInput("-o draws the confusion matrix: add --confusion")
        from ..figures import figure_format, need_matplotlib

        need_matplotlib()
        figure_format(output)
        from ..files import output_path

        output = output_path(output, force)

    if crop_pct is not None and not 0 < crop_pct <= 1:
        raise BadInput(f"--crop-pct is a fraction in (0, 1] (0.875 for 224 from 256), got {crop_pct}")
    from ..gate import MAX_IMAGE_SIZE

    if not 0 <= image_size <= MAX_IMAGE_SIZE:
        raise BadInput(f"--image-size is a side of 1-{MAX_IMAGE_SIZE} pixels (0: as trained), got {image_size}")
    from ..data.views import Views, parse_scales

    try:
        views = Views(ten_crop=ten_crop, scales=parse_scales(scales) if scales is not None else ())
    except ValueError as e:
        raise BadInput(str(e)) from None
    if views.scales and (ten_crop or crop_pct is not None or image_size):
        raise BadInput("--scales evaluates whole images: --ten-crop, --crop-pct and --image-size (crops) do not "
                       "apply")
    from ..exported import is_exported

    exported = is_exported(source)  # an ONNX or .pt2 file export wrote: run in its own runtime
    if exported and (model is not None or weights.value != "auto" or split.value != "test"):
        raise BadInput(f"{source} is an exported model: --model, --weights and --split do not apply (it evaluates "
                       "a dataset's test split)")
    with progress_bar("evaluating", quiet=json_out) as on_batch:
        if exported:
            out = evaluate_exported(source, data_dir=data_dir, dataset=dataset, limit=limit, batch_size=batch_size,
                                    crop_pct=crop_pct or 0.0, views=views, image_size=image_size,
                                    on_batch=on_batch, trust=trust_exported)
        else:
            out = evaluate_checkpoint(source, split=split.value, data_dir=data_dir, dataset=dataset, model=model,
                                      limit=limit, crop_pct=crop_pct or 0.0, views=views, image_size=image_size,
                                      batch_size=batch_size, device=device, weights=weights.value, on_batch=on_batch)
    if not confusion:
        out.pop("confusion")
    elif output is not None:
        _draw_confusion(out, output)
    if json_out:
        print_json(out)
        return
    c = console()
    if views.scales:  # whole images: no crop, nothing resized before one
        seen = [f"{views.label()}, {out['interpolation']}"]
    else:  # an image folder's crop and how it was resized to it, and 10-crop
        seen = [f"{out['image_size']} from {out['resize']}, {out['interpolation']}" if out["resize"] else "",
                views.label()]
    crops = f" ({', '.join(filter(None, seen))})" if any(seen) else ""
    runtime = f" ({out['runtime']})" if out.get("runtime") else ""
    c.print(f"{out['model']}{runtime} on {out['dataset']} {out['split_name']}{crops} ({out['count']:,} images): "
            f"loss {out['loss']:.4f}, "
            f"top-1 {out['top1']:.2%}, " + (f"top-5 {out['top5']:.2%}, " if out["top5"] is not None else "")
            + f"{out['img_per_s']:,.0f} img/s on {out['device']}")
    if out.get("published"):
        c.print(published_line(out["published"]))
    c.print(per_class_table(out["per_class"]))
    if confusion:
        _print_confusion(c, out)
    if output is not None:
        c.print(f"wrote {output}")


def published_line(pub: dict) -> str:
    """torchvision's figures for these weights beside ours: the difference where the evaluation is the one they
    were measured with, else what that evaluation is."""
    said = f"{pub['by']} publishes top-1 {pub['top1']:.2%}, top-5 {pub['top5']:.2%} for {pub['weights']}"
    if pub["comparable"]:
        d = pub["difference"]
        return f"{said}: {d['top1']:+.2f} / {d['top5']:+.2f} points here"
    return (f"{said}, on ImageNet-1k's {pub['images']:,} validation images at {pub['image_size']} from "
            f"{pub['resize']}, {pub['interpolation']}, one crop: not what was evaluated here")


PER_CLASS_ROWS = 20  # a table of every class up to this many; beyond (ImageNet's 1,000), the ends of the ranking


def per_class_table(rows: list[dict]):
    """Each class's images and top-1; past PER_CLASS_ROWS classes, the PER_CLASS_ROWS / 2 lowest and highest
    (classes without images left out of the ranking), as the confusions are the most frequent ones: --json has
    every class."""
    from rich.table import Table

    from ..data.inputs import labelled

    shown, title, caption = rows, "per-class accuracy", None
    if len(rows) > PER_CLASS_ROWS:
        half = PER_CLASS_ROWS // 2
        ranked = sorted((r for r in rows if r["count"]), key=lambda r: (r["accuracy"], r["class"]))
        if len(ranked) > PER_CLASS_ROWS:
            shown = ranked[:half] + [None] + ranked[-half:]
            title = f"{half} lowest, {half} highest of {len(rows):,} classes"
        else:
            shown = ranked
            title = f"the {len(ranked)} classes with images, of {len(rows):,}"
        caption = "per-class top-1; --json: every class"
    table = Table(title=title, caption=caption, min_width=len(title))  # the title on one line
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("top-1", justify="right")
    for row in shown:
        if row is None:
            table.add_row("...", "", "")
        else:
            table.add_row(labelled(row["class"], row.get("description", "")), str(row["count"]),
                          "-" if row["count"] == 0 else f"{row['accuracy']:.2%}")
    return table


def confusions(out: dict, top: int = 20) -> list[tuple[str, str, int]]:
    """The most frequent (true class, predicted class, count) pairs off the diagonal."""
    names, m = out["classes"], out["confusion"]
    pairs = [(names[i], names[j], m[i][j]) for i in range(len(m)) for j in range(len(m)) if i != j and m[i][j]]
    return sorted(pairs, key=lambda p: -p[2])[:top]


def _print_confusion(c, out: dict) -> None:
    from rich.table import Table

    names, m = out["classes"], out["confusion"]
    if len(names) <= 20:
        t = Table(title="confusion matrix (rows: true class, columns: predicted)")
        t.add_column("true \\ predicted")
        for j in range(len(names)):
            t.add_column(str(j), justify="right")
        for i, row in enumerate(m):
            t.add_row(f"{i} {names[i]}", *[str(v) for v in row])
    else:
        t = Table(title="most frequent confusions")
        for col in ("true class", "predicted", "images"):
            t.add_column(col, justify="right" if col == "images" else "left")
        for true, pred, n in confusions(out):
            t.add_row(true, pred, str(n))
    c.print(t)


def _draw_confusion(out: dict, path: Path) -> None:
    from ..figures import pyplot, save_figure

    names, m = out["classes"], out["confusion"]
    n = len(names)
    fig, ax = pyplot().subplots(figsize=(max(5, 0.45 * n + 2), max(4, 0.45 * n + 1.5)))
    im = ax.imshow(m, cmap="Blues")
    if n <= 30:
        ax.set_xticks(range(n), names, rotation=90)
        ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true class")
    ax.set_title(f"{out['model']} on {out['dataset']} {out['split_name']} ({out['count']:,} images)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
