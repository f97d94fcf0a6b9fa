"""The recipe pieces on tensors: random erasing, mixup/cutmix, RandAugment/TrivialAugment ops, EMA, the
validation split, gradient accumulation, freezing, and the learning-rate plan on resume."""

from __future__ import annotations

import math
import random

import pytest
import torch

from resnet_cli.config import TrainConfig
from resnet_cli.data import stratified_split
from resnet_cli.data import augment as A
from resnet_cli.models import build_model
from resnet_cli.train.ema import EMA
from resnet_cli.train.schedule import LRSchedule


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n=8, c=3, h=16, w=16, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), generator=gen(seed), dtype=torch.uint8)


# ---------------------------------------------------------------- random erasing

def test_random_erasing_replaces_one_rectangle_in_the_chosen_images():
    x = torch.full((400, 3, 20, 20), 7.0)
    out = A.random_erasing(x, 0.5, gen(1))
    changed = (out != 7.0)
    per_image = changed.any(dim=(1, 2, 3))
    assert 150 < int(per_image.sum()) < 250  # about half of the 400 images
    for i in per_image.nonzero().flatten()[:50].tolist():
        mask = changed[i].all(dim=0)  # every channel of an erased pixel is noise
        assert torch.equal(mask, changed[i].any(dim=0))
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert int(mask.sum()) == h * w  # one solid rectangle
        assert h * w <= 400 / 3 + 20  # at most a third of the image (rounding)
    assert torch.equal(out, A.random_erasing(x, 0.5, gen(1)))  # seeded
    assert torch.equal(A.random_erasing(x, 0.0, gen(1)), x)
    assert bool((A.random_erasing(x, 1.0, gen(2)) != 7.0).any(dim=(1, 2, 3)).all())
    zeros = A.random_erasing(x, 0.5, gen(1), mode="const")  # torchvision's value=0: the same rectangles, zeroed
    assert torch.equal(zeros == 0, changed) and torch.equal(zeros[~changed], x[~changed])


# ---------------------------------------------------------------- mixup and cutmix

def test_mixup_blends_images_and_labels_in_the_same_proportion():
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    mix = A.Mix(0.7)
    mixed, soft = A.mix_batch(x, y, 5, mix)
    assert torch.allclose(mixed, 0.7 * x + 0.3 * x.flip(0))
    assert soft.shape == (6, 5) and torch.allclose(soft.sum(1), torch.ones(6))
    assert soft[0, 0] == pytest.approx(1.0)  # image 0 is mixed with image 5, also class 0
    assert soft[1, 1] == pytest.approx(0.7) and soft[1, 4] == pytest.approx(0.3)
    assert torch.equal(A.hard_labels(soft), torch.tensor([0, 1, 2, 3, 4, 0]))


def test_cutmix_pastes_a_box_from_the_partner_and_weights_labels_by_area():
    x, y = torch.randn(4, 1, 10, 10), torch.tensor([0, 1, 2, 3])
    mix = A.Mix(1 - 12 / 100, (2, 5, 3, 7))  # 3 x 4 box
    mixed, soft = A.mix_batch(x, y, 4, mix)
    assert torch.equal(mixed[:, :, 2:5, 3:7], x.flip(0)[:, :, 2:5, 3:7])
    outside = torch.ones(10, 10, dtype=torch.bool)
    outside[2:5, 3:7] = False
    assert torch.equal(mixed[:, :, outside], x[:, :, outside])
    assert soft[0, 0] == pytest.approx(0.88) and soft[0, 3] == pytest.approx(0.12)


def test_draw_mix_is_seeded_and_picks_one_of_the_two():
    draws = [A.draw_mix(random.Random(s), 0.2, 1.0, 32, 32) for s in range(200)]
    assert draws[:5] == [A.draw_mix(random.Random(s), 0.2, 1.0, 32, 32) for s in range(5)]
    boxes = [d for d in draws if d.box is not None]
    assert 60 < len(boxes) < 140  # both kinds, about half each
    for d in boxes:
        top, bottom, left, right = d.box
        assert d.lam == pytest.approx(1 - (bottom - top) * (right - left) / 1024)
    assert all(0 <= d.lam <= 1 for d in draws)
    assert A.draw_mix(random.Random(0), 0.0, 0.0, 32, 32) is None
    assert all(d.box is None for d in (A.draw_mix(random.Random(s), 0.4, 0.0, 8, 8) for s in range(20)))


