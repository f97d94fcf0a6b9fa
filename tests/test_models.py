"""The registry's models: shapes, exact parameter counts, torchvision compatibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from resnet_cli import build_model, list_models, model_info
from resnet_cli.models.resnet import Bottleneck, PadShortcut

IMAGENET_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                   "resnet101": 44_549_160, "resnet152": 60_192_808}
# Paper Table 6, 10 classes.
CIFAR_PARAMS = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
                "resnet110": 1_727_962, "resnet1202": 19_421_274}


def nparams(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


BIG = {"vgg19", "resnet1202", "plain1202"}  # a second or more each: in the full suite (the quick loop keeps under 90 s)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in list_models()])
def test_every_model_runs_forward(name):
    info = model_info(name)
    size = 64 if info.family == "imagenet" else 32
    torch.manual_seed(0)
    # Train mode (batch statistics), as at the start of training: in eval mode an untrained
    # resnet1202 overflows, since BatchNorm's initial running stats do not normalise 600 residual sums.
    model = build_model(name, num_classes=7, in_channels=1 if info.family == "cifar" else 3).train()
    x = torch.randn(2, model.in_channels, size, size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 7)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name,count", [pytest.param(n, c, marks=pytest.mark.slow) if n in BIG else (n, c)
                                        for n, c in [*IMAGENET_PARAMS.items(), *CIFAR_PARAMS.items()]])
def test_exact_parameter_counts(name, count):
    with torch.device("meta"):
        assert nparams(build_model(name)) == count
        if name in ("resnet50", "resnet101", "resnet152"):
            assert nparams(build_model(f"{name}-v1.5")) == count


def test_plain_nets_have_no_shortcut_modules():
    with torch.device("meta"):
        sd = build_model("plain34").state_dict()
        assert not any("downsample" in k for k in sd)
        # plain34 = resnet34 minus its three projection shortcuts
        assert nparams(build_model("resnet34")) - nparams(build_model("plain34")) == sum(
            cin * cout + 2 * cout for cin, cout in [(64, 128), (128, 256), (256, 512)])
        # option A shortcuts carry no parameters, so CIFAR plain and residual nets have equal counts
        assert nparams(build_model("plain56")) == nparams(build_model("resnet56"))


def test_plain_net_output_differs_from_residual_with_same_weights():
    torch.manual_seed(0)
    res, plain = build_model("resnet20").eval(), build_model("plain20").eval()
    plain.load_state_dict(res.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(res(x), plain(x))


def test_option_a_shortcut_subsamples_and_zero_pads():
    sc = PadShortcut(stride=2, out_planes=32)
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0
    assert list(sc.parameters()) == []


def test_cifar_stage_layout():
    m = build_model("resnet56")
    assert [len(s) for s in m.stages] == [9, 9, 9]
    assert m.conv1.kernel_size == (3, 3) and m.conv1.out_channels == 16
    assert isinstance(m.layer2[0].downsample, PadShortcut)
    assert not isinstance(m.maxpool, torch.nn.MaxPool2d)


def test_stride_placement_paper_vs_v15():
    paper, v15 = build_model("resnet50"), build_model("resnet50-v1.5")
    for layer in ("layer2", "layer3", "layer4"):
        b, c = getattr(paper, layer)[0], getattr(v15, layer)[0]
        assert isinstance(b, Bottleneck)
        assert (b.conv1.stride, b.conv2.stride) == ((2, 2), (1, 1))  # paper: stride on the first 1x1
        assert (c.conv1.stride, c.conv2.stride) == ((1, 1), (2, 2))  # v1.5: stride on the 3x3
    # Same weights, different function.
    v15.load_state_dict(paper.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(paper.eval()(x), v15.eval()(x))


TV = json.loads((Path(__file__).parent / "data" / "torchvision_resnet_keys.json").read_text())


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet50-v1.5"])
def test_state_dict_names_and_shapes_match_torchvision(name):
    expected = [(k, tuple(s)) for k, s in TV[name.replace("-v1.5", "")]]
    with torch.device("meta"):
        got = [(k, tuple(v.shape)) for k, v in build_model(name).state_dict().items()]
    assert got == expected


def test_torchvision_style_state_dict_loads_strict():
    # A state_dict keyed exactly like torchvision's (built from the recorded names and shapes).
    sd = {k: torch.randn(s) if s else torch.tensor(3) for k, s in TV["resnet18"]}
    model = build_model("resnet18")
    model.load_state_dict(sd, strict=True)
    assert torch.equal(model.fc.weight, sd["fc.weight"])


def test_options_num_classes_in_channels_zero_init():
    m = build_model("resnet50", num_classes=5, in_channels=1, zero_init_residual=True)
    assert m.fc.out_features == 5 and m.conv1.in_channels == 1
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for s in m.stages for b in s)
    assert torch.count_nonzero(build_model("resnet50").layer1[0].bn3.weight) > 0


def test_he_initialisation():
    torch.manual_seed(0)
    conv = build_model("resnet50").layer3[2].conv2  # 3x3, 256 -> 256
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.05)
