"""The paper's remaining architecture rows (issue 39): shortcut options A, B and C (section 3.3, Table 3) for every
ResNet, and VGG-19 beside the 34-layer nets (Figure 3)."""

from __future__ import annotations

import pytest
import torch

from resnet_cli.models import build_model, model_info


def params(net) -> int:
    return sum(p.numel() for p in net.parameters())


def projection(cin: int, cout: int) -> int:
    return cin * cout + 2 * cout  # a 1x1 convolution without bias, then BatchNorm's scale and shift


def blocks(widths, layers, expansion=1, first=None):
    """(in, out, stride) of every block, stage by stage, as the paper lays them out."""
    out, cin = [], first or widths[0]
    for i, (w, n) in enumerate(zip(widths, layers)):
        for b in range(n):
            out.append((cin, w * expansion, 2 if i > 0 and b == 0 else 1))
            cin = w * expansion
    return out


@pytest.mark.parametrize("name, widths, layers, stem, fc_in, classes", [
    ("resnet34", (64, 128, 256, 512), (3, 4, 6, 3), 3 * 64 * 49 + 128, 512, 1000),
    ("resnet20", (16, 32, 64), (3, 3, 3), 3 * 16 * 9 + 32, 64, 10),
])
def test_a_b_and_c_have_their_closed_form_parameter_counts(name, widths, layers, stem, fc_in, classes):
    """Closed forms: the stem, two 3x3 convolutions and BatchNorms per block, the fc; then option A adds nothing,
    B a projection where the shape changes, C a projection on every block."""
    body = sum(cin * cout * 9 + cout * cout * 9 + 4 * cout for cin, cout, _ in blocks(widths, layers))
    base = stem + body + fc_in * classes + classes
    changes = [(cin, cout) for cin, cout, s in blocks(widths, layers) if s != 1 or cin != cout]
    every = [(cin, cout) for cin, cout, _ in blocks(widths, layers)]
    expected = {"A": base, "B": base + sum(projection(*c) for c in changes),
                "C": base + sum(projection(*c) for c in every)}
    built = {option: params(build_model(name, shortcut=option)) for option in "ABC"}
    assert built == expected
    if name == "resnet34":  # torchvision's resnet34 is option B: 21,797,672 parameters
        assert built == {"A": 21_623_848, "B": 21_797_672, "C": 22_716_840}
    else:  # the paper's Table 6: ResNet-20 has 0.27M parameters with option A
        assert built["A"] == 269_722
    default = "B" if model_info(name).family == "imagenet" else "A"
    assert params(build_model(name)) == built[default] and model_info(name).shortcut == default


def test_c_adds_exactly_the_projections_of_the_blocks_b_leaves_as_identity():
    b, c = build_model("resnet34", shortcut="B"), build_model("resnet34", shortcut="C")
    projections = {name: sum(p.numel() for p in m.parameters()) for name, m in c.named_modules()
                   if name.endswith(".downsample")}
    assert len(projections) == 16  # every block of 3 + 4 + 6 + 3
    kept = {name for name, _ in b.named_modules() if name.endswith(".downsample")}
    assert kept == {"layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample"}
    assert params(c) - params(b) == sum(v for k, v in projections.items() if k not in kept)
    assert c.spec.parameters(1000) == params(c)  # `resnet list` counts it from the table alike


def test_option_a_pads_with_zeros_and_subsamples():
    net = build_model("resnet20", shortcut="A")
    shortcut = net.layer2[0].downsample
    x = torch.arange(2 * 16 * 8 * 8, dtype=torch.float32).reshape(2, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])  # the identity, every second pixel
    assert torch.equal(y[:, 16:], torch.zeros(2, 16, 4, 4))  # the new channels are zeros
    assert not list(shortcut.parameters())


def test_c_is_the_same_function_shape_and_b_and_c_train():
    torch.manual_seed(0)
    for option in "ABC":
        net = build_model("resnet20", shortcut=option)
        out = net(torch.randn(4, 3, 32, 32))
        out.sum().backward()
        assert out.shape == (4, 10) and all(p.grad is not None for p in net.parameters())


