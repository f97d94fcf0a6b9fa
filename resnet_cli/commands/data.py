"""`resnet data`: the input pipeline on its own (`data bench`), shards (`data convert`), a dataset written out as
PNG files (`data images`), and ImageNet's archives as image folders (`data imagenet`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ._common import DeviceOpt, JsonOpt, check_positive, choices, console, print_json, progress_bar

app = typer.Typer(help="The input pipeline on its own: how fast it feeds a model.", no_args_is_help=True)

STAGES = {"read": "read the file or shard (worker)", "decode": "decode (worker)",
          "crop": "cut the region, canvas (worker)", "other": "read header, draw (worker)",
          "collate": "collate (worker)", "to_device": "copy to the device", "device": "resize, augment (device)"}


@app.command("bench")
def bench_cmd(
    data_dir: Annotated[str, typer.Argument(help="An image folder (train/<class>/*, val/<class>/*), or shards "
                                            "(a folder, an http(s) URL or pipe:COMMAND).", show_default=False)],
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", show_default=False,
                                                  help="The run's preset: its transforms and model.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", show_default=False,
                                                   help="The run's YAML config file.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", show_default=False,
                                                      help="Override any key, as in train (repeatable).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", show_default=False,
                                                 help="model.name: the model to compare with.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-j", show_default=False,
                                                   help="data.workers: decoding processes.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", show_default=False,
                                                      help="train.batch_size (per process).")] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", show_default=False,
                                                      help="data.image_size: the crop.")] = None,
    batches: Annotated[int, typer.Option("--batches", help="Batches to time after the first.")] = 20,
    device: DeviceOpt = "auto",
    target: Annotated[Optional[float], typer.Option("--target-img-s", show_default=False,
                                                    help="The model's training images/s, when known (else "
                                                         "measured here with bench's step).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Time the input pipeline alone with the run's own transforms, and say which side bounds training.

    Reports images/s overall and per worker, the CPU cores busy, the time per image of each stage
    (decode, crop, collate, copy to the device, the device's resize and augmentations), the model's
    training rate on this device, and how many workers would feed it.

    Example: [bold]resnet data bench /data/imagenet --preset torchvision --workers 8 --target-img-s 5500[/bold]
    """
    from .. import config as C
    from ..data import identify_dataset
    from ..errors import BadInput
    from ..models import resolve_name
    from ..pipeline_bench import bench_pipeline

    check_positive(batches, "--batches")
    if target is not None and not (0 < target < float("inf")):
        raise BadInput(f"--target-img-s must be a positive number, got {target}")
    flags: dict[str, Any] = {"data.data_dir": str(data_dir), "data.workers": workers, "data.image_size": image_size,
                             "train.batch_size": batch_size,
                             "model.name": resolve_name(model, None, False) if model else None}
    if workers is not None and workers < 0:
        raise BadInput(f"--workers must not be negative, got {workers}")
    cfg = C.resolve(preset, config, flags, set_, identify=identify_dataset)
    with progress_bar("reading", quiet=json_out) as on_batch:
        out = bench_pipeline(cfg, device, batches, target_img_s=target, on_batch=on_batch)
    if json_out:
        print_json(out)
        return
    from rich.table import Table

    p, stages = out["pipeline"], out["stages_ms_per_image"]
    table = Table(title=f"{out['images']:,} images ({out['dataset']}), batch {out['batch_size']}, {out['crop']} crop "
                        f"{out['image_size']}")
    table.add_column("stage")
    table.add_column("ms/image", justify="right")
    table.add_column("img/s", justify="right")
    for key, label in STAGES.items():
        ms = stages[key]
        table.add_row(label, f"{ms:.3f}", f"{1000 / ms:,.0f}" if ms >= 0.001 else "-")
    c = console()
    c.print(table)
    c.print(f"device: {out['device']}")
    cores = f", {p['cores_busy']:.1f} cores busy" if p["cores_busy"] is not None else ""
    c.print(f"CPU per image (worker + collate): {out['cpu_img_per_s_per_core']:,.0f} img/s per core "
            f"(stages timed on {out['stage_sample']} images in this process)")
    c.print(f"loader: {p['img_per_s']:,.0f} img/s with {p['workers']} worker(s) "
            f"({out['per_worker_img_per_s']:,.0f} per worker{cores}) over {p['batches']} batches")
    m = out["model"]
    c.print(f"model: {m['img_per_s']:,.0f} img/s training ({m['source']})")
    c.print(out["verdict"])


