"""torchvision's published ImageNet weights: by name (`torchvision:resnet50[:v1|v2]`), fetched once into torch
hub's cache and checked against the sha256 their file name carries; and a file of them, known by its published
name and that checksum, read as what it is: its network, torchvision's evaluation of it (the 224 crop from a
shorter side of 256, or 232 for the v2 recipe's weights; bilinear) and ImageNet-1k's classes. `eval`,
`predict`, `summary`, `export` and `train --init` take them without `--model`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import gate
from .errors import BadInput

PREFIX = "torchvision:"
URL = "https://download.pytorch.org/models/"  # $RESNET_CLI_TORCHVISION_URL: a mirror
# torchvision's files: (our architecture, the shorter side torchvision resizes to before the 224 crop). The 8 hex
# digits of a name are the start of its sha256. torchvision's bottleneck nets are the v1.5 design.
FILES = {
    "resnet18-f37072fd.pth": ("resnet18", 256), "resnet34-b627a593.pth": ("resnet34", 256),
    "resnet50-0676ba61.pth": ("resnet50-v1.5", 256), "resnet50-11ad3fa6.pth": ("resnet50-v1.5", 232),
    "resnet101-63fe2227.pth": ("resnet101-v1.5", 256), "resnet101-cd907fc2.pth": ("resnet101-v1.5", 232),
    "resnet152-394f9c45.pth": ("resnet152-v1.5", 256), "resnet152-f82ba261.pth": ("resnet152-v1.5", 232),
}
# Names: a name alone is torchvision's DEFAULT (V2 where there is one, 80.9% top-1 for resnet50); ":v1" the
# weights that reproduce the paper (76.1%).
NAMES = {
    "resnet18": "resnet18-f37072fd.pth", "resnet18:v1": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth", "resnet34:v1": "resnet34-b627a593.pth",
    "resnet50": "resnet50-11ad3fa6.pth", "resnet50:v2": "resnet50-11ad3fa6.pth", "resnet50:v1": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-cd907fc2.pth", "resnet101:v2": "resnet101-cd907fc2.pth",
    "resnet101:v1": "resnet101-63fe2227.pth",
    "resnet152": "resnet152-f82ba261.pth", "resnet152:v2": "resnet152-f82ba261.pth",
    "resnet152:v1": "resnet152-394f9c45.pth",
}


def is_name(source: str | os.PathLike) -> bool:
    return str(source).startswith(PREFIX)


def _file(source: str | os.PathLike) -> str:
    key = str(source)[len(PREFIX):]
    if key not in NAMES:
        raise BadInput(f"{source}: torchvision publishes {', '.join(sorted(NAMES))}")
    return NAMES[key]


def architecture(source: str | os.PathLike) -> str:
    """The network a `torchvision:` name's weights are (nothing is fetched)."""
    return FILES[_file(source)][0]


def fetch(source: str | os.PathLike) -> Path:
    """A `torchvision:` name's file, from torch hub's cache ($TORCH_HOME/hub/checkpoints, where torchvision's own
    downloads are reused) or downloaded there once; either way checked against the sha256 its name carries."""
    import torch

    from .data.download import DownloadError, download

    filename = _file(source)
    dest = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if dest.is_file():
        if not _checksum_matches(dest):
            raise BadInput(f"{source}: {dest} fails its checksum (sha256 {_sha256_prefix(filename)}...): delete it "
                           "to download it again")
        return dest
    url = os.environ.get("RESNET_CLI_TORCHVISION_URL", URL).rstrip("/") + "/" + filename
    try:
        done = download(url, dest, None, sha256_prefix=_sha256_prefix(filename))  # checked while it was written
    except DownloadError as e:
        raise BadInput(f"{source}: {e}; offline, put {url} at {dest} (or give the file's path)") from None
    _MATCHED.add(_key(done))
    return done


def _sha256_prefix(filename: str) -> str:
    return filename.rsplit("-", 1)[1][:8]


_MATCHED: set[tuple[str, int, int]] = set()  # (path, size, mtime) of files whose checksum matched their name


def _checksum_matches(path: Path) -> bool:
    """Whether `path`'s sha256 starts as its name says; hashed once per process while the file is unchanged (a
    ResNet-152's file is 230 MB: fetch checks it, then load_checkpoint asks again through `published`)."""
    key = _key(path)
    if key not in _MATCHED and gate.digest(path).startswith(_sha256_prefix(path.name)):
        _MATCHED.add(key)
    return key in _MATCHED


def _key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def published(path: Path) -> tuple[str, int] | None:
    """(architecture, evaluation resize) of a file that is one of torchvision's, by its published name and the
    checksum that name carries; None for any other file (a renamed or altered one is just a state_dict)."""
    return FILES[path.name] if path.name in FILES and _checksum_matches(path) else None


def as_checkpoint(state: dict[str, Any], arch: str, resize: int) -> dict[str, Any]:
    """torchvision's state_dict as one of our checkpoints: the network, and its evaluation as torchvision gives
    it (ImageNet's conventions and classes, the 224 crop from `resize`)."""
    from dataclasses import replace

    from .data.inputs import IMAGENET_SIZE, InputSpec

    spec = replace(InputSpec.imagenet(1000), resize=resize)
    return {"version": 1, "model": state, "weights": "raw", "input": spec.as_dict(),
            "config": {"model": {"name": arch, "num_classes": 1000, "in_channels": 3},
                       "data": {"dataset": "imagefolder", "image_size": IMAGENET_SIZE, "eval_resize": resize}}}