def test_plain_nets_and_unknown_options_are_one_line(cli):
    result = cli("summary", "plain34", "--shortcut", "A")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: plain34 has no shortcuts, so --shortcut A does not apply (it is for " \
                                    "the ResNets)"
    bad = cli("train", "--set", "model.shortcut=D", "--print-config")
    assert bad.exit_code == 2 and "model.shortcut" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_checkpoint_records_its_option_and_another_option_is_named(cli, tmp_path):
    c = cli.json("build", "resnet20", "--shortcut", "C", "-o", tmp_path / "c.pt")
    assert c["params"] == 283_962
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    assert ckpt["config"]["model"]["shortcut"] == "C"
    summary = cli.json("summary", tmp_path / "c.pt")
    assert summary["shortcut"] == "C" and summary["total"]["params"] == 283_962
    torch.save(ckpt["model"], tmp_path / "bare.pt")
    refused = cli("eval", tmp_path / "bare.pt", "--model", "resnet20", "--dataset", "synthetic", "--device", "cpu")
    assert refused.exit_code == 2
    assert refused.stderr.strip() == (f"error: {tmp_path / 'bare.pt'} does not fit resnet20: its shortcuts are option "
                                      "C, the model's option A (paper Table 3): give --shortcut C (model.shortcut)")
    init = cli("train", "--preset", "smoke", "--device", "cpu", "--init", tmp_path / "c.pt", "--run-dir", tmp_path,
               "--print-config")
    assert init.exit_code == 0  # printing the config loads nothing
    started = cli("train", "--preset", "smoke", "--device", "cpu", "--init", tmp_path / "c.pt", "--run-dir",
                  tmp_path, "--epochs", "1", "--set", "data.synthetic_train=32", "--set", "data.synthetic_test=16")
    assert started.exit_code == 2 and "its shortcuts are option C, the model's option A" in started.stderr
    again = cli.json("train", "--preset", "smoke", "--device", "cpu", "--init", tmp_path / "c.pt", "--shortcut", "C",
                     "--run-dir", tmp_path, "--name", "c", "--epochs", "1", "--set", "data.synthetic_train=32",
                     "--set", "data.synthetic_test=16")
    assert torch.load(tmp_path / "c" / "last.pt", weights_only=True)["config"]["model"]["shortcut"] == "C"
    assert again["epochs"] == 1


# torchvision's vgg19 state_dict names (models/vgg.py, cfg "E"): convolutions at these indices of `features`,
# linear layers at 0, 3 and 6 of `classifier`.
TORCHVISION_VGG19 = [f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
                     for p in ("weight", "bias")] + [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]


@pytest.mark.slow  # 2 s: the quick loop keeps under 90 s
def test_vgg19_has_torchvisions_names_and_parameter_count():
    net = build_model("vgg19")
    assert list(net.state_dict()) == TORCHVISION_VGG19
    assert params(net) == 143_667_240 == model_info("vgg19").params  # torchvision's vgg19
    info = model_info("vgg19")
    assert (info.family, info.depth, info.paper_gmacs, info.plain) == ("reference", 19, 19.6, True)


def test_torchvisions_vgg19_weights_load_strict_and_give_the_same_outputs():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    theirs = tv.models.vgg19().eval()
    ours = build_model("vgg19").eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)


@pytest.mark.slow  # counting VGG-19 twice: the quick loop keeps under 90 s
def test_flops_check_vgg19_is_19_6_g_with_both_counters_agreeing(cli):
    rows = cli.json("flops", "--check", "vgg19", "resnet34")
    vgg = rows[0] if isinstance(rows, list) else rows["models"][0]
    assert vgg["model"] == "vgg19" and vgg["paper_gmacs"] == 19.6 and vgg["paper_ok"]
    assert abs(vgg["gmacs"] - 19.6) / 19.6 < 0.03 and vgg["counters_agree"]
    assert abs(vgg["gmacs_second_counter"] - vgg["gmacs"]) < 1e-3 * vgg["gmacs"]
    summary = cli("summary", "vgg19")
    assert summary.exit_code == 0
    assert "conv5" in summary.stdout and "[3x3, 512] x 4, 2x2 max pool" in summary.stdout
    assert "143,667,240" in summary.stdout
    listed = cli("list")
    assert "reference models (the paper's Figure 3)" in listed.stdout


@pytest.mark.slow  # seven models counted by two counters
def test_reproduce_table3_and_figure3_count_without_training(cli, tmp_path):
    t3 = cli.json("reproduce", "table3", "--out", tmp_path / "t3")
    rows = {r["model"]: r for r in t3["table3"]}
    assert [r["params"] for r in rows.values()] == [21_623_848, 21_623_848, 21_797_672, 22_716_840]
    assert rows["resnet34 C"]["paper_top1_error"] == 24.19 and rows["resnet34 A"]["shortcut"] == "A"
    assert rows["resnet34 C"]["gmacs"] > rows["resnet34 B"]["gmacs"] > rows["resnet34 A"]["gmacs"]
    assert all(r["counters_agree"] for r in rows.values())
    assert not (tmp_path / "t3" / "runs").exists()  # nothing trained
    report = (tmp_path / "t3" / "report.md").read_text()
    assert "## Table 3: shortcut options of the 34-layer net (ImageNet)" in report
    assert "quoted: this command does not train on ImageNet" in report
    f3 = cli.json("reproduce", "figure3", "--out", tmp_path / "f3")
    share = {r["model"]: r["share_of_vgg19"] for r in f3["figure3"]}
    assert share["vgg19"] == 1 and 0.17 < share["resnet34"] < 0.19 and 0.17 < share["plain34"] < 0.19
    assert "only 18% of VGG-19" in (tmp_path / "f3" / "report.md").read_text()
