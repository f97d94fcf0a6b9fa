"""Batched augmentation: shapes, value ranges, identities, determinism; and the device loader."""

from __future__ import annotations

import torch

from resnet_cli.data.augment import TrainAugment, augment, random_crop, random_flip, to_float
from resnet_cli.data.inputs import InputSpec
from resnet_cli.data.loader import DeviceLoader

# 8x8 RGB images of 101 numbered classes, not normalised (mean 0, std 1)
PLAIN = InputSpec.of(range(101), 3, 8, 0, (0, 0, 0), (1, 1, 1))


def batch(n=16, c=3, s=8, seed=0):
    return torch.randint(0, 256, (n, c, s, s), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_random_flip_flips_some_and_keeps_others():
    x = batch(n=64)
    y = random_flip(x, torch.Generator().manual_seed(1))
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(y[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_random_crop_shape_range_and_content():
    x = batch(n=32, s=8)
    y = random_crop(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(32):  # every output is some 8x8 window of the padded image
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(y[i], w) for w in windows)
    assert torch.equal(random_crop(x, 0), x)


def test_augment_is_deterministic_per_generator():
    x = batch(n=32)
    a = augment(x, 4, True, torch.Generator().manual_seed(5))
    b = augment(x, 4, True, torch.Generator().manual_seed(5))
    c = augment(x, 4, True, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_to_float_normalises():
    x = torch.full((2, 2, 4, 4), 255, dtype=torch.uint8)
    y = to_float(x, torch.tensor([0.5, 0.0]), torch.tensor([0.5, 2.0]))
    assert y.dtype == torch.float32
    assert torch.allclose(y[:, 0], torch.ones(2, 4, 4)) and torch.allclose(y[:, 1], torch.full((2, 4, 4), 0.5))


def test_device_loader_epochs_are_seeded_permutations():
    x, y = batch(n=100), torch.arange(100)
    loader = DeviceLoader(x, y, 32, PLAIN, torch.device("cpu"), train=True,
                          augment=TrainAugment(padding=2, flip=True), seed=3)
    assert len(loader) == 3  # full batches only
    e1 = torch.cat([yb for _, yb in loader.batches(1)])
    assert len(e1) == 96 and len(set(e1.tolist())) == 96
    assert torch.equal(e1, torch.cat([yb for _, yb in loader.batches(1)]))
    assert not torch.equal(e1, torch.cat([yb for _, yb in loader.batches(2)]))
    xb, _ = next(loader.batches(1))
    assert xb.shape == (32, 3, 8, 8) and xb.dtype == torch.float32


def test_device_loader_eval_covers_everything_once_across_ranks():
    x, y = batch(n=101), torch.arange(101)
    seen = []
    for rank in range(2):
        loader = DeviceLoader(x, y, 16, PLAIN, torch.device("cpu"), train=False,
                              rank=rank, world=2)
        seen += torch.cat([yb for _, yb in loader.batches()]).tolist()
    assert sorted(seen) == list(range(101))


def test_train_shards_are_disjoint_across_ranks():
    x, y = batch(n=100), torch.arange(100)
    shards = [torch.cat([yb for _, yb in DeviceLoader(x, y, 10, PLAIN, torch.device("cpu"), train=True, seed=1, rank=r,
                                                        world=2).batches(4)]).tolist() for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 50
    assert not set(shards[0]) & set(shards[1])
