"""The models: a torch-free registry and table of architectures, and the one torch `ResNet` class.

`from resnet_cli.models import build_model, list_models, model_info` needs no torch until a model is
built. Importing this package registers the built-in models: one entrypoint per row of specs.py, each
importing `ResNet` (resnet.py) when it builds. Neither the registry nor the table imports a model file.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .registry import (CIFAR_DEPTHS, IMAGENET_DEPTHS, SHORTCUT_OPTIONS, ModelInfo, build_model, list_models,
                       model_info, name_for_depth, register_model, resolve_name)
from .specs import ArchSpec, VGGSpec, builtin_models

__all__ = ["ArchSpec", "CIFAR_DEPTHS", "IMAGENET_DEPTHS", "ModelInfo", "ResNet", "SHORTCUT_OPTIONS", "VGGSpec",
           "build_model", "list_models", "model_info", "name_for_depth", "register_model", "resolve_name"]


def _entrypoint(spec):
    def build(*, num_classes: int, in_channels: int = 3, zero_init_residual: bool = False, shortcut: str = "",
              drop_path: float = 0.0):
        if isinstance(spec, VGGSpec):
            from .vgg import VGG  # torch, only when a model is built

            return VGG(spec, num_classes=num_classes, in_channels=in_channels)
        from .resnet import ResNet

        arch = replace(spec, shortcut=shortcut) if shortcut else spec
        return ResNet(arch, num_classes=num_classes, in_channels=in_channels, zero_init_residual=zero_init_residual,
                      drop_path=drop_path)
    return build


for _info, _spec in builtin_models():
    register_model(_info)(_entrypoint(_spec))


def __getattr__(name: str) -> Any:
    if name == "ResNet":
        from .resnet import ResNet

        return ResNet
    raise AttributeError(f"module 'resnet_cli.models' has no attribute {name!r}")
