"""Image files into Pillow, for every reader of images: image folders, shards, `predict`, `data convert` and
`data bench`.

A file's bytes come through the gate (a regular file, at most `data.max_read_mb`, within `data.read_timeout`),
read whole and closed at once, so no descriptor is left for the garbage collector to close (Pillow never closes a
file object it was given); Pillow then opens them from memory, as it opens a shard's members. A file Pillow
cannot read is one reason, the same every time: Pillow's own message for a file it cannot identify names the
object it read from (`<_io.BytesIO object at 0x7f...>`), which no user can act on.

An image is used as a viewer shows it: a camera or phone often stores a portrait photo's pixels sideways with an
EXIF Orientation tag saying how to turn them, and every reader here turns them (transforms.upright_8bit), sizes
and training crops included (`shown_size`), as Ultralytics does; torchvision's and timm's loaders ignore the tag.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import warnings

from .. import gate

# An image file's extensions when a folder is searched: torchvision's ImageFolder's (its counts are ours).
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}
# The formats Pillow may read an image's bytes as, whatever the file's name: those of EXTENSIONS (JPEG includes the
# MPO files of many cameras, which Pillow's JPEG reader opens; PPM also PGM), and GIF for predict. Pillow identifies
# bytes by their content and knows dozens of formats more; its EPS reader runs Ghostscript (`gs`, a program on
# PATH) on the file's PostScript when the image is decoded, so a file of PostScript named photo.png in an image
# folder, a shard or a predict URL ran a command. None of the others is wanted here either.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "PPM", "TIFF", "GIF")


def hidden(name: str) -> bool:
    """Whether a file or folder name is hidden (starts with '.'): never an image or a class when a folder is
    searched. macOS writes `._photo.jpg` (AppleDouble metadata, not an image) beside every file it copies to a
    drive or share without its metadata, which stopped a run at the first such file; Jupyter makes
    `.ipynb_checkpoints`, which torchvision's ImageFolder takes for a class. A file named on the command line
    is read whatever its name."""
    return name.startswith(".")


def read(path: str | os.PathLike, limits: gate.Limits = gate.Limits()) -> bytes:
    """The bytes of the image file `path`, through the gate (each refusal one line naming the image)."""
    return gate.read_file(path, limits, "image")


def opened(data: bytes):
    """A PIL image of an image file's bytes, read as one of FORMATS only: the header read, the pixels not yet
    decoded."""
    from PIL import Image

    with quiet_exif():  # Pillow parses a JPEG's EXIF block as it opens it
        return Image.open(io.BytesIO(data), formats=_known_formats())


@functools.cache
def _known_formats() -> tuple[str, ...]:
    """FORMATS as this Pillow knows them, found once per process: every plugin registered (WebP and TIFF are not
    among the few Pillow loads first), and a format it was built without (WebP) left out."""
    from PIL import Image

    Image.init()
    return tuple(f for f in FORMATS if f in Image.OPEN)


@contextlib.contextmanager
def quiet_exif():
    """Pillow warns on stderr about a damaged EXIF block (its EXIF reader is the TIFF plugin's), per image and per
    worker: untrusted metadata we do without (`orientation`), and no user can act on it. Its other warnings (a
    decompression bomb's) stay."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")
        yield


ORIENTATION_TAG = 0x0112  # EXIF Orientation: 1 as stored, 2-8 mirrored and/or turned (5-8 swap the sides)


def orientation(im) -> int:
    """How the pixels of an opened PIL image are still to be turned once decoded, as its EXIF orientation says
    (1-8; 1: as they are), read from its header before any pixel is decoded. Pillow's TIFF decoder turns a TIFF
    itself (1 here). A PNG's eXIf chunk counts where Pillow's writer puts it, before the pixels; one after them
    is not looked for (Pillow would decode the image to reach it)."""
    from PIL import Image

    if im.format == "TIFF":
        return 1
    try:
        with quiet_exif():
            value = Image.Image.getexif(im).get(ORIENTATION_TAG, 1)  # the base method: PNG's own would decode
    except Exception:  # noqa: BLE001 - older Pillows raise struct.error, SyntaxError, KeyError... on a damaged
        return 1       # block of untrusted metadata; a viewer then shows the pixels as stored, and so do we
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def shown_size(im) -> tuple[int, int]:
    """(width, height) of an opened PIL image as shown, once decoded and turned upright (5-8 swap the sides)."""
    if im.format == "TIFF":
        im.load()  # Pillow < 11 gives a TIFF's stored size until it decodes (and turns) it
        return im.size
    w, h = im.size
    return (h, w) if orientation(im) >= 5 else (w, h)


def errors() -> tuple[type[BaseException], ...]:
    """What Pillow raises for bytes it cannot decode: unidentified, truncated or corrupt (OSError), a bad header
    field (ValueError; SyntaxError and EOFError in some plugins), over its decompression-bomb limit."""
    from PIL import Image

    return OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError


def reason(e: BaseException) -> str:
    """One line saying why an image could not be decoded (`e` one of `errors()`)."""
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        return "not an image in a format read here (JPEG, PNG, WebP, BMP, PPM, TIFF, GIF)"
    return (str(e).splitlines() or [""])[0][:200] or type(e).__name__
