"""Write Fashion-MNIST classes as an image folder (train/<class>/*.png, val/<class>/*.png), for trying
image-folder training and fine-tuning offline. README "Fine-tuning" uses the shoes:

    python benchmarks/fashion_folder.py shoes --classes 5 7 9 --train 300 --val 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion-mnist"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--classes", type=int, nargs="+", default=[5, 7, 9], help="class numbers (5 7 9: the shoes)")
    p.add_argument("--train", type=int, default=300, help="images per class from the training set")
    p.add_argument("--val", type=int, default=200, help="images per class from the test set")
    args = p.parse_args()

    from PIL import Image

    from resnet_cli.data import idx

    train_x, train_y, test_x, test_y, names = idx.load("fashion-mnist", args.data_dir, False)
    for split, x, y, n in (("train", train_x, train_y, args.train), ("val", test_x, test_y, args.val)):
        for c in args.classes:
            folder = args.out / split / names[c].lower().replace(" ", "-").replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            for i in (y == c).nonzero().flatten()[:n].tolist():
                Image.fromarray(x[i, 0].numpy(), "L").save(folder / f"{i}.png")
    print(f"wrote {args.out}: {len(args.classes)} classes, {args.train} train and {args.val} val images each")


if __name__ == "__main__":
    main()