# ---------------------------------------------------------------- RandAugment / TrivialAugment ops

def one_op(x: torch.Tensor, name: str, value: float) -> torch.Tensor:
    """Apply op `name` with magnitude `value` to every image of a uint8 batch."""
    n = x.shape[0]
    op = torch.full((n,), A.ALL_OPS.index(name))
    mag = {k: torch.zeros(n) for k in (*A.magnitudes("rand", x.shape[-2], x.shape[-1]), "solarize_add")}
    mag["posterize"] = torch.full((n,), 8.0)
    mag["solarize"] = torch.full((n,), 256.0)
    mag[name] = torch.full((n,), float(value))
    return A.apply_ops(x.float(), op, mag)


def test_colour_ops_match_their_definitions():
    x = images()
    f = x.float()
    assert torch.equal(one_op(x, "identity", 0), f)
    assert torch.equal(one_op(x, "brightness", -0.5), (f * 0.5).round())
    gray = 0.2989 * f[:, 0] + 0.587 * f[:, 1] + 0.114 * f[:, 2]
    assert torch.equal(one_op(x, "color", -1.0), gray.unsqueeze(1).expand_as(f).round())  # factor 0: grayscale
    mean = gray.mean(dim=(1, 2)).view(-1, 1, 1, 1)
    assert torch.equal(one_op(x, "contrast", -1.0), mean.expand_as(f).round())
    assert torch.equal(one_op(x, "posterize", 2), (f / 64).floor() * 64)  # keep the top 2 bits
    assert torch.equal(one_op(x, "solarize", 128), torch.where(f >= 128, 255 - f, f))
    sharp = one_op(x, "sharpness", 0.0)
    assert torch.equal(sharp, f)  # factor 1: the image itself
    assert torch.equal(one_op(x, "sharpness", -1.0)[:, :, 0], f[:, :, 0])  # the border is never smoothed


