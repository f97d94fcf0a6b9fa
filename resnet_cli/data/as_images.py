"""A tensor dataset (Fashion-MNIST, MNIST, CIFAR) written out as PNG files: a few images to `predict` on, or
an image folder (train/<class>/, val/<class>/) to train or fine-tune on, offline. `resnet data images`."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import BadInput
from ..files import atomic_write, ensure_writable_dir


def slug(name: str) -> str:
    """A class name as a file-name part: `T-shirt/top` -> `t-shirt-top`, `Ankle boot` -> `ankle-boot`."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "class"


def pick_classes(text: str | None, names: list[str]) -> list[int]:
    """`--classes 5,7,9` or `--classes sandal,sneaker` (as `slug` writes them) -> class numbers, in order."""
    if not text:
        return list(range(len(names)))
    by_slug = {slug(n): i for i, n in enumerate(names)}
    out = []
    for part in (p.strip() for p in text.split(",")):
        if part.isdigit() and int(part) < len(names):
            out.append(int(part))
        elif slug(part) in by_slug:
            out.append(by_slug[slug(part)])
        else:
            raise BadInput(f"--classes: no class {part!r}; the classes are 0-{len(names) - 1} or "
                           f"{', '.join(by_slug)}")
    return list(dict.fromkeys(out))


def _png(image, path: Path) -> None:
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0], "L") if array.shape[2] == 1 else Image.fromarray(array, "RGB")
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} is a file; give a folder to write the images to")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise BadInput(f"{out} is not empty; pass --force to write into it (files of the same name are replaced)")
    ensure_writable_dir(out)


def write_samples(x, y, names: list[str], out: Path, split: str, count: int, classes: list[int],
                  force: bool = False) -> list[Path]:
    """The first `count` images of the split among `classes`, as OUT/<split><index>-<class>.png (the index is the
    image's place in the split, so the same command always writes the same files)."""
    _check_out(out, force)
    keep = set(classes)
    written = []
    for i in range(len(y)):
        if len(written) == count:
            break
        label = int(y[i])
        if label in keep:
            path = out / f"{split}{i}-{slug(names[label])}.png"
            _png(x[i], path)
            written.append(path)
    return written


def write_folder(train: tuple, test: tuple, names: list[str], out: Path, count: int, val_count: int,
                 classes: list[int], force: bool = False) -> dict[str, int]:
    """An image folder: OUT/train/<class>/<index>.png from the training split (`count` per class) and
    OUT/val/<class>/<index>.png from the test split (`val_count` per class)."""
    _check_out(out, force)
    written = {}
    for split, (x, y), n in (("train", train, count), ("val", test, val_count)):
        written[split] = 0
        for c in classes:
            folder = ensure_writable_dir(out / split / slug(names[c]))
            for i in (y == c).nonzero().flatten()[:n].tolist():
                _png(x[i], folder / f"{i}.png")
                written[split] += 1
    return written
