"""timm's "ResNet strikes back" pieces (Wightman et al. 2021): the LAMB optimizer, the binary cross-entropy loss
and stochastic depth, each against its formula written out plainly here, and the preset that joins them."""

from __future__ import annotations

import math

import pytest
import torch

from resnet_cli import config as C
from resnet_cli.train.lamb import Lamb
from resnet_cli.train.step import make_optimizer, param_groups


def reference_lamb(params, grads_per_step, lr, wd_of, betas=(0.9, 0.999), eps=1e-6, max_norm=1.0):
    """LAMB as the formula reads, one parameter at a time in float64 (the module docstring of train/lamb.py)."""
    b1, b2 = betas
    p = [x.detach().double().clone() for x in params]
    m = [torch.zeros_like(x) for x in p]
    v = [torch.zeros_like(x) for x in p]
    for t, grads in enumerate(grads_per_step, 1):
        g = [x.double() for x in grads]
        total = math.sqrt(sum(float((x ** 2).sum()) for x in g))
        g = [x / max(1.0, total / max_norm) for x in g]
        for i in range(len(p)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            u = (m[i] / (1 - b1 ** t)) / ((v[i] / (1 - b2 ** t)).sqrt() + eps)
            wd = wd_of[i]
            if wd:
                u = u + wd * p[i]
                w_norm, u_norm = float(p[i].norm()), float(u.norm())
                u = u * (w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0)
            p[i] = p[i] - lr * u
    return p


def lamb_run(lr, steps=5, scale=1.0):
    torch.manual_seed(0)
    weight, bias = torch.randn(6, 4, requires_grad=True), torch.zeros(6, requires_grad=True)
    opt = Lamb([{"params": [weight], "weight_decay": 0.02}, {"params": [bias], "weight_decay": 0.0}], lr=lr)
    start = [weight.detach().clone(), bias.detach().clone()]
    history = []
    for _ in range(steps):
        grads = [torch.randn(6, 4) * scale, torch.randn(6) * scale]
        history.append(grads)
        weight.grad, bias.grad = grads[0].clone(), grads[1].clone()
        opt.step()
    return opt, [weight, bias], start, history


@pytest.mark.parametrize("scale", [0.01, 10.0])  # 10: the global norm is clipped to 1 on every step
def test_lamb_follows_its_formula(scale):
    opt, params, start, history = lamb_run(lr=5e-3, scale=scale)
    expected = reference_lamb(start, history, 5e-3, wd_of=[0.02, 0.0])
    for got, want in zip(params, expected):
        torch.testing.assert_close(got.detach().double(), want, rtol=1e-5, atol=1e-7)
    assert all(opt.state[p]["step"].item() == 5 for p in params)


def test_lamb_takes_its_lr_as_a_tensor_as_a_cuda_graph_gives_it():
    """train/graphs.py puts a device tensor in each group's lr while it captures; the steps are the same."""
    _, floats, _, _ = lamb_run(lr=5e-3)
    torch.manual_seed(0)
    weight, bias = torch.randn(6, 4, requires_grad=True), torch.zeros(6, requires_grad=True)
    opt = Lamb([{"params": [weight], "weight_decay": 0.02}, {"params": [bias], "weight_decay": 0.0}], lr=5e-3)
    for group in opt.param_groups:
        group["lr"] = torch.tensor(5e-3)
    for _ in range(5):
        weight.grad, bias.grad = torch.randn(6, 4), torch.randn(6)
        opt.step()
    torch.testing.assert_close(weight, floats[0])
    torch.testing.assert_close(bias, floats[1])


def test_lamb_resumes_exactly_from_its_state_dict():
    """Three steps, saved, then two more in a new optimizer: the same weights as five without a stop."""
    opt, params, start, history = lamb_run(lr=5e-3, steps=5)
    torch.manual_seed(0)
    weight, bias = torch.randn(6, 4, requires_grad=True), torch.zeros(6, requires_grad=True)
    groups = lambda: [{"params": [weight], "weight_decay": 0.02}, {"params": [bias], "weight_decay": 0.0}]  # noqa
    first = Lamb(groups(), lr=5e-3)
    for grads in history[:3]:
        weight.grad, bias.grad = grads[0].clone(), grads[1].clone()
        first.step()
    second = Lamb(groups(), lr=5e-3)
    second.load_state_dict(first.state_dict())
    for grads in history[3:]:
        weight.grad, bias.grad = grads[0].clone(), grads[1].clone()
        second.step()
    assert torch.equal(weight, params[0]) and torch.equal(bias, params[1])


def test_lamb_is_what_train_optimizer_lamb_builds_with_its_own_defaults():
    cfg = C.resolve("smoke", sets=["train.optimizer=lamb"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.no_wd_bn_bias) == (5e-3, 0.02, True)
    assert C.resolve("smoke", flags={"train.lr": 0.002}, sets=["train.optimizer=lamb"]).train.lr == 0.002
    from resnet_cli.models import build_model

    model = build_model("resnet20", num_classes=10)
    opt = make_optimizer(model, cfg.train, torch.device("cpu"))
    assert isinstance(opt, Lamb)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.02, 0.0]  # BatchNorm and fc's bias: no decay
    assert [len(g["params"]) for g in opt.param_groups] == [len(x["params"]) for x in
                                                            param_groups(model, 0.02, True)]


def reference_bce(logits, target, classes, smoothing=0.0, threshold=0.0):
    """timm's BinaryCrossEntropy written out: one-hot (or soft) targets, smoothed, thresholded, mean of
    -[t log s(z) + (1 - t) log(1 - s(z))] over every image and class."""
    if target.ndim == 1:
        target = torch.eye(classes)[target]
    target = target * (1 - smoothing) + smoothing / classes
    if threshold:
        target = (target > threshold).float()
    z = logits.double()
    s = torch.sigmoid(z)
    return float(-(target * s.log() + (1 - target) * (1 - s).log()).mean())


def test_bce_loss_follows_timm_on_labels_and_on_mixed_targets():
    from resnet_cli.train.losses import BinaryCrossEntropy, make_loss

    torch.manual_seed(0)
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    mixed = 0.7 * torch.eye(5)[labels] + 0.3 * torch.eye(5)[labels.flip(0)]  # mixup's soft targets, lambda 0.7
    for target in (labels, mixed):
        for smoothing, threshold in ((0.0, 0.0), (0.1, 0.0), (0.1, 0.2), (0.0, 0.2)):
            got = float(BinaryCrossEntropy(smoothing, threshold)(logits, target))
            assert got == pytest.approx(reference_bce(logits, target, 5, smoothing, threshold), rel=1e-5)
    # with the threshold, both classes of a 0.7/0.3 mix count as present: the loss is that of a two-hot target
    two_hot = ((torch.eye(5)[labels] + torch.eye(5)[labels.flip(0)]) > 0).float()
    assert float(BinaryCrossEntropy(0.0, 0.2)(logits, mixed)) == pytest.approx(
        reference_bce(logits, two_hot, 5), rel=1e-5)
    cfg = C.resolve("smoke", sets=["train.loss=bce", "train.bce_threshold=0.2", "train.label_smoothing=0.1"])
    loss = make_loss(cfg.train)
    assert isinstance(loss, BinaryCrossEntropy) and (loss.smoothing, loss.threshold) == (0.1, 0.2)
    assert isinstance(make_loss(C.resolve("smoke").train), torch.nn.CrossEntropyLoss)


@pytest.mark.parametrize("sets, message", [
    (["train.bce_threshold=0.2"], "train.bce_threshold applies to train.loss bce (the loss is ce)"),
    (["train.loss=bce", "train.bce_threshold=1.0"], "train.bce_threshold must be in [0, 1), got 1.0"),
    (["train.loss=softmax"], "train.loss"),
])
def test_bce_settings_are_checked(sets, message):
    from resnet_cli.errors import BadInput

    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        C.resolve("smoke", sets=sets)


def test_stochastic_depth_drops_whole_branches_per_image_at_rates_rising_to_the_last_block():
    from resnet_cli.models import build_model

    torch.manual_seed(0)
    net = build_model("resnet20", num_classes=10, drop_path=0.3)
    blocks = [b for stage in net.stages for b in stage]
    rates = [b.drop_path for b in blocks]
    assert len(rates) == 9 and rates[0] == 0 and rates[-1] == pytest.approx(0.3)
    assert rates == pytest.approx([0.3 * i / 8 for i in range(9)])
    plain = build_model("resnet20", num_classes=10)
    assert net.state_dict().keys() == plain.state_dict().keys()  # nothing to save: weights travel as before
    plain.load_state_dict(net.state_dict())
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(net.eval()(x), plain.eval()(x))  # evaluation keeps every branch

    block = blocks[-1].train()  # rate 0.3: a branch is either dropped (the block passes x) or scaled by 1/0.7
    h = torch.relu(torch.randn(256, 64, 8, 8))  # a block's input is a ReLU's output
    torch.manual_seed(1)
    out = block(h)
    block.drop_path = 0.0
    torch.manual_seed(1)
    full = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h)))))
    dropped = torch.isclose(out, torch.relu(h), atol=1e-6).flatten(1).all(1)
    kept = torch.isclose(out, torch.relu(full / 0.7 + h), atol=1e-5).flatten(1).all(1)
    assert bool((dropped | kept).all()) and not bool((dropped & kept).any())
    assert 0.2 < float(dropped.float().mean()) < 0.4  # 256 images, p = 0.3