def test_autocontrast_and_equalize():
    x = torch.randint(60, 120, (4, 3, 32, 32), generator=gen(3), dtype=torch.uint8)
    out = one_op(x, "autocontrast", 0)
    assert torch.equal(out.amin(dim=(2, 3)), torch.zeros(4, 3)) and torch.equal(out.amax(dim=(2, 3)),
                                                                                 torch.full((4, 3), 255.0))
    flat = torch.full((1, 1, 4, 4), 9, dtype=torch.uint8)
    assert torch.equal(one_op(flat, "autocontrast", 0), flat.float())  # nothing to stretch
    eq = one_op(x, "equalize", 0)
    for i in range(2):  # torchvision's per-channel rule, one channel at a time
        for c in range(3):
            ch = x[i, c].flatten().long()
            hist = torch.bincount(ch, minlength=256)
            step = (int(hist.sum()) - int(hist[hist.nonzero().max()])) // 255
            lut = [0] + [min(255, (int(s) + step // 2) // step) for s in hist.cumsum(0)[:-1]]
            assert eq[i, c].flatten().tolist() == [float(lut[v]) for v in ch.tolist()]
    assert torch.equal(one_op(flat, "equalize", 0), flat.float())  # one value: unchanged (torchvision's rule)
    small = x[:, :, :8, :8]  # 64 pixels: torchvision leaves images of under 256 pixels as they are
    assert torch.equal(one_op(small, "equalize", 0), small.float())


def test_geometric_ops_move_pixels_exactly():
    x = images(n=2, c=1, h=12, w=12)
    f = x.float()
    moved = one_op(x, "translate_x", 3)
    assert torch.equal(moved[..., 3:], f[..., :-3]) and not moved[..., :3].any()  # shifted right, zero fill
    moved = one_op(x, "translate_y", -2)
    assert torch.equal(moved[..., :-2, :], f[..., 2:, :]) and not moved[..., -2:, :].any()
    turned = one_op(x, "rotate", 90)
    assert torch.equal(turned, torch.rot90(f, 1, dims=(-2, -1))) or torch.equal(turned, torch.rot90(f, -1, (-2, -1)))
    sheared = one_op(x, "shear_x", 0.3)
    assert torch.equal(sheared[..., 6, :], f[..., 6, :])  # rows shift by their distance from the centre
    assert not torch.equal(sheared, f)


def test_each_image_gets_its_own_op_as_if_it_were_alone():
    """#34 item 7: apply_ops runs each op on the images that drew it only (sorted by op, one scatter back): every
    image of a mixed batch comes out as it would alone. The ops are planned on the host: ops on a device are
    refused rather than read back (a host sync per batch)."""
    n = 3 * len(A.OPS)
    x = images(n=n, h=20, w=20, seed=4).float()
    op = torch.randperm(n, generator=gen(2)) % len(A.OPS)
    table = A.magnitudes("rand", 20, 20)
    level = torch.randint(0, A.BINS, (n,), generator=gen(3))
    sign = torch.where(torch.rand(n, generator=gen(4)) < 0.5, -1.0, 1.0)
    mag = {k: v[level] * (sign if k not in ("posterize", "solarize") else 1.0) for k, v in table.items()}
    out = A.apply_ops(x, op, mag)
    for i in range(n):
        alone = A.apply_ops(x[i:i + 1], op[i:i + 1], {k: v[i:i + 1] for k, v in mag.items()})
        assert torch.equal(out[i], alone[0]), A.OPS[int(op[i])]
    assert torch.equal(out[op == 0], x[op == 0])  # identity
    assert not torch.equal(out[op == A.OPS.index("equalize")], x[op == A.OPS.index("equalize")])
    with pytest.raises(ValueError, match="on the host"):
        A.apply_ops(x, op.to("meta"), mag)


def test_auto_augment_draws_an_op_per_image_and_is_seeded():
    x = images(n=64, h=16, w=16)
    a = A.auto_augment(x, "rand", 2, 9, gen(5))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, A.auto_augment(x, "rand", 2, 9, gen(5)))
    assert not torch.equal(a, A.auto_augment(x, "rand", 2, 9, gen(6)))
    t = A.auto_augment(x, "trivial", 1, 0, gen(5))
    changed = (t != x).flatten(1).any(1)
    assert 10 < int(changed.sum()) < 64  # most images changed; identity (and a few zero magnitudes) did not
    table = A.magnitudes("rand", 32, 32)
    assert table["rotate"][9] == pytest.approx(9.0) and table["posterize"][30] == 4
    assert A.magnitudes("trivial", 32, 32)["rotate"][30] == pytest.approx(135.0)


def test_timms_two_extra_ops_and_its_mean_colour_fill():
    x = images()
    f = x.float()
    assert torch.equal(one_op(x, "invert", 0), 255 - f)
    assert torch.equal(one_op(x, "solarize_add", 77), torch.where(f < 128, (f + 77).clamp(max=255), f))
    small = images(n=2, c=3, h=12, w=12)
    op, fill = torch.full((2,), A.ALL_OPS.index("translate_x")), torch.tensor([10.0, 20.0, 30.0])
    mag = {k: torch.zeros(2) for k in A.GEOMETRIC}
    mag["translate_x"] = torch.full((2,), 3.0)
    moved = A.apply_ops(small.float(), op, mag, fill)
    assert torch.equal(moved[..., 3:], small.float()[..., :-3])
    assert torch.equal(moved[..., :3], fill.view(1, 3, 1, 1).expand(2, 3, 12, 3))  # timm fills with the mean


@pytest.mark.parametrize("increasing, expected", [
    (True, {"rotate": 21.0, "shear_x": 0.21, "translate_x": 31.5, "translate_y": 18.9, "brightness": 0.63,
            "posterize": 2.0, "solarize": 77.0, "solarize_add": 77.0}),
    (False, {"rotate": 21.0, "shear_x": 0.21, "translate_x": 31.5, "brightness": 0.36, "posterize": 2.0,
             "solarize": 179.0, "solarize_add": 77.0})])
def test_timm_arguments_at_magnitude_7_are_timms(increasing, expected):
    """timm's level-to-argument rules at level 7 (_LEVEL_DENOM 10; translate 0.45 of a 100 x 60 image's side),
    worked out by hand: posterize keeps int(2.8) = 2 bits (4 - 2 increasing), solarize from int(179.2) = 179
    (256 - 179 increasing), solarize_add adds int(77.0) = 77, the enhance ops blend by 1 + 0.9 x 0.7 x sign
    (increasing) or 0.1 + 1.8 x 0.7 = 1.36."""
    args = A.timm_arguments(torch.tensor([7.0]), torch.tensor([1.0]), increasing, h=60, w=100)
    for name, value in expected.items():
        assert float(args[name][0]) == pytest.approx(value, abs=1e-5), name


def test_timm_rand_augment_applies_each_op_with_its_probability_and_is_seeded():
    x = torch.randint(60, 120, (400, 3, 32, 32), generator=gen(7), dtype=torch.uint8)  # every op changes these
    changed = lambda out: int((out != x).flatten(1).any(1).sum())  # noqa: E731
    always = A.timm_rand_augment(x, 1, 9.0, 0.0, 10.0, True, 1.0, gen(1))
    assert always.dtype == torch.uint8 and always.shape == x.shape and changed(always) == 400
    half = A.timm_rand_augment(x, 1, 9.0, 0.0, 10.0, True, 0.5, gen(1))
    assert 160 < changed(half) < 240  # p = 0.5
    assert torch.equal(half, A.timm_rand_augment(x, 1, 9.0, 0.0, 10.0, True, 0.5, gen(1)))
    assert not torch.equal(half, A.timm_rand_augment(x, 1, 9.0, 0.0, 10.0, True, 0.5, gen(2)))
    noisy = A.timm_rand_augment(x, 1, 9.0, 0.5, 10.0, True, 1.0, gen(1))  # the same ops, magnitudes around 9
    assert not torch.equal(noisy, always)
    zero = A.timm_rand_augment(x, 2, 0.0, 0.0, 10.0, False, 1.0, gen(1))  # level 0, not increasing: posterize to
    assert changed(zero) > 300  # 0 bits, solarize everything, enhance by 0.1: nearly every image changes


@pytest.mark.parametrize("text, policy", [
    ("rand-m9-mstd0.5-inc1", ("timm", 2, 9.0, 0.5, 10.0, True, 0.5)),
    ("rand-m7-mstd0.5-inc1", ("timm", 2, 7.0, 0.5, 10.0, True, 0.5)),
    ("rand-m6-n3-mstd101-p0.7", ("timm", 3, 6.0, math.inf, 10.0, False, 0.7)),
    ("rand", ("timm", 2, 10.0, 0.0, 10.0, False, 0.5)),
    ("2,9", ("rand", 2, 9)), ("trivial", ("trivial", 1, 0)), ("", None)])
def test_randaugment_reads_timms_strings_with_timms_defaults(text, policy):
    from resnet_cli.config import parse_randaugment

    assert parse_randaugment(text) == policy


@pytest.mark.parametrize("text, message", [
    ("rand-m9-w0", "'w0' is not one of timm's RandAugment keys here"),
    ("rand-m11", "m in [0, mmax]"), ("rand-n0", "n 1-10 ops"), ("rand-m9-inc2", "inc 0 or 1"),
    ("3;9", "expected N,M")])
def test_randaugment_strings_are_checked(text, message):
    from resnet_cli.config import parse_randaugment
    from resnet_cli.errors import BadInput

    with pytest.raises(BadInput, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_randaugment(text)


def test_train_augment_runs_the_pipeline_from_one_seed():
    aug = A.TrainAugment(padding=2, flip=True, policy=("rand", 2, 9), erasing=0.5, mixup=0.2, cutmix=1.0,
                         num_classes=10)
    x, y = images(n=16), torch.arange(16) % 10
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    a = aug(x, y, mean, std, seed=123)
    b = aug(x, y, mean, std, seed=123)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].dtype == torch.float32 and a[1].shape == (16, 10)  # soft targets
    plain = A.TrainAugment()(x, y, mean, std, seed=123)
    assert torch.equal(plain[0], A.to_float(x, mean, std)) and torch.equal(plain[1], y)
    timm = A.TrainAugment(policy=("timm", 2, 9.0, 0.5, 10.0, True, 0.5))
    assert torch.equal(timm(x, y, mean, std, seed=5)[0], timm(x, y, mean, std, seed=5)[0])
    assert not torch.equal(timm(x, y, mean, std, seed=5)[0], A.to_float(x, mean, std))


# ---------------------------------------------------------------- EMA

def test_ema_follows_the_weights_with_a_ramped_decay():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, 0.9)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update()  # decay min(0.9, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.module[0].weight, start * d + (start + 1) * (1 - d))
    assert int(ema.module[1].num_batches_tracked) == 7  # integer buffers are copied
    for _ in range(200):
        ema.update()
    assert ema.current_decay() == pytest.approx(0.9)
    assert torch.allclose(ema.module[0].weight, model[0].weight, atol=1e-6)
    frozen = model[1].running_var.detach().clone()
    ema2 = EMA(model, 0.99)
    ema2.update()
    assert torch.equal(ema2.module[1].running_var, frozen)  # unchanged values stay bit-identical
    state = ema.state_dict()
    other = EMA(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)), 0.9)
    other.load_state_dict(state)
    assert other.updates == 201 and torch.equal(other.module[0].weight, ema.module[0].weight)


