"""Image files into Pillow, for every reader of images: image folders, shards, `predict`, `data convert` and
`data bench`.

A file's bytes come through the gate (a regular file, at most `data.max_read_mb`, within `data.read_timeout`),
read whole and closed at once, so no descriptor is left for the garbage collector to close (Pillow never closes a
file object it was given); Pillow then opens them from memory, as it opens a shard's members. A file Pillow
cannot read is one reason, the same every time: Pillow's own message for a file it cannot identify names the
object it read from (`<_io.BytesIO object at 0x7f...>`), which no user can act on.
"""

from __future__ import annotations

import io
import os

from .. import gate

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


def read(path: str | os.PathLike, limits: gate.Limits = gate.Limits()) -> bytes:
    """The bytes of the image file `path`, through the gate (each refusal one line naming the image)."""
    return gate.read_file(path, limits, "image")


def opened(data: bytes):
    """A PIL image of an image file's bytes: the header read, the pixels not yet decoded."""
    from PIL import Image

    return Image.open(io.BytesIO(data))


def errors() -> tuple[type[BaseException], ...]:
    """What Pillow raises for bytes it cannot decode: unidentified, truncated or corrupt (OSError), a bad header
    field (ValueError; SyntaxError and EOFError in some plugins), over its decompression-bomb limit."""
    from PIL import Image

    return OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError


def reason(e: BaseException) -> str:
    """One line saying why an image could not be decoded (`e` one of `errors()`)."""
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        return "not an image Pillow can identify"
    return (str(e).splitlines() or [""])[0][:200] or type(e).__name__