@app.command("convert")
def convert_cmd(
    folder: Annotated[Path, typer.Argument(help="An image folder: train/<class>/* and val/<class>/*.",
                                           show_default=False)],
    out: Annotated[Path, typer.Argument(help="The folder to write the shards and index.json to.",
                                        show_default=False)],
    shard_images: Annotated[Optional[int], typer.Option("--shard-images", show_default=False,
                                                        help="Images per shard \\[default: 1000 unless "
                                                             "--shard-mb]")] = None,
    shard_mb: Annotated[Optional[float], typer.Option("--shard-mb", show_default=False,
                                                      help="Shard size in MB instead.")] = None,
    max_size: Annotated[int, typer.Option("--max-size", help="Re-encode images whose longer side is above this "
                                          "(JPEG, --quality); 0 keeps every file as it is.")] = 0,
    quality: Annotated[int, typer.Option("--quality", help="JPEG quality of re-encoded images.")] = 90,
    force: Annotated[bool, typer.Option("--force", help="Write over finished shards, or restart an interrupted "
                                        "conversion with other settings.")] = False,
    workers: Annotated[Optional[int], typer.Option("--workers", "-j", show_default=False,
                                                   help="Processes that read and re-encode images \\[default: "
                                                        "every core, at most 32; 0: this process].")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write an image folder as tar shards in the WebDataset layout, with index.json (classes, per-shard counts
    and sha256), for `data.dataset: shards` (a folder, http(s), or pipe: commands).

    Deterministic; an interrupted conversion resumes where it stopped; unreadable images are named and
    counted, never silently left out. Needs the shards extra: pip install "resnet-cli\\[shards]".

    Example: [bold]resnet data convert /data/imagenet /data/imagenet-wds --max-size 320[/bold]
    """
    import sys

    from ..data.shard_convert import convert
    from ..errors import BadInput

    if shard_images is not None and shard_mb is not None:
        raise BadInput("give the shard size as --shard-images or --shard-mb, not both")
    if shard_images is None and shard_mb is None:
        shard_images = 1000
    if shard_images is not None and shard_images <= 0 or shard_mb is not None and not 0 < shard_mb < 1e6:
        raise BadInput("the shard size must be positive")
    if max_size < 0 or max_size == 1:
        raise BadInput(f"--max-size must be 0 (keep) or a side in pixels, got {max_size}")
    if workers is not None and workers < 0:
        raise BadInput(f"--workers must be 0 or more, got {workers}")
    if workers is None:
        from ..data.shard_convert import default_workers

        workers = default_workers()
    try:
        import webdataset  # noqa: F401
    except ImportError:
        raise BadInput('data convert writes with the webdataset package: pip install "resnet-cli[shards]"') from None

    def unreadable(path: str, error: str) -> None:
        from ..terminal import printable

        sys.stderr.write(printable(f"unreadable, left out: {path} ({error})") + "\n")

    with progress_bar("converting", quiet=json_out) as on_progress:
        result = convert(folder, out, shard_images or 0, shard_mb or 0, max_size, quality, force, on_progress,
                         unreadable, workers)
    if json_out:
        print_json(result)
        return
    parts = [f"{result[f'{s}_images']:,} {s} images in {result[f'{s}_shards']} shards" for s in ("train", "val")
             if f"{s}_images" in result]
    console().print(f"wrote {result['out']}: {', '.join(parts)}, {result['bytes'] / 2**20:,.1f} MiB, "
                    f"{result['classes']} classes; {len(result['unreadable'])} unreadable image(s) left out")


def _tensor_datasets():
    from ..data.loading import FIXED_CLASSES

    return choices("TensorDataset", FIXED_CLASSES)


def _split_choice():
    return choices("ImageSplit", ("test", "train"))


@app.command("images")
def images_cmd(
    dataset: Annotated[_tensor_datasets(), typer.Argument(help="The dataset.", show_default=False)],
    out: Annotated[Path, typer.Argument(help="The folder to write the PNG files to.", show_default=False)],
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", show_default=False,
                                                    help="Where the dataset is (downloaded there when missing) "
                                                         "\\[default: as in train]")] = None,
    split: Annotated[_split_choice(), typer.Option("--split", help="The split the images come from.")] = "test",
    count: Annotated[int, typer.Option("--count", "-n", help="Images to write (with --image-folder: per class "
                                       "in train/).")] = 6,
    classes: Annotated[Optional[str], typer.Option("--classes", show_default=False,
                                                   help="Only these classes: numbers or names, comma-separated "
                                                        "(5,7,9 or sandal,sneaker,ankle-boot).")] = None,
    image_folder: Annotated[bool, typer.Option("--image-folder", help="Write an image folder to train on: "
                                               "train/<class>/ from the training split, val/<class>/ from the "
                                               "test split.")] = False,
    val_count: Annotated[Optional[int], typer.Option("--val-count", show_default=False,
                                                     help="With --image-folder: images per class in val/ "
                                                          "\\[default: --count]")] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into a folder that is not empty.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write images of Fashion-MNIST, MNIST or CIFAR as PNG files: a few test images to try `predict` on, or
    an image folder to train or fine-tune on offline.

    Files are named by the image's place in its split and its class (test0-ankle-boot.png), so the same
    command writes the same files. Needs Pillow: pip install "resnet-cli\\[images]".

    Example: [bold]resnet data images fashion-mnist samples --count 6[/bold]
    """
    from .. import config as C
    from ..data import load_data
    from ..data.as_images import pick_classes, write_folder, write_samples
    from ..errors import BadInput

    check_positive(count, "--count")
    check_positive(val_count, "--val-count")
    if val_count is not None and not image_folder:
        raise BadInput("--val-count is for --image-folder")
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise BadInput('data images writes PNG files with Pillow: pip install "resnet-cli[images]"') from None
    name = getattr(dataset, "value", dataset)
    cfg = C.resolve(None, None, {"data.dataset": name, "data.data_dir": data_dir})
    data = load_data(cfg.data)
    names = list(data.input.classes)
    wanted = pick_classes(classes, names)
    if image_folder:
        done = write_folder((data.train_x, data.train_y), (data.test_x, data.test_y), names, out, count,
                            val_count or count, wanted, force)
        result = {"out": str(out), "dataset": name, "layout": "image-folder", "classes": len(wanted), **done}
        text = (f"wrote {out}/: {done['train']:,} train and {done['val']:,} val images of {len(wanted)} "
                f"{'class' if len(wanted) == 1 else 'classes'} ({name}, PNG)")
    else:
        split_name = getattr(split, "value", split)
        x, y = (data.test_x, data.test_y) if split_name == "test" else (data.train_x, data.train_y)
        files = write_samples(x, y, names, out, split_name, count, wanted, force)
        result = {"out": str(out), "dataset": name, "layout": "files", "split": split_name,
                  "images": len(files), "files": [str(f) for f in files]}
        text = f"wrote {len(files)} {name} {split_name} image{'' if len(files) == 1 else 's'} to {out}/ (PNG)"
    if json_out:
        print_json(result)
    else:
        console().print(text, highlight=False, soft_wrap=True)


@app.command("imagenet")
def imagenet_cmd(
    archives: Annotated[Path, typer.Argument(help="The folder holding ImageNet's archives as image-net.org gives "
                                             "them: ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and "
                                             "ILSVRC2012_devkit_t12.tar.gz.", show_default=False)],
    out: Annotated[Path, typer.Argument(help="The folder to write train/<wnid>/ and val/<wnid>/ to.",
                                        show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Write into a folder that is not empty, and read every "
                                        "archive again.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Turn ImageNet's ILSVRC2012 archives into the image folders train reads: train/<wnid>/*.JPEG and
    val/<wnid>/*.JPEG (the validation images sorted into classes by the devkit), as torchvision's ImageNet
    dataset lays them out.

    Each archive is read once, in order, its md5 checked against the published one; only the names ImageNet's
    archives hold are written. Stopped, it goes on where it was when run again. Needs scipy for the devkit:
    pip install "resnet-cli\\[imagenet]".

    Example: [bold]resnet data imagenet ~/Downloads/ilsvrc2012 /data/imagenet[/bold]
    """
    from ..data.imagenet import prepare

    with progress_bar("reading the archives, MB", quiet=json_out) as on_progress:
        result = prepare(archives, out, force, on_progress and (lambda done, total: on_progress(done // 10**6,
                                                                                                total // 10**6)))
    if json_out:
        print_json(result)
        return
    parts = [f"{result[key]:,} {key} images" for key in ("train", "val") if key in result]
    kept = f" ({result['kept']:,} in place already)" if result["kept"] else ""
    console().print(f"wrote {out}/: {' and '.join(parts)} in {result['classes']:,} classes{kept}; train on it with "
                    f"resnet train --preset imagenet --data-dir {out}", highlight=False, soft_wrap=True)
