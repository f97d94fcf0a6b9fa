"""ImageNet's ILSVRC2012 archives, as image-net.org distributes them, turned into the image folders that
`data.dataset: imagefolder` reads (`resnet data imagenet`), laid out as torchvision.datasets.ImageNet lays them:

- `train/<wnid>/<wnid>_N.JPEG` from ILSVRC2012_img_train.tar (a tar holding one tar per class);
- `val/<wnid>/ILSVRC2012_val_NNNNNNNN.JPEG` from ILSVRC2012_img_val.tar (50,000 images in one folder), each
  image's class read from the devkit, ILSVRC2012_devkit_t12.tar.gz: `data/meta.mat` gives the WordNet ID of each
  class number (its synsets without children are the 1,000 classes; read with scipy, as torchvision does) and
  `data/ILSVRC2012_validation_ground_truth.txt` the class number of each validation image, in order.

How:
- Each archive is read once, in order (tarfile's stream mode), and nothing is extracted to a temporary place; its
  md5 is computed on the way and checked against the published one (the devkit's before anything is written).
- Only the names ImageNet's archives hold are written (`nNNNNNNNN.tar` holding `nNNNNNNNN_N.JPEG`,
  `ILSVRC2012_val_NNNNNNNN.JPEG`), regular members of at most MAX_IMAGE_BYTES each, their sizes checked before
  they are read: any other member is refused, so nothing lands outside OUT's class folders.
- Each image is written beside its place and renamed into it (files.atomic_write, without fsync: a bulk write);
  run again after a stop, an image already in place at the size its member records is kept, so an interrupted
  preparation goes on (the archive is read again; the writing is what is saved).
- The folder carries a marker (`.resnet-data-imagenet`, a hidden name the image-folder reader skips) saying
  what was written; a folder that is neither empty nor marked is written into only with --force.
- `synset_words.txt` beside train/ and val/ says what each class is (the devkit's words), for predict and eval.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import re
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from .. import gate
from ..errors import BadInput, RunFailed
from ..files import atomic_write, atomic_write_text, ensure_writable_dir

# file name and published md5 (torchvision's ARCHIVE_META has the same)
ARCHIVES = {"train": ("ILSVRC2012_img_train.tar", "1d675b47d978889d74fa0da5fadfb00e"),
            "val": ("ILSVRC2012_img_val.tar", "29b22e2961454d5413ddabcf34fc5622"),
            "devkit": ("ILSVRC2012_devkit_t12.tar.gz", "fa75699e90414af021442c21a62c3abf")}
DEVKIT_META = "ILSVRC2012_devkit_t12/data/meta.mat"
DEVKIT_TRUTH = "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"
MAX_IMAGE_BYTES = 64 * 2**20  # far above any of ImageNet's images (a few MB at most)
MAX_DEVKIT_BYTES = 64 * 2**20  # the devkit is 2.5 MB
MARKER = ".resnet-data-imagenet"
DESCRIPTIONS = "synset_words.txt"  # Caffe's file for ImageNet, `n01440764 tench, Tinca tinca` a line: written
#                                    beside train/ and val/, read by any image folder (imagefolder.descriptions)
WNID = r"n[0-9]{8}"
CLASS_TAR = re.compile(rf"({WNID})\.tar")
TRAIN_IMAGE = re.compile(rf"({WNID})_[0-9]{{1,8}}\.JPEG")
VAL_IMAGE = re.compile(r"ILSVRC2012_val_([0-9]{8})\.JPEG")
SCIPY_EXTRA = 'pip install "resnet-cli[imagenet]"'


@dataclass(frozen=True)
class Devkit:
    """What the devkit says: each validation image's class, its WordNet ID (image N is val_wnids[N - 1]), and
    what each class is ("tench, Tinca tinca")."""

    val_wnids: tuple[str, ...]
    words: dict[str, str]


def archives_in(src: Path) -> dict[str, Path]:
    """The archives in `src` by their published names ("train", "val", "devkit"); the validation images need the
    devkit. One line saying what to put where when there is nothing to prepare."""
    if not src.is_dir():
        raise BadInput(f"{src} is not a folder: give the folder that holds ImageNet's archives")
    found = {key: src / name for key, (name, _) in ARCHIVES.items() if (src / name).exists()}
    if "val" in found and "devkit" not in found:
        raise BadInput(f"{found['val']} needs the devkit for its classes: put {ARCHIVES['devkit'][0]} beside it "
                       "(image-net.org, ILSVRC2012)")
    if "train" not in found and "val" not in found:
        raise BadInput(f"{src} holds neither {ARCHIVES['train'][0]} nor {ARCHIVES['val'][0]} (with "
                       f"{ARCHIVES['devkit'][0]}): download them from image-net.org (ILSVRC2012) into it")
    return found


def archives_hint(folder: Path) -> str:
    """For a folder given as an image folder: how to make one of it, when it holds ImageNet's archives ("" if not)."""
    if not any((folder / name).is_file() for name, _ in ARCHIVES.values()):
        return ""
    import shlex

    return (f"; {folder} holds ImageNet's archives: make the image folders with resnet data imagenet "
            f"{shlex.quote(str(folder))} OUT, then train with --data-dir OUT")


