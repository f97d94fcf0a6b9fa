"""ImageNet-1k's classes in the order torchvision's and timm's 1000-output weights use: the 1000 WordNet ids of
ILSVRC2012 sorted (an ImageFolder over its train/<wnid>/ folders), each with what it is (WordNet's words, as the
devkit's synset_words.txt has them: "n01440764 tench, Tinca tinca").

They ship with the package (imagenet_classes.txt, the synset_words.txt format), so weights that carry no names
(a torchvision state_dict, a timm Hub repo of an ImageNet-1k model) still print "tench (n01440764)", not "0".
"""

from __future__ import annotations

import functools
from pathlib import Path

from .. import gate

FILE = "imagenet_classes.txt"
COUNT = 1000


@functools.cache
def imagenet_1k() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the 1000 WordNet ids in output order, what each is)."""
    limits = gate.Limits(2**16, 60.0, (f"the bound on {FILE}", "its deadline"))
    raw = gate.read_file(Path(__file__).with_name(FILE), limits, "the package's class list")
    lines = raw.decode("utf-8").splitlines()
    wnids, words = zip(*(line.split(" ", 1) for line in lines))
    assert len(wnids) == COUNT and list(wnids) == sorted(set(wnids)), f"{FILE} is damaged"
    return tuple(wnids), tuple(words)