# ---------------------------------------------------------------- validation split

def test_repeated_augmentation_draws_each_image_k_times_on_k_ranks():
    """data.aug_repeats K (timm's RepeatAugSampler, torchvision's RASampler): the epoch keeps its n samples,
    n / K images K times each, a picture's copies dealt to K different ranks; each position knows its copy."""
    from resnet_cli.data.loader import shard_copies, shard_indices

    n, batch, world, k = 48, 4, 3, 3
    ranks = [shard_indices(n, batch, True, r, world, seed=5, epoch=2, repeats=k) for r in range(world)]
    assert [len(r) for r in ranks] == [16, 16, 16]  # the epoch's length, as without repeats
    dealt = torch.stack(ranks, 1).flatten()  # back in the permutation's order
    assert torch.equal(dealt.view(-1, k), dealt.view(-1, k)[:, :1].expand(-1, k))  # K copies in a row
    assert len(set(dealt.tolist())) == n // k  # n / K distinct images
    assert all(len({int(r[j]) for r in ranks}) == 1 for j in range(16))  # each picture on the K=3 ranks at once
    copies = [shard_copies(n, batch, r, world, k) for r in range(world)]
    assert copies == [[0] * 16, [1] * 16, [2] * 16]
    one = shard_indices(n, batch, True, 0, 1, seed=5, epoch=2, repeats=2)  # one process: copies share a batch
    assert torch.equal(one[0::2], one[1::2]) and shard_copies(n, batch, 0, 1, 2) == [0, 1] * 24
    plain = shard_indices(n, batch, True, 0, 1, seed=5, epoch=2)
    assert sorted(plain.tolist()) == list(range(n)) and not torch.equal(plain, one)
    assert torch.equal(plain[:24], one[0::2])  # the same permutation, its first n / K images


