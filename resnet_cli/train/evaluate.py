"""Evaluation: loss, top-1, top-5 and per-class accuracy, summed on the device and read once."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..data.views import Views
from ..speed import autocast
from ..torchvision_weights import beside_published


@dataclass
class EvalResult:
    loss: float
    top1: float
    top5: float | None  # None where there are 5 classes or fewer: top-5 would be 100% by construction
    count: int
    seconds: float
    per_class: list[float] = field(default_factory=list)  # accuracy per class (nan where a class has no samples)
    class_counts: list[int] = field(default_factory=list)
    confusion: torch.Tensor | None = None  # [true class, predicted class] counts, int64 on the CPU

    @property
    def img_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def evaluate(model: torch.nn.Module, loader, num_classes: int, device: torch.device, precision: str = "fp32",
             all_reduce=None, forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
             on_batch: Callable[[int, int], None] | None = None) -> EvalResult:
    """Evaluate `model` in inference mode; `all_reduce` (distributed runs) sums the counters across ranks.

    `forward` is what to call on a batch (the training run's compiled forward); by default the model.
    `on_batch(done, total)` after each batch is queued, from the host's count (no device sync). Several views
    of each image (`views_of`) count as one prediction, their probabilities averaged.
    """
    forward = forward or model
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    k = min(5, num_classes)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top1 = torch.zeros((), dtype=torch.int64, device=device)
    topk = torch.zeros((), dtype=torch.int64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    try:
        with torch.inference_mode(), autocast(device, precision):
            for i, (x, y) in enumerate(loader.batches(), start=1):
                logits = views_of(forward, x, len(y))
                loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
                pred = logits.topk(k, dim=1).indices
                top1 += (pred[:, 0] == y).sum()
                topk += (pred == y.view(-1, 1)).any(dim=1).sum()
                # index_add_, not bincount: bincount sizes its output from the data (a sync per call on CUDA)
                confusion.index_add_(0, y * num_classes + pred[:, 0], torch.ones_like(y, dtype=torch.int64))
                if on_batch is not None:
                    on_batch(i, len(loader))
    finally:
        model.train(was_training)
    if all_reduce is not None:
        loss_sum, top1, topk, confusion = all_reduce([loss_sum, top1, topk, confusion])
    matrix = confusion.view(num_classes, num_classes)
    counts = matrix.sum(dim=1).tolist()
    n = int(sum(counts))
    per_class = [c / m if m else float("nan") for c, m in zip(matrix.diagonal().tolist(), counts)]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    top5 = topk.item() / max(n, 1) if num_classes > 5 else None  # with 5 classes or fewer it is always 100%
    return EvalResult(loss=loss_sum.item() / max(n, 1), top1=top1.item() / max(n, 1), top5=top5,
                      count=n, seconds=time.perf_counter() - t0, per_class=per_class, class_counts=counts,
                      confusion=matrix.cpu())


def views_of(forward: Callable[[torch.Tensor], torch.Tensor], x, n: int) -> torch.Tensor:
    """The logits of `n` images from a batch `x` of them: one view each, `forward(x)` as it is; several (10 crops
    each, a batch of 10n; or a list of batches, one per scale, of each image and its mirror: Views), the log of
    their mean probability (cross-entropy of log-probabilities is their negative log-likelihood)."""
    parts = [forward(v).float() for v in x] if isinstance(x, list) else [forward(x).float()]
    if len(parts) == 1 and len(parts[0]) == n:
        return parts[0]
    probs = torch.cat([p.softmax(1).view(n, -1, p.shape[1]) for p in parts], dim=1).mean(1)
    return probs.clamp_min(1e-12).log()


def figures(res: EvalResult, spec) -> dict:
    """What `resnet eval` reports of `res` on a dataset of this input (data.InputSpec: its classes, and what they
    are where the data says): counts, loss, accuracies, speed, per class and the confusion matrix (a model with
    more outputs than classes: the classes' rows and columns)."""
    classes = list(spec.classes)
    n = len(classes)
    per_class = [{"class": c, "accuracy": acc, "count": k}
                 for c, acc, k in zip(classes, res.per_class, res.class_counts)]
    for row, description in zip(per_class, spec.descriptions):
        row["description"] = description
    return {"count": res.count, "loss": res.loss, "top1": res.top1, "top5": res.top5, "img_per_s": res.img_per_s,
            "per_class": per_class, "classes": classes, "confusion": res.confusion[:n, :n].tolist()}


def batches(data, split: str, batch_size: int, views: Views) -> tuple[int, int]:
    """(images per batch, the largest batch the model sees): `batch_size` counts views (ten per image under
    10-crop; whole images at several scales go one at a time, two views a pass), and no batch holds more images
    than the split."""
    images = views.images_per_batch(batch_size)
    return images, min(images, data.count(split)) * views.per_pass


def seen_as(views: Views) -> dict:
    """A report's record of how each image was seen: views per image ("crops", 1 for the centre crop); for a
    multi-scale test its scales, and no crop or resize before one (None: whole images were seen)."""
    if views.scales:
        return {"crops": views.per_image, "scales": list(views.scales), "image_size": None, "resize": None}
    return {"crops": views.per_image}


def fully_convolutional(net: torch.nn.Module, name: str, views: Views) -> None:
    """Refuse (one line) a model whose head does not average its last feature map whatever its size, where whole
    images of any shape are evaluated (`views.scales`): a ResNet is fully convolutional, its fc a 1x1 convolution
    on the averaged map; VGG pools to 7x7 for its fully connected layers."""
    from ..errors import BadInput

    pool = getattr(net, "avgpool", None)
    if views.scales and (not isinstance(pool, torch.nn.AdaptiveAvgPool2d) or pool.output_size not in (1, (1, 1))):
        raise BadInput(f"--scales evaluates whole images of any shape, which needs a fully convolutional net; "
                       f"{name}'s head takes a fixed-size map")


def normalised_as(data, mean, std, resize: int | None = None):
    """`data` normalised with the statistics a model was trained with (its run's record: a run on
    data.train_limit images has its own, not those of the split loaded now), and resized as it was evaluated."""
    import dataclasses

    return dataclasses.replace(data, input=dataclasses.replace(
        data.input, mean=tuple(mean), std=tuple(std), resize=resize or data.input.resize))


def checkpoint_data(loaded, cfg, split: str, dataset: str | None):
    """The data `cfg` names, as `loaded`'s record says it was seen: its classes (image folders are read in the
    checkpoint's class order), its normalisation where it was trained on this dataset, and what each class is
    where the checkpoint says and the data does not (ImageNet-1k's words for a timm repo)."""
    import dataclasses

    from .. import config as C
    from ..data import load_data
    from ..data.inputs import InputSpec
    from ..errors import BadInput

    if cfg.data.dataset in C.DECODED and not cfg.data.data_dir and not os.environ.get("RESNET_CLI_DATA"):
        raise BadInput(f"{loaded.path} does not say where its {cfg.data.dataset} data is (its weights were made "
                       "elsewhere): give --data-dir (an image folder with val/<class>/*, or shards)")
    record = InputSpec.from_dict(loaded.saved_input) if loaded.saved_input else imagenet_outputs(loaded, cfg)
    data = load_data(cfg.data, classes=list(record.classes) if record and cfg.data.dataset in C.DECODED else None,
                     need_train=split in ("train", "val"))
    if record and trained_on(loaded, dataset):
        data = normalised_as(data, record.mean, record.std)
    if record and record.descriptions and not data.input.descriptions and record.classes == data.input.classes:
        data = dataclasses.replace(data, input=dataclasses.replace(data.input, descriptions=record.descriptions))
    return data


def imagenet_outputs(loaded, cfg):
    """ImageNet-1k's record for a bare 1000-output ImageNet state_dict evaluated on an image folder whose classes
    are all ImageNet's WordNet ids (Imagenette, a part of ImageNet's val/): its outputs are ImageNet's classes,
    as predict names them, so the folder is read in their order. None otherwise (the classes are the folder's)."""
    from ..data.imagefolder import of_imagenet
    from ..data.imagenet_classes import COUNT
    from ..data.inputs import InputSpec
    from ..data.loading import data_root
    from ..models import model_info

    if loaded.from_run or cfg.data.dataset != "imagefolder" or cfg.model.num_classes != COUNT \
            or model_info(cfg.model.name).family != "imagenet" or not of_imagenet(data_root(cfg.data.data_dir)):
        return None
    return InputSpec.imagenet(COUNT)


def trained_on(loaded, dataset: str | None) -> bool:
    """Whether `loaded` was trained on the dataset evaluated (`dataset`, None: its own)."""
    return loaded.trained and (dataset is None or dataset == loaded.config.data.dataset)


def evaluate_checkpoint(source, *, split: str = "test", data_dir: str | None = None, dataset: str | None = None,
                        model: str | None = None, limit: int = 0, batch_size: int = 1024, device: str = "auto",
                        weights: str = "auto", crop_pct: float = 0.0, views: Views = Views(), image_size: int = 0,
                        on_batch=None) -> dict:
    """`resnet eval`: a checkpoint (or run folder, or bare state_dict with `model`) on a dataset split.

    The data is the run's own unless `dataset`/`data_dir` say otherwise ("val" is the run's held-out split);
    `weights` picks the EMA or raw weights (checkpoint.state_dict_of); image folders may be evaluated at another
    crop (`image_size`), after another resize (`crop_pct`: shorter side to crop / crop_pct), or seen as `views`
    says (data/views.py: the paper's 10 crops, or whole at several scales). Precision and memory layout are
    train's for the device (speed.py), with its kernel choices (configure_backends), without compiling.
    """
    from .. import config as C
    from ..analysis import refuse_on_cpu
    from ..checkpoint import model_from_checkpoint
    from ..data import make_loader
    from ..data.shard_source import refuse_saved_command
    from ..device import resolve_device
    from ..errors import BadInput
    from ..speed import Speed
    from .evaluations import split_name

    loaded = model_from_checkpoint(source, model, dataset, weights)
    if not loaded.trained and dataset is None:
        raise BadInput(f"{loaded.path} {loaded.unknown_data}: say which dataset to evaluate it on with --dataset (it is never "
                       "guessed)")
    flat = C.flatten(loaded.config.to_dict(), "config")
    refuse_saved_command(flat.get("data.data_dir", ""), data_dir, str(loaded.path))
    flat.update({k: v for k, v in {"data.data_dir": data_dir, "data.dataset": dataset}.items() if v is not None})
    flat["data.test_limit"] = limit
    flat["data.train_limit"] = limit if split == "train" else 0
    flat["data.aug_repeats"] = 1  # the training sampler's: evaluation reads each image once (shards too)
    if split == "val" and not loaded.config.data.val_split:
        folder = " (an image folder's val/ is --split test, its evaluation set)" \
            if (dataset or loaded.config.data.dataset) in C.DECODED else ""
        raise BadInput(f"{loaded.path} was trained without a validation split (data.val_split); evaluate test or "
                       f"train{folder}")
    cfg = C.build_config(flat)
    dev = resolve_device(device)
    data = checkpoint_data(loaded, cfg, split, dataset).tested(crop_pct, views, image_size)
    cfg.model.fitted(data.num_classes, data.channels, cfg.data.dataset, str(loaded.path))  # it can take the data
    if not trained_on(loaded, dataset) and cfg.model.num_classes != data.num_classes:  # extra outputs: as trained
        raise BadInput(f"{loaded.path} has {cfg.model.num_classes} outputs but {cfg.data.dataset} has "
                       f"{data.num_classes} classes")
    speed = Speed.resolve(dev, compile="off")
    speed.configure_backends(dev)
    net = loaded.model.to(dev, memory_format=speed.memory_format())
    fully_convolutional(net, cfg.model.name, views)
    images, largest = batches(data, split, batch_size, views)
    loader = make_loader(data, cfg.data, split, images, dev, training=False, channels_last=speed.channels_last)
    if dev.type == "cpu":  # whole images: at least the largest scale's square
        refuse_on_cpu(net, (max(views.scales),) * 2 if views.scales else data.input.image_size, largest,
                      f"--batch-size {batch_size}", cfg.model.name, inference=True)
    res = evaluate(net, loader, cfg.model.num_classes, dev, speed.precision, on_batch=on_batch)
    report = {"checkpoint": str(loaded.path), "model": cfg.model.name, "dataset": cfg.data.dataset, "split": split,
              "split_name": split_name(cfg.data.dataset, split), "weights": loaded.weights,
              **data.input.prepared(), **seen_as(views), **figures(res, data.input), "device": str(dev),
              "precision": speed.precision}
    published = beside_published(loaded.path, report)  # torchvision's figures, where the weights are theirs
    return {**report, "published": published} if published else report


def evaluate_exported(source, *, data_dir: str | None, dataset: str | None, limit: int, batch_size: int,
                      crop_pct: float, views: Views = Views(), image_size: int = 0, on_batch=None,
                      trust: bool = False) -> dict:
    """`resnet eval` of a file `resnet export` wrote (exported.py), in its own runtime, on the test split of the
    dataset its metadata names (or `dataset`), normalised as its metadata says: the figures of the exported file
    itself, to set beside the checkpoint's. `trust`: --trust-exported (exported.py)."""
    from .. import config as C
    from ..analysis import refuse_on_cpu
    from ..data import load_data, make_loader
    from ..errors import BadInput
    from ..exported import load_exported
    from .evaluations import split_name

    net = load_exported(source, trust)
    name = dataset or net.metadata.get("dataset") or ""
    if not name:
        raise BadInput(f"{source} does not say which dataset it was trained on: give --dataset (it is never guessed)")
    flags = {"data.dataset": name, "data.data_dir": data_dir, "data.test_limit": limit}
    if name in C.DECODED:
        flags["data.image_size"], flags["data.eval_interpolation"] = net.spec.image_size[0], net.spec.interpolation
    if image_size and image_size != net.spec.image_size[0]:
        raise BadInput(f"{source} takes {net.spec.image_size[0]}x{net.spec.image_size[1]} images, as it was exported: "
                       "--image-size applies to checkpoints (export it again at another size)")
    cfg = C.resolve(flags=flags)
    data = load_data(cfg.data, classes=list(net.spec.classes) if name in C.DECODED else None,
                     need_train=False)
    if data.num_classes != net.num_classes or data.channels != net.spec.channels:
        raise BadInput(f"{source} takes {net.spec.channels}-channel images of {net.num_classes} classes; {name} has "
                       f"{data.channels}-channel images of {data.num_classes}")
    data = normalised_as(data, net.spec.mean, net.spec.std, net.spec.resize if name in C.DECODED else None)
    if views.scales:
        raise BadInput(f"{source} takes {net.spec.image_size[0]}x{net.spec.image_size[1]} images, as it was exported: "
                       "--scales (whole images of every shape) evaluates checkpoints")
    data = data.tested(crop_pct, views)
    images, largest = batches(data, "test", batch_size, views)
    loader = make_loader(data, cfg.data, "test", images, net.device, training=False)
    if net.device.type == "cpu":  # onnxruntime's activations are at least the model's
        refuse_on_cpu(net.twin(strict=False), data.input.image_size, net.forward_batch(largest),
                      f"--batch-size {batch_size}", net.name, inference=True)
    res = evaluate(net, loader, net.num_classes, net.device, "fp32", on_batch=on_batch)
    return {"checkpoint": str(source), "model": net.name, "runtime": net.runtime, "dataset": name, "split": "test",
            "split_name": split_name(name, "test"), "weights": "exported",
            **data.input.prepared(), **seen_as(views), **figures(res, data.input), "device": str(net.device),
            "precision": "fp32"}