@pytest.mark.parametrize("sets, message", [
    (["model.name=plain20", "model.drop_path=0.1"], "model.drop_path needs shortcuts: plain20 has none"),
    (["model.drop_path=1.0"], "model.drop_path is a probability in [0, 1)"),
])
def test_drop_path_settings_are_checked(sets, message):
    from resnet_cli.errors import BadInput

    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        C.resolve("smoke", sets=sets)


STRIKES_BACK = ["train.optimizer=lamb", "train.loss=bce", "train.bce_threshold=0.2", "model.drop_path=0.1",
                "data.randaugment=rand-m7-mstd0.5-inc1", "data.mixup=0.2", "data.cutmix=1.0", "data.aug_repeats=2",
                "train.warmup=linear",
                "train.warmup_length=0.5ep", "train.schedule=cosine"]


@pytest.mark.slow  # three short runs
def test_a_strikes_back_run_trains_and_resumes_bit_identically(cli, tmp_path, ckpts):
    sets = [a for k in STRIKES_BACK for a in ("--set", k)]
    base = ["train", "--preset", "smoke", "--device", "cpu", "--run-dir", tmp_path, "--epochs", "2", "--json",
            "--set", "data.synthetic_train=256", "--set", "data.synthetic_test=64", *sets]
    full = cli(*base, "--name", "full")
    assert full.exit_code == 0, full.output
    part = cli(*base, "--name", "part", "--set", "run.stop_after_epochs=1")
    assert part.exit_code == 0, part.output
    torch.manual_seed(12345)  # whatever the generator holds now, the resumed steps draw what the full run drew
    resumed = cli("train", "--resume", tmp_path / "part", "--set", "run.stop_after_epochs=0", "--json")
    assert resumed.exit_code == 0, resumed.output
    a, b = ckpts.load(tmp_path / "full" / "last.pt"), ckpts.load(tmp_path / "part" / "last.pt")
    assert a["step"] == b["step"] == 16
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["config"]["model"]["drop_path"] == 0.1 and a["config"]["train"]["lr"] == 5e-3
    assert a["config"]["train"]["loss"] == "bce" and a["config"]["train"]["optimizer"] == "lamb"
    losses = [r["train_loss"] for r in a["metrics"]]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_each_step_draws_its_stochastic_depth_from_the_seed_the_step_and_the_rank(make_trainer):
    trainer = make_trainer(**{"model.drop_path": 0.1})
    run = trainer.run

    def draw(step, rank=0):
        run.process.rank = rank
        run.seed_step(step)
        return torch.rand(4)

    first = draw(7)
    torch.rand(100)  # whatever else ran since
    assert torch.equal(draw(7), first)  # a resumed run at step 7 draws the same
    assert not torch.equal(draw(8), first) and not torch.equal(draw(7, rank=1), first)
    run.process.rank = 0
    plain = make_trainer(open_dir=False).run  # no stochastic depth: the generator is left alone
    torch.manual_seed(3)
    plain.seed_step(7)
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    plain.seed_step(7)
    assert torch.equal(torch.rand(4), expected)


def test_the_drop_path_flag_is_its_key_and_a_plain_net_refuses_it(cli):
    import yaml

    out = cli("train", "--preset", "smoke", "--drop-path", "0.05", "--opt", "lamb", "--print-config")
    assert out.exit_code == 0, out.output
    cfg = yaml.safe_load(out.stdout)
    assert cfg["model"]["drop_path"] == 0.05 and cfg["train"]["optimizer"] == "lamb"
    bad = cli("train", "--preset", "smoke", "--depth", "20", "--plain", "--drop-path", "0.05", "--print-config")
    assert bad.exit_code == 2 and bad.stderr.strip().splitlines() == [
        "error: model.drop_path needs shortcuts: plain20 has none (stochastic depth skips residual branches)"]
