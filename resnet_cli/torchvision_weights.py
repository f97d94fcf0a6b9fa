"""torchvision's published ImageNet weights: by name (`torchvision:resnet50[:v1|v2]`), fetched once into torch
hub's cache and checked against the sha256 their file name carries; and a file of them, known by its published
name and that checksum, read as what it is: its network, torchvision's evaluation of it (the 224 crop from a
shorter side of 256, or 232 for the v2 recipe's weights; bilinear) and ImageNet-1k's classes. `eval`,
`predict`, `summary`, `export` and `train --init` take them without `--model`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from . import gate
from .errors import BadInput

PREFIX = "torchvision:"
URL = "https://download.pytorch.org/models/"  # $RESNET_CLI_TORCHVISION_URL: a mirror


class Published(NamedTuple):
    """One of torchvision's files, as torchvision's `ResNet*_Weights` describe it."""
    arch: str      # our network (torchvision's bottleneck nets are the v1.5 design)
    resize: int    # the shorter side torchvision resizes to before the 224 crop
    top1: float    # torchvision's published ImageNet-1k validation accuracy (acc@1, %), not measured by us
    top5: float    # acc@5
    params: int    # torchvision's num_params (tests check our network has exactly these)
    enum: str      # torchvision's name for them

    @property
    def accuracy(self) -> dict[str, float]:
        """top1 and top5 as fractions, as `eval` reports accuracies."""
        return {"top1": round(self.top1 / 100, 5), "top5": round(self.top5 / 100, 5)}


# torchvision's files by name; the 8 hex digits of a name are the start of its sha256
FILES = {
    "resnet18-f37072fd.pth": Published("resnet18", 256, 69.758, 89.078, 11689512, "ResNet18_Weights.IMAGENET1K_V1"),
    "resnet34-b627a593.pth": Published("resnet34", 256, 73.314, 91.420, 21797672, "ResNet34_Weights.IMAGENET1K_V1"),
    "resnet50-0676ba61.pth": Published("resnet50-v1.5", 256, 76.130, 92.862, 25557032,
                                       "ResNet50_Weights.IMAGENET1K_V1"),
    "resnet50-11ad3fa6.pth": Published("resnet50-v1.5", 232, 80.858, 95.434, 25557032,
                                       "ResNet50_Weights.IMAGENET1K_V2"),
    "resnet101-63fe2227.pth": Published("resnet101-v1.5", 256, 77.374, 93.546, 44549160,
                                        "ResNet101_Weights.IMAGENET1K_V1"),
    "resnet101-cd907fc2.pth": Published("resnet101-v1.5", 232, 81.886, 95.780, 44549160,
                                        "ResNet101_Weights.IMAGENET1K_V2"),
    "resnet152-394f9c45.pth": Published("resnet152-v1.5", 256, 78.312, 94.046, 60192808,
                                        "ResNet152_Weights.IMAGENET1K_V1"),
    "resnet152-f82ba261.pth": Published("resnet152-v1.5", 232, 82.284, 96.002, 60192808,
                                        "ResNet152_Weights.IMAGENET1K_V2"),
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


def listing(pattern: str = "*") -> list[dict[str, Any]]:
    """One row per published file whose name (or any other name of it) matches `pattern` (`resnet5*`,
    `torchvision:resnet50*`): its shortest name first, the others, what torchvision publishes of it, and whether
    it is in the cache already (nothing is fetched, torch is not imported)."""
    from fnmatch import fnmatchcase

    rows = []
    for filename, pub in FILES.items():
        names = sorted((k for k, v in NAMES.items() if v == filename), key=lambda k: (len(k), k))
        if not any(fnmatchcase(n, pattern) or fnmatchcase(PREFIX + n, pattern) for n in names):
            continue
        rows.append({"name": PREFIX + names[0], "names": [PREFIX + n for n in names], "model": pub.arch,
                     "file": filename, "torchvision": pub.enum, "image_size": 224, "resize": pub.resize,
                     "interpolation": "bilinear", **pub.accuracy, "params": pub.params,
                     "cached": (cache_dir() / filename).is_file()})
    return rows


def cache_dir() -> Path:
    """torch hub's checkpoints folder, where torchvision keeps these files too: $TORCH_HOME/hub/checkpoints
    ($TORCH_HOME defaults to $XDG_CACHE_HOME/torch, that to ~/.cache/torch), as torch.hub.get_dir() has it."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def is_name(source: str | os.PathLike) -> bool:
    return str(source).startswith(PREFIX)


def _file(source: str | os.PathLike) -> str:
    key = str(source)[len(PREFIX):]
    if key not in NAMES:
        raise BadInput(f"{source}: torchvision publishes {', '.join(sorted(NAMES))}")
    return NAMES[key]


def architecture(source: str | os.PathLike) -> str:
    """The network a `torchvision:` name's weights are (nothing is fetched)."""
    return FILES[_file(source)].arch


def fetch(source: str | os.PathLike) -> Path:
    """A `torchvision:` name's file, from torch hub's cache ($TORCH_HOME/hub/checkpoints, where torchvision's own
    downloads are reused) or downloaded there once; either way checked against the sha256 its name carries."""
    from .data.download import DownloadError, download

    filename = _file(source)
    dest = cache_dir() / filename
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


def published(path: Path) -> Published | None:
    """What torchvision publishes of a file that is one of theirs, known by its published name and the checksum
    that name carries; None for any other file (a renamed or altered one is just a state_dict)."""
    return FILES[path.name] if path.name in FILES and _checksum_matches(path) else None


IMAGENET_VAL = 50_000  # the images of ImageNet-1k's validation set, on which torchvision's figures are measured


def as_checkpoint(state: dict[str, Any], pub: Published) -> dict[str, Any]:
    """torchvision's state_dict as one of our checkpoints: the network, and its evaluation as torchvision gives
    it (ImageNet's conventions and classes, the 224 crop from its resize)."""
    from dataclasses import replace

    from .data.inputs import IMAGENET_SIZE, InputSpec

    spec = replace(InputSpec.imagenet(1000), resize=pub.resize)
    return {"version": 1, "model": state, "weights": "raw", "input": spec.as_dict(),
            "config": {"model": {"name": pub.arch, "num_classes": 1000, "in_channels": 3},
                       "data": {"dataset": "imagefolder", "image_size": IMAGENET_SIZE, "eval_resize": pub.resize}}}


def beside_published(path: Path, report: dict[str, Any]) -> dict[str, Any] | None:
    """What torchvision publishes of the weights in `path` that an `eval` report is of (known by the file's name
    and checksum, never by what the file says), and whether the report measured the same thing (all of
    ImageNet-1k's validation images, one crop, torchvision's evaluation): then the difference in points, a
    check of this evaluation pipeline. None for any other file."""
    from .data.imagenet_classes import imagenet_1k
    from .data.inputs import IMAGENET_SIZE

    pub = published(path)
    if pub is None:
        return None
    published_as = {"by": "torchvision", "weights": pub.enum, **pub.accuracy, "images": IMAGENET_VAL,
                    "image_size": IMAGENET_SIZE, "resize": pub.resize, "interpolation": "bilinear"}
    same = (report["split"] == "test" and report["count"] == IMAGENET_VAL and report["crops"] == 1
            and all(report[k] == published_as[k] for k in ("image_size", "resize", "interpolation"))
            and report["classes"] == list(imagenet_1k()[0]))
    out = {**published_as, "comparable": same}
    if same:
        out["difference"] = {k: round(100 * (report[k] - published_as[k]), 3) for k in ("top1", "top5")}
    return out
