"""model.init: a new run's weights copied from a run folder, one of our checkpoints or a torchvision file, or
torchvision's published ImageNet weights by name (`torchvision:resnet50`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..checkpoint import checkpoint_file, is_full_checkpoint, load_checkpoint, state_dict_of
from .. import gate
from ..errors import BadInput


TORCHVISION_URL = "https://download.pytorch.org/models/"  # $RESNET_CLI_TORCHVISION_URL: a mirror
# torchvision's ImageNet weights by name: (our architecture, file). A name alone is torchvision's DEFAULT (V2 where
# there is one, 80.9% top-1 for resnet50); ":v1" the weights that reproduce the paper (76.1%). The 8 hex digits
# of a file name are the start of its sha256. torchvision's bottleneck nets are the v1.5 design.
TORCHVISION = {
    "resnet18": ("resnet18", "resnet18-f37072fd.pth"), "resnet18:v1": ("resnet18", "resnet18-f37072fd.pth"),
    "resnet34": ("resnet34", "resnet34-b627a593.pth"), "resnet34:v1": ("resnet34", "resnet34-b627a593.pth"),
    "resnet50": ("resnet50-v1.5", "resnet50-11ad3fa6.pth"), "resnet50:v2": ("resnet50-v1.5", "resnet50-11ad3fa6.pth"),
    "resnet50:v1": ("resnet50-v1.5", "resnet50-0676ba61.pth"),
    "resnet101": ("resnet101-v1.5", "resnet101-cd907fc2.pth"),
    "resnet101:v2": ("resnet101-v1.5", "resnet101-cd907fc2.pth"),
    "resnet101:v1": ("resnet101-v1.5", "resnet101-63fe2227.pth"),
    "resnet152": ("resnet152-v1.5", "resnet152-f82ba261.pth"),
    "resnet152:v2": ("resnet152-v1.5", "resnet152-f82ba261.pth"),
    "resnet152:v1": ("resnet152-v1.5", "resnet152-394f9c45.pth"),
}


def weights_file(source: str | os.PathLike, name: str) -> str | os.PathLike:
    """model.init's source as a file. `torchvision:NAME[:v1|v2]` is torchvision's published file, downloaded once
    into torch hub's cache ($TORCH_HOME/hub/checkpoints, where torchvision's own downloads are reused) and
    checked against the sha256 its name carries; anything else is returned as given."""
    if not str(source).startswith("torchvision:"):
        return source
    key = str(source).split(":", 1)[1]
    if key not in TORCHVISION:
        raise BadInput(f"model.init {source}: torchvision publishes {', '.join(sorted(TORCHVISION))}")
    arch, filename = TORCHVISION[key]
    if name != arch:
        raise BadInput(f"model.init {source}: torchvision's weights are a {arch}"
                       + (" (stride on the 3x3 convolution)" if arch.endswith("v1.5") else "")
                       + f", not a {name}: train --model {arch}")
    import torch

    from ..data.download import DownloadError, download

    dest = Path(torch.hub.get_dir()) / "checkpoints" / filename
    prefix = filename.rsplit("-", 1)[1][:8]
    if dest.is_file():
        if not gate.digest(dest).startswith(prefix):
            raise BadInput(f"model.init {source}: {dest} fails its checksum (sha256 {prefix}...): delete it to "
                           "download it again")
        return dest
    url = os.environ.get("RESNET_CLI_TORCHVISION_URL", TORCHVISION_URL).rstrip("/") + "/" + filename
    try:
        return download(url, dest, None, sha256_prefix=prefix)
    except DownloadError as e:
        raise BadInput(f"model.init {source}: {e}; offline, put {url} at {dest} (or pass the file's path to "
                       "--init)") from None


def init_from(model: Any, source: str | os.PathLike, name: str) -> str:
    """model.init: copy the weights of `source` (a run folder, one of our checkpoints or a bare torchvision-format
    state_dict) into `model`, a freshly built `name`, and return the one line that says what happened.

    Every tensor is matched by name and shape. A head (fc) or stem convolution of another shape (another
    num_classes or in_channels), or a head the source lacks (a feature extractor's, timm's num_classes=0), keeps
    the new net's own initialisation; anything else that does not fit is
    one BadInput line. BatchNorm's batch counters may be absent (older torchvision files)."""
    path = checkpoint_file(weights_file(source, name))
    if not path.exists():
        known = re.fullmatch(r"(resnet\d+)-[0-9a-f]{8}\.pth", path.name)
        hint = f"; torchvision's file is at https://download.pytorch.org/models/{path.name}" if known else ""
        raise BadInput(f"model.init: {path} not found{hint}")
    ckpt = load_checkpoint(path)
    state = state_dict_of(ckpt)
    target = model.state_dict()
    where = f"model.init {path}"
    saved = ckpt["config"]["model"].get("name") if is_full_checkpoint(ckpt) else None
    if saved not in (None, name):
        if str(saved).removesuffix("-v1.5") == name.removesuffix("-v1.5"):  # resnet50 and resnet50-v1.5
            raise BadInput(f"{where}: its weights are a {saved}, not a {name} (the same tensors, the stride on "
                           f"another convolution: they would load and compute another function): train --model "
                           f"{saved}")
        where += f" (a {saved})"
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
