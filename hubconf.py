"""torch.hub entrypoints, as torchvision's and timm's repositories have them:

    torch.hub.load("OWNER/resnet-cli", "resnet56", num_classes=100)          # a fresh network
    torch.hub.load("OWNER/resnet-cli", "resnet50_v1_5", weights="torchvision:resnet50")
    torch.hub.load("OWNER/resnet-cli", "load_model", "hf-hub:ORG/NAME")     # weights, classes and transform

One entrypoint per registered network, its name with "-" and "." written "_" (torch.hub takes Python names);
`weights` loads trained ones into it (anything `resnet eval` reads: a run folder, a checkpoint, a .safetensors
file, a Hub repo, hf-hub:ORG/NAME, torchvision:NAME), refused unless they are that network. `load_model` is
resnet_cli.load_model. The code is this repository's `resnet_cli`; torch.hub needs only torch to build one.
"""

dependencies = ["torch"]

from resnet_cli import list_models as _list_models  # noqa: E402  (torch.hub reads `dependencies` first)
from resnet_cli import load_model  # noqa: E402,F401


def _python_name(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")  # resnet50-v1.5 -> resnet50_v1_5


def _entrypoint(name: str):
    def build(weights: str | None = None, **kwargs):
        from resnet_cli import build_model
        from resnet_cli.errors import BadInput

        if weights is None:
            return build_model(name, **kwargs)
        if kwargs:
            raise BadInput(f"weights={weights!r} load a trained {name} as it is: no other arguments "
                           f"({', '.join(kwargs)}); fine-tune with `resnet train --init`")
        trained = load_model(weights)
        if trained.name != name:
            raise BadInput(f"{weights} are a {trained.name}, not a {name}: load them with its entrypoint, "
                           f"{_python_name(trained.name)}")
        return trained.model

    build.__name__ = build.__qualname__ = _python_name(name)
    build.__doc__ = (f"{name} as resnet_cli.build_model builds it (keyword arguments: num_classes, in_channels, "
                     f"shortcut, zero_init_residual, drop_path), or with `weights` trained ones, in eval mode.")
    return build


for _name in _list_models():
    _built = _entrypoint(_name)
    globals()[_built.__name__] = _built
