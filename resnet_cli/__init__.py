"""resnet-cli: ResNets as in He et al. (2015), "Deep Residual Learning for Image Recognition".

`build_model` and `list_models` are the Python API, with `load_model` for trained weights (a run, a checkpoint,
`torchvision:resnet50`, `hf-hub:ORG/NAME`). They are loaded on first use so that importing the package (and
`resnet --help`) does not import torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["build_model", "list_models", "load_model", "model_info", "register_model", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("build_model", "list_models", "model_info", "register_model"):
        from . import models

        return getattr(models, name)
    if name == "load_model":
        from .classifier import load_model

        return load_model
    raise AttributeError(f"module 'resnet_cli' has no attribute {name!r}")
