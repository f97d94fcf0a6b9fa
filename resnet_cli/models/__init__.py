"""The models: a torch-free registry and table of architectures, and the one torch `ResNet` class.

`from resnet_cli.models import build_model, list_models, model_info` needs no torch until a model is
built; importing this package registers the built-in models (specs.py). `ResNet` (resnet.py) is loaded
on first use.
"""

from __future__ import annotations

from typing import Any

from .registry import (CIFAR_DEPTHS, IMAGENET_DEPTHS, ModelInfo, build_model, list_models, model_config, model_info,
                       name_for_depth, register_model, resolve_name)
from .specs import ArchSpec

__all__ = ["ArchSpec", "CIFAR_DEPTHS", "IMAGENET_DEPTHS", "ModelInfo", "ResNet", "build_model", "list_models",
           "model_config", "model_info", "name_for_depth", "register_model", "resolve_name"]


def __getattr__(name: str) -> Any:
    if name == "ResNet":
        from .resnet import ResNet

        return ResNet
    raise AttributeError(f"module 'resnet_cli.models' has no attribute {name!r}")