def test_stratified_split_is_fixed_disjoint_and_proportional():
    y = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)[torch.randperm(1000, generator=gen(0))]
    train, val = stratified_split(y, 100)
    assert len(val) == 100 and len(train) == 900
    assert set(train.tolist()).isdisjoint(val.tolist()) and len(set(train.tolist()) | set(val.tolist())) == 1000
    assert y[val].bincount().tolist() == [50, 30, 20]
    again = stratified_split(y, 100)
    assert torch.equal(again[1], val)  # the same images every time (and for every run seed)
    odd = stratified_split(torch.tensor([0] * 5 + [1] * 5 + [2] * 5), 4)[1]
    assert len(odd) == 4


# ---------------------------------------------------------------- accumulation, freezing

def test_accumulated_gradients_equal_one_batch_when_batchnorm_is_fixed():
    from resnet_cli.speed import Speed
    from resnet_cli.train.step import TrainStep

    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    grads = []
    for k in (1, 4):
        model = build_model("resnet20").eval()  # BatchNorm from running statistics: no batch dependence
        torch.manual_seed(1)
        model.load_state_dict(build_model("resnet20").state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        step = TrainStep(model, opt, Speed.resolve(torch.device("cpu"), compile="off"), torch.device("cpu"),
                         accum_steps=k)
        out = step(x, y, 0.0)
        assert out.logits.shape == (8, 10) and out.updated
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_freeze_stops_gradients_and_batchnorm_statistics():
    model = build_model("resnet20")
    assert model.stage_names() == ["conv1", "conv2_x", "conv3_x", "conv4_x", "fc"]
    model.freeze(["conv1", "conv2_x"])
    model.train()
    assert not model.bn1.training and not model.layer1[0].bn1.training and model.layer2[0].bn1.training
    assert not any(p.requires_grad for p in model.layer1.parameters()) and model.layer2[0].conv1.weight.requires_grad
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(torch.randn(4, 3, 8, 8)).sum().backward()
    assert model.conv1.weight.grad is None and model.layer2[0].conv1.weight.grad is not None
    assert torch.equal(model.bn1.running_mean, before["bn1.running_mean"])
    assert not torch.equal(model.layer2[0].bn1.running_mean, before["layer2.0.bn1.running_mean"])
    with pytest.raises(ValueError, match="unknown stage 'conv5_x'"):
        model.freeze(["conv5_x"])


# ---------------------------------------------------------------- learning-rate plan

def test_warmup_lengths_in_steps_epochs_and_fractions():
    def length(text, total=1000, per_epoch=100):
        cfg = TrainConfig(lr=0.1, schedule="cosine", warmup="linear", warmup_length=text)
        return LRSchedule(cfg, total, per_epoch, 20, "cifar").warmup_steps

    assert (length("40"), length("2ep"), length("0.5ep"), length("5%"), length("5%", total=200)) == (40, 200, 50, 50, 10)


def test_resized_schedules_follow_one_rule():
    cfg = TrainConfig(lr=0.1, schedule="cosine", warmup="linear", warmup_length="10")
    done = LRSchedule(cfg, 100, 10, 20, "cifar")
    assert done(99) < 1e-3
    rule = done.resized(100, 200)  # finished: warm restart from the peak
    assert "warm restart" in rule and done(100) == pytest.approx(0.1) and done(199) < 1e-3
    assert done(50) == pytest.approx(LRSchedule(cfg, 100, 10, 20, "cifar")(50))  # the past is unchanged
    again = LRSchedule(cfg, 200, 10, 20, "cifar", plan=done.plan())
    assert [again(s) for s in (20, 100, 150)] == [done(s) for s in (20, 100, 150)]
    half = LRSchedule(cfg, 100, 10, 20, "cifar")
    now = half(55)
    assert "re-fitted" in half.resized(55, 300) and half(55) == pytest.approx(now)  # no jump
    assert half(56) < now and half(299) < 1e-3
    early = LRSchedule(cfg, 100, 10, 20, "cifar")
    assert "warming up" in early.resized(5, 300) and early(10) == pytest.approx(0.1)
    assert early(155) == pytest.approx(0.05, abs=1e-3)  # the cosine after warm-up spans the new length
    steps = LRSchedule(TrainConfig(milestones=[3], milestone_unit="epochs"), 100, 10, 20, "cifar")
    assert "continues as planned" in steps.resized(100, 200) and steps(150) == pytest.approx(0.01)
    assert LRSchedule(cfg, 100, 10, 20, "cifar").resized(40, 100) == ""  # same length: nothing to do
    assert math.isclose(LRSchedule(cfg, 100, 10, 20, "cifar")(0), 0.01)