def read_devkit(path: Path) -> Devkit:
    """The devkit's classes and validation labels, checked: its md5, its two files, 1..N class numbers that all
    name a class."""
    try:
        import scipy.io
    except ImportError:
        raise BadInput(f"reading ImageNet's devkit (its meta.mat) needs scipy: {SCIPY_EXTRA}") from None
    raw = gate.read_file(path, gate.Limits(MAX_DEVKIT_BYTES, keys=("the bound on the devkit", "data.read_timeout")))
    _check_md5(path, hashlib.md5(raw).hexdigest(), ARCHIVES["devkit"][1])
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            for member in tar:
                if member.name in (DEVKIT_META, DEVKIT_TRUTH) and member.isfile():
                    members[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BadInput(f"cannot read {path}: {str(e)[:200]}") from None
    for name in (DEVKIT_META, DEVKIT_TRUTH):
        if name not in members:
            raise BadInput(f"{path} has no {name}: not ImageNet's ILSVRC2012 devkit")
    try:
        synsets = scipy.io.loadmat(io.BytesIO(members[DEVKIT_META]), squeeze_me=True)["synsets"]
        leaves = synsets[synsets["num_children"] == 0]
        by_number = {int(n): str(w) for n, w in zip(leaves["ILSVRC2012_ID"], leaves["WNID"])}
        words = {str(w): " ".join(str(text).split()) for w, text in zip(leaves["WNID"], leaves["words"])}
        truth = [int(line) for line in members[DEVKIT_TRUTH].decode("ascii").split()]
    except Exception as e:  # noqa: BLE001 - scipy's and numpy's errors for a damaged meta.mat are many
        raise BadInput(f"cannot read the classes in {path}: {str(e).splitlines()[0][:200] if str(e) else e!r}") \
            from None
    unknown = sorted(set(truth) - set(by_number))
    if not truth or unknown:
        raise BadInput(f"{path}: its validation labels name classes its meta.mat does not have ({unknown[:5]})")
    if bad := [w for w in by_number.values() if not re.fullmatch(WNID, w)][:3]:
        raise BadInput(f"{path}: its meta.mat names classes that are not WordNet IDs ({bad})")
    return Devkit(tuple(by_number[n] for n in truth), words)


def prepare(src: Path, out: Path, force: bool = False,
            on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write OUT/train/ and OUT/val/ from the archives in `src` (`archives_in`): {"out", "train", "val", "classes",
    "kept"}: the images in each split, its classes, and how many of the images were in place already (an earlier
    run's). A split an earlier run finished (the marker says so) is not read again, unless `force`."""
    found = archives_in(src)
    devkit = read_devkit(found["devkit"]) if "devkit" in found else None
    _check_out(out, force)
    marker = out / MARKER
    finished = {} if force else _finished(marker)
    sizes = {key: found[key].stat().st_size for key in ("train", "val") if key in found and key not in finished}
    total = sum(sizes.values())
    read_before, kept = 0, sum(finished.get(key, 0) for key in ("train", "val"))
    atomic_write_text(marker, json.dumps({"finished": finished}))  # first: a stopped run is ours to go on with
    for key in sizes:
        def moved(n: int, base: int = read_before) -> None:
            if on_progress is not None:
                on_progress(base + n, total)

        try:
            written, in_place, classes = (_train if key == "train" else _val)(found[key], out / key, devkit, moved)
        except _NotWritten as failed:  # a full disk, a folder that became read-only
            e = failed.error
            why = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise RunFailed(f"could not write {e.filename or out} ({why}); what is written is kept: make room, "
                            f"then run the same command again ({_again(src, out)}): it goes on where it "
                            "stopped") from None
        finished[key], kept = written + in_place, kept + in_place
        finished[f"{key}_classes"] = len(classes)
        atomic_write_text(marker, json.dumps({"finished": finished}))
        read_before += sizes[key]
    if devkit is not None:  # what each class is, for predict and eval to say (imagefolder.descriptions)
        atomic_write_text(out / DESCRIPTIONS, "".join(f"{w} {devkit.words[w]}\n" for w in sorted(devkit.words)))
    counts = {key: finished[key] for key in ("train", "val") if key in finished}
    return {"out": str(out), **counts, "classes": max(v for k, v in finished.items() if k.endswith("_classes")),
            "kept": kept}


def _again(src: Path, out: Path) -> str:
    import shlex

    return f"resnet data imagenet {shlex.quote(str(src))} {shlex.quote(str(out))}"


def _finished(marker: Path) -> dict[str, int]:
    """The splits an earlier run finished, with their image and class counts (its marker): {} when none did."""
    if not marker.is_file():
        return {}
    try:
        saved = json.loads(gate.read_file(marker, gate.Limits(2**16)))["finished"]
    except (BadInput, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(saved, dict):
        return {}
    counts = {k: v for k, v in saved.items() if type(v) is int and v >= 0}
    splits = [s for s in ("train", "val") if s in counts and f"{s}_classes" in counts]  # a split with both
    return {k: counts[k] for s in splits for k in (s, f"{s}_classes")}


def _train(path: Path, root: Path, devkit: Devkit | None, moved) -> tuple[int, int, set[str]]:
    _folder(root)
    written = kept = 0
    classes: set[str] = set()
    for member, outer in _members(path, moved):
        wnid = _named(CLASS_TAR, member, path)[1]
        folder = _folder(root / wnid)
        classes.add(wnid)
        with _read(f"{member.name} in {path}"), \
                tarfile.open(fileobj=outer.extractfile(member), mode="r|", bufsize=gate.CHUNK) as inner:
            for image in inner:
                name = _named(TRAIN_IMAGE, image, path, f"{member.name}: ")
                if name[1] != wnid:
                    raise BadInput(f"{path}: {member.name} holds {image.name}, an image of another class")
                put = _put(folder / image.name, image, inner)
                written, kept = written + put, kept + (not put)
    if devkit is not None and (missing := sorted(set(devkit.val_wnids) - classes)):
        raise BadInput(f"{path} lacks {len(missing)} of the devkit's classes ({', '.join(missing[:3])}...)")
    return written, kept, classes


def _val(path: Path, root: Path, devkit: Devkit | None, moved) -> tuple[int, int, set[str]]:
    assert devkit is not None  # archives_in asks for it
    _folder(root)
    written = kept = 0
    numbers: set[int] = set()
    for member, tar in _members(path, moved):
        number = int(_named(VAL_IMAGE, member, path)[1])
        if not 1 <= number <= len(devkit.val_wnids):
            raise BadInput(f"{path}: {member.name} has no label in the devkit (it labels "
                           f"{len(devkit.val_wnids):,} images)")
        with _read(str(path)):
            put = _put(_folder(root / devkit.val_wnids[number - 1]) / member.name, member, tar)
        written, kept = written + put, kept + (not put)
        numbers.add(number)
    if len(numbers) != len(devkit.val_wnids):
        raise BadInput(f"{path} holds {len(numbers):,} of the {len(devkit.val_wnids):,} validation images the "
                       "devkit labels (a download cut short?)")
    return written, kept, set(devkit.val_wnids)


def _members(path: Path, moved) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """The members of the archive at `path`, read once in order, its md5 checked at its end against the published
    one. A member that is not a regular file is refused."""
    expected = next(md5 for name, md5 in ARCHIVES.values() if name == path.name)
    with gate.open_regular(path, "archive") as raw:
        reader = _Hashed(raw, moved)
        with _read(str(path)):
            with tarfile.open(fileobj=reader, mode="r|", bufsize=gate.CHUNK) as tar:
                for member in tar:
                    if not member.isfile():
                        raise BadInput(f"{path}: {member.name[:120]!r} is not a regular file: not ImageNet's archive")
                    yield member, tar
            while reader.read(gate.CHUNK):  # the end-of-archive padding, for the md5
                pass
    _check_md5(path, reader.md5.hexdigest(), expected)


@contextmanager
def _read(what: str) -> Iterator[None]:
    """Reading an archive (`what`): a damaged or cut-short one, or a failing disk, is one line."""
    try:
        yield
    except (tarfile.TarError, EOFError) as e:
        raise BadInput(f"cannot read {what}: {str(e)[:160]} (a download cut short?)") from None
    except OSError as e:
        raise BadInput(f"cannot read {what}: {e.strerror or e}") from None


class _Hashed:
    """A file read in order, its md5 kept and the bytes read so far reported to `moved`."""

    def __init__(self, raw: BinaryIO, moved) -> None:
        self.raw, self.moved, self.md5, self.count, self.told = raw, moved, hashlib.md5(), 0, 0

    def read(self, n: int = -1) -> bytes:
        block = self.raw.read(n)
        self.md5.update(block)
        self.count += len(block)
        if self.count - self.told >= 16 * gate.CHUNK or not block:  # a progress bar moved every 16 MiB
            self.moved(self.count)
            self.told = self.count
        return block


def _check_md5(path: Path, got: str, expected: str) -> None:
    if got != expected:
        raise BadInput(f"{path} is not the archive image-net.org publishes (md5 {got}, expected {expected}): "
                       "a download cut short, or another file under its name")


def _named(pattern: re.Pattern, member: tarfile.TarInfo, path: Path, inside: str = "") -> re.Match:
    found = pattern.fullmatch(member.name)
    if found is None or not member.isfile():
        raise BadInput(f"{path}: {inside}{member.name[:120]!r} is not a name ImageNet's archive holds: refused")
    return found


def _folder(folder: Path) -> Path:
    if folder.is_symlink() or folder.exists() and not folder.is_dir():
        raise BadInput(f"{folder} is a link or a file where a folder of images goes: refused (it would be "
                       "written through)")
    return ensure_writable_dir(folder)


def _put(path: Path, member: tarfile.TarInfo, tar: tarfile.TarFile) -> bool:
    """Write one image (False: it is in place already, at the size its member records)."""
    if member.size > MAX_IMAGE_BYTES:
        raise BadInput(f"{member.name} is {member.size:,} bytes: larger than {MAX_IMAGE_BYTES // 2**20} MiB, the "
                       "bound on an image in ImageNet's archives")
    if path.is_file() and not path.is_symlink() and path.stat().st_size == member.size:
        return False
    data = tar.extractfile(member).read(member.size)
    if len(data) != member.size:
        raise BadInput(f"{member.name} is cut short: {len(data):,} of {member.size:,} bytes (a download cut short?)")
    try:
        atomic_write(path, lambda tmp: tmp.write_bytes(data), sync=False)
    except OSError as e:
        raise _NotWritten(e) from None
    return True


class _NotWritten(Exception):
    """An image that could not be written (`error`): told apart from a failed read of the archive (`_read`)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} is a file; give a folder to write ImageNet's image folders to")
    if out.is_dir() and not (out / MARKER).is_file() and any(out.iterdir()) and not force:
        raise BadInput(f"{out} is not empty and was not written by resnet data imagenet; pass --force to write "
                       "into it (images of the same name are replaced)")
    ensure_writable_dir(out)
