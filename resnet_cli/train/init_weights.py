"""model.init: a new run's weights copied from a run folder, one of our checkpoints, weights that travel (a
safetensors file, a Hub repo) or a torchvision file, or torchvision's published ImageNet weights by name
(`torchvision:resnet50`: torchvision_weights.py)."""

from __future__ import annotations

import os
import re
from typing import Any

from .. import torchvision_weights
from ..checkpoint import checkpoint_file, is_full_checkpoint, load_checkpoint, state_dict_of
from ..errors import BadInput


def init_from(model: Any, source: str | os.PathLike, name: str) -> str:
    """model.init: copy the weights of `source` (a run folder, one of our checkpoints or a bare torchvision-format
    state_dict) into `model`, a freshly built `name`, and return the one line that says what happened.

    Every tensor is matched by name and shape. A head (fc) or stem convolution of another shape (another
    num_classes or in_channels), or a head the source lacks (a feature extractor's, timm's num_classes=0), keeps
    the new net's own initialisation; anything else that does not fit is
    one BadInput line. BatchNorm's batch counters may be absent (older torchvision files)."""
    path, ckpt, where = _source(source, name)
    state = state_dict_of(ckpt)
    target = model.state_dict()
    headless = "fc.weight" not in state and "fc.bias" not in state  # a feature extractor's (timm's num_classes=0)
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")
               and not (headless and k in ("fc.weight", "fc.bias"))]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        from ..models.registry import shortcut_mismatch

        shortcuts = shortcut_mismatch(*([k for k in keys if not k.endswith("num_batches_tracked")]
                                        for keys in (target, state)))
        if shortcuts:
            raise BadInput(f"{where} does not fit {name}: {shortcuts}")
        parts = [f"{len(missing)} of its tensors missing ({', '.join(missing[:3])}...)" if missing else "",
                 f"{len(unexpected)} unknown to it ({', '.join(unexpected[:3])}...)" if unexpected else ""]
        raise BadInput(f"{where} does not fit {name}: {'; '.join(p for p in parts if p)}; is it another "
                       "architecture?")
    renewed = {"fc.weight": 0, "fc.bias": 0, "conv1.weight": 1}  # the one dimension a new head (stem) changes

    def only_dim(k: str, dim: int) -> bool:
        a, b = list(state[k].shape), list(target[k].shape)
        return len(a) == len(b) and all(x == y for i, (x, y) in enumerate(zip(a, b)) if i != dim)

    differ = [k for k in target if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
    inside = [k for k in differ if k not in renewed or not only_dim(k, renewed[k])]
    if inside:
        k = inside[0]
        raise BadInput(f"{where} does not fit {name}: {k} is {list(state[k].shape)}, the model's is "
                       f"{list(target[k].shape)}" + (f" ({len(inside) - 1} more)" if len(inside) > 1 else ""))
    model.load_state_dict({k: v for k, v in state.items() if k not in differ}, strict=False)
    loaded = sum(1 for k in state if k not in differ)
    line = f"model.init: loaded {loaded} of {len(target)} tensors from {path}"
    new = [f"new head fc (none -> {target['fc.weight'].shape[0]} classes)"] if headless else []
    if "fc.weight" in differ:
        new.append(f"new head fc ({state['fc.weight'].shape[0]} -> {target['fc.weight'].shape[0]} classes)")
    if "conv1.weight" in differ:
        new.append(f"new stem conv1 ({state['conv1.weight'].shape[1]} -> {target['conv1.weight'].shape[1]} "
                   "input channels)")
    return line + ("; " + ", ".join(new) if new else "; nothing re-initialised")


def _source(source: str | os.PathLike, name: str) -> tuple[Any, dict[str, Any], str]:
    """(the file, its checkpoint, how errors name it) of model.init's `source` for a `name` to train; weights of
    another network that its tensors would fit (resnet50-v1.5's into resnet50) are refused here."""
    if torchvision_weights.is_name(source) and torchvision_weights.architecture(source) != name:
        arch = torchvision_weights.architecture(source)  # said before anything is fetched
        raise BadInput(f"model.init {source}: torchvision's weights are a {arch}"
                       + (" (stride on the 3x3 convolution)" if arch.endswith("v1.5") else "")
                       + f", not a {name}: train --model {arch}")
    path = checkpoint_file(source)
    if not path.exists():
        known = re.fullmatch(r"(resnet\d+)-[0-9a-f]{8}\.pth", path.name)
        hint = f"; torchvision's file is at https://download.pytorch.org/models/{path.name}" if known else ""
        raise BadInput(f"model.init: {path} not found{hint}")
    ckpt = load_checkpoint(path)
    where = f"model.init {path}"
    saved = ckpt["config"]["model"].get("name") if is_full_checkpoint(ckpt) else None
    if saved not in (None, name):
        if str(saved).removesuffix("-v1.5") == name.removesuffix("-v1.5"):  # resnet50 and resnet50-v1.5
            raise BadInput(f"{where}: its weights are a {saved}, not a {name} (the same tensors, the stride on "
                           f"another convolution: they would load and compute another function): train --model "
                           f"{saved}")
        where += f" (a {saved})"
    return path, ckpt, where
