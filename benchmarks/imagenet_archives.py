"""How fast `resnet data imagenet` turns ImageNet-shaped archives into image folders, against the usual shell
route in the same run: `md5sum` of the archive, then GNU tar for the outer tar and each class's tar (what
image-net.org's users run, e.g. the widely copied extract_ILSVRC.sh, less its validation step).

The archives are miniatures with ImageNet's layout and its mean file size (about 110 KB a training image;
random bytes: neither side decodes them): CLASSES tars of IMAGES images each.

    python benchmarks/imagenet_archives.py [--classes 40] [--images 250] [--size-kb 110] [--dir /tmp/inet-bench]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_cli.data import imagenet  # noqa: E402


def build(root: Path, classes: int, images: int, size: int) -> Path:
    src = root / "archives"
    src.mkdir(parents=True)
    rng = __import__("random").Random(0)
    with tarfile.open(src / imagenet.ARCHIVES["train"][0], "w") as outer:
        for c in range(classes):
            wnid = f"n{1440764 + c:08d}"
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as inner:
                for k in range(images):
                    data = rng.randbytes(size)
                    info = tarfile.TarInfo(f"{wnid}_{k}.JPEG")
                    info.size = len(data)
                    inner.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo(f"{wnid}.tar")
            info.size = buf.tell()
            buf.seek(0)
            outer.addfile(info, buf)
    return src


def ours(src: Path, out: Path) -> float:
    start = time.perf_counter()
    result = imagenet.prepare(src, out)
    took = time.perf_counter() - start
    assert result["train"] > 0 and result["kept"] == 0, result
    return took


def shell(src: Path, out: Path) -> float:
    archive = src / imagenet.ARCHIVES["train"][0]
    start = time.perf_counter()
    subprocess.run(["md5sum", str(archive)], check=True, capture_output=True)
    out.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(out)], check=True)
    for inner in sorted(out.glob("*.tar")):
        folder = out / inner.stem
        folder.mkdir()
        subprocess.run(["tar", "-xf", str(inner), "-C", str(folder)], check=True)
        inner.unlink()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=40)
    ap.add_argument("--images", type=int, default=250)
    ap.add_argument("--size-kb", type=int, default=110)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/inet-bench"))
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    shutil.rmtree(a.dir, ignore_errors=True)
    src = build(a.dir, a.classes, a.images, a.size_kb * 1000)
    archive = src / imagenet.ARCHIVES["train"][0]
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    imagenet.ARCHIVES["train"] = (archive.name, md5)  # this miniature's md5 as the published one
    n, mb = a.classes * a.images, archive.stat().st_size / 1e6
    print(f"{n:,} images in {a.classes} class tars, {mb:,.0f} MB; {os.cpu_count()} cores, Python "
          f"{sys.version.split()[0]}")
    for r in range(a.repeats):  # alternated, each on a fresh folder
        for name, run in (("resnet data imagenet", ours), ("md5sum + GNU tar", shell)):
            out = a.dir / f"out-{name.split()[0]}-{r}"
            if name.startswith("resnet"):
                out = out / "x"  # prepare writes OUT/train/
            took = run(src, out)
            print(f"{name:22s} {took:6.2f} s  {n / took:8,.0f} images/s  {mb / took:6,.0f} MB/s")
            shutil.rmtree(out if not name.startswith("resnet") else out.parent)
    shutil.rmtree(a.dir)


if __name__ == "__main__":
    main()
