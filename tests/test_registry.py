"""Registry: wildcards, names, depths, bad input."""

from __future__ import annotations

import pytest

from resnet_cli import build_model, list_models
from resnet_cli.errors import BadInput
from resnet_cli.models import ModelInfo, name_for_depth, register_model, resolve_name


def test_wildcards():
    assert list_models("resnet5*") == ["resnet50", "resnet50-v1.5", "resnet56"]
    assert list_models("plain1?") == ["plain18"]
    assert len(list_models()) == 29  # 8 ImageNet and 6 CIFAR ResNets, their 14 plain twins, VGG-19
    assert list_models("nothing*") == []


def test_depth_and_plain_names():
    assert name_for_depth(50) == "resnet50"
    assert name_for_depth(56, plain=True) == "plain56"
    assert resolve_name("resnet110", plain=True) == "plain110"
    assert resolve_name("resnet50-v1.5", plain=True) == "plain50-v1.5"
    with pytest.raises(BadInput, match="no ResNet of depth 19"):
        name_for_depth(19)


def test_unknown_model_suggests():
    with pytest.raises(BadInput, match="did you mean 'resnet50'"):
        resolve_name("resnt50")


@pytest.mark.parametrize("kwargs,match", [
    ({"num_classes": 0}, "classes must be a positive"),
    ({"in_channels": -1}, "channels must be a positive"),
    ({"dropout": 0.1}, "unknown model option"),
])
def test_build_model_rejects_bad_options(kwargs, match):
    with pytest.raises(BadInput, match=match):
        build_model("resnet20", **kwargs)


def test_zero_init_refused_for_plain_nets():
    with pytest.raises(BadInput, match="no shortcuts"):
        build_model("plain20", zero_init_residual=True)


def test_register_model_is_open_for_extension(monkeypatch):
    import torch

    from resnet_cli.models import registry

    list_models()  # register the built-ins before taking copies
    monkeypatch.setattr(registry, "_ENTRYPOINTS", dict(registry._ENTRYPOINTS))
    monkeypatch.setattr(registry, "_INFO", dict(registry._INFO))

    info = ModelInfo("tiny-test-net", "cifar", "basic", 2, False, 32, 10)

    @register_model(info)
    def tiny(*, num_classes, in_channels=3, zero_init_residual=False):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

    assert "tiny-test-net" in list_models("tiny*")
    assert build_model("tiny-test-net", num_classes=4)(torch.randn(2, 3, 4, 4)).shape == (2, 4)
    with pytest.raises(ValueError, match="already registered"):
        register_model(info)(tiny)


@pytest.mark.slow
def test_names_and_the_model_table_need_no_torch():
    """Listing, describing and resolving models must not import torch (the CLI checks names before paying
    for it); building one does."""
    import subprocess
    import sys

    code = ("import sys; from resnet_cli.models import list_models, model_info, resolve_name; "
            "names = list_models('*'); info = model_info('resnet20'); resolve_name(None, 50); "
            "print(len(names), info.depth, 'torch' in sys.modules); "
            "from resnet_cli.models import build_model; build_model('resnet20'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["29", "20", "False", "True"]
