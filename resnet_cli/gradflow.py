"""Gradient flow at initialisation: the norm of every main-path conv weight's gradient, input end first.

This is the paper's degradation story in numbers: in a deep plain net the gradient
reaching the first layers is orders of magnitude off the last layers', while the
shortcuts of a ResNet carry it through. Projection shortcuts are left out: they
are not among the weighted layers the paper counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .models.resnet import stage_of


@dataclass
class LayerGrad:
    index: int  # 1-based position along the main path (conv1 = 1)
    name: str
    stage: str  # stem, conv2_x, ...
    norm: float


def main_path_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and ".downsample" not in n]


def conv_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[LayerGrad], float]:
    """One forward/backward in train mode on (x, y); returns the per-layer norms and the loss.

    The model's mode and BatchNorm statistics are restored afterwards; gradients are cleared.
    """
    was_training = model.training
    buffers = {k: v.clone() for k, v in model.named_buffers()}  # BatchNorm statistics the probe updates
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        layers = [LayerGrad(i + 1, name, stage_of(name), conv.weight.grad.norm().item())
                  for i, (name, conv) in enumerate(main_path_convs(model))]
    finally:
        model.zero_grad(set_to_none=True)
        model.load_state_dict(buffers, strict=False)
        model.train(was_training)
    return layers, loss.item()


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], lo: float, hi: float) -> str:
    """Log-scale sparkline of positive values between lo and hi."""
    import math

    if not values:
        return ""
    span = math.log10(hi) - math.log10(lo) if hi > lo > 0 else 1.0
    out = []
    for v in values:
        t = (math.log10(max(v, lo)) - math.log10(lo)) / span if span else 0.5
        out.append(SPARKS[min(len(SPARKS) - 1, max(0, int(round(t * (len(SPARKS) - 1)))))])
    return "".join(out)


def gradflow_report(names: list[str], dataset: str = "synthetic", data_dir: str | None = None,
                    batch_size: int = 128, seed: int = 0, device: str = "cpu") -> list[dict]:
    """`resnet gradflow`: for each model, freshly initialised with `seed`, the per-layer gradient norms on one
    seeded batch of `dataset`'s training images (the same batch for every model), computed on `device` (fp32)."""
    from . import config as C
    from .analysis import refuse_on_cpu
    from .data import load_data
    from .data.augment import to_float
    from .device import resolve_device
    from .errors import BadInput
    from .models import build_model

    dev = resolve_device(device)

    cfg = C.resolve(flags={"data.dataset": dataset, "data.data_dir": data_dir,
                           "data.synthetic_train": max(batch_size, 512)})
    data = load_data(cfg.data)
    images, labels = data.train_tensors("gradflow")
    if batch_size > len(images):
        raise BadInput(f"--batch-size {batch_size} is larger than the training set ({len(images)})")
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(images), generator=g)[:batch_size]
    x = to_float(images[pick], *data.input.normalizer("cpu")).to(dev)
    y = labels[pick].to(dev)
    results = []
    for name in names:
        torch.manual_seed(seed)  # the same initial weights on every device: built on the CPU, then moved
        model = build_model(name, num_classes=data.num_classes, in_channels=data.channels)
        if dev.type == "cpu":
            refuse_on_cpu(model, tuple(x.shape[-2:]), batch_size, f"--batch-size {batch_size}", name)
        model = model.to(dev)
        layers, loss = conv_grad_norms(model, x, y)
        first, last = layers[0].norm, layers[-1].norm
        results.append({"model": name, "loss": loss, "first_norm": first, "last_norm": last,
                        "first_over_last": first / last if last else float("inf"),
                        "layers": [vars(layer) for layer in layers]})
    return results
