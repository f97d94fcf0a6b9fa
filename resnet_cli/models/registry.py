"""The model registry: the one place where models are named and built.

Every command (summary, flops, train, eval, bench) goes through `build_model`,
so what `summary` shows is what `train` trains. Entrypoints register with
`@register_model` (as in timm) and all have the same shape:
`fn(*, num_classes, in_channels, zero_init_residual[, shortcut][, drop_path]) -> nn.Module` (`shortcut` and
`drop_path` are passed only when asked for, and only to a model with shortcuts).

Neither this module nor the table of built-in models (specs.py) imports torch:
the CLI lists, describes and checks names before paying for that import, and
the entrypoints import the torch code when a model is built. Importing this
module runs `resnet_cli/models/__init__.py`, which registers the built-ins;
the registry itself never imports the models.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import asdict, dataclass
from typing import Any, Callable

from ..errors import BadInput


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model without building it."""

    name: str
    family: str  # "imagenet", "cifar", or "reference" (VGG-19: the paper's Figure 3, for comparison)
    block: str  # "basic", "bottleneck", or "vgg"
    depth: int  # weighted layers, as the paper counts them
    plain: bool  # True for the paper's plain (shortcut-free) baselines
    input_size: int  # native input resolution
    default_classes: int  # 1000 for ImageNet, 10 for CIFAR-10
    paper_gmacs: float | None = None  # paper Table 1 "FLOPs" (multiply-adds), where it gives one
    variant: str = ""  # "" for the paper's design, "v1.5" for torchvision's stride placement
    params: int = 0  # learnable parameters with the default classes and 3 input channels
    shortcut: str = ""  # the shortcut option it is built with unless told: "A" (CIFAR), "B" (ImageNet), "none"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_ENTRYPOINTS: dict[str, Callable[..., Any]] = {}
_INFO: dict[str, ModelInfo] = {}

# Depths that `--depth N` accepts, and the family each maps to.
IMAGENET_DEPTHS = (18, 34, 50, 101, 152)
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)


def register_model(info: ModelInfo) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register an entrypoint under `info.name`."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if info.name in _ENTRYPOINTS:
            raise ValueError(f"model {info.name!r} is already registered")
        _ENTRYPOINTS[info.name] = fn
        _INFO[info.name] = info
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard, in registry order."""
    return [name for name in _ENTRYPOINTS if fnmatch.fnmatchcase(name, pattern)]


def model_info(name: str) -> ModelInfo:
    if name not in _INFO:
        raise unknown_model(name)
    return _INFO[name]


def unknown_model(name: str) -> BadInput:
    close = difflib.get_close_matches(name, list(_ENTRYPOINTS), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "; see `resnet list`"
    return BadInput(f"unknown model {name!r}{hint}")


def name_for_depth(depth: int, plain: bool = False) -> str:
    """Map `--depth N [--plain]` to a registry name."""
    if depth not in IMAGENET_DEPTHS + CIFAR_DEPTHS:
        raise BadInput(
            f"no ResNet of depth {depth}; ImageNet depths are {', '.join(map(str, IMAGENET_DEPTHS))} "
            f"and CIFAR depths are {', '.join(map(str, CIFAR_DEPTHS))}"
        )
    return f"{'plain' if plain else 'resnet'}{depth}"


def resolve_name(name: str | None, depth: int | None = None, plain: bool = False) -> str:
    """The registry name for a command line's MODEL / --depth / --plain."""
    if name is not None and depth is not None:
        raise BadInput("give a model name or --depth, not both")
    if name is None and depth is None:
        raise BadInput("name a model (e.g. resnet50) or give --depth N")
    if depth is not None:
        return name_for_depth(depth, plain)
    assert name is not None
    if plain and name.startswith("resnet"):
        name = "plain" + name[len("resnet"):]
    model_info(name)  # raises with a suggestion if unknown
    return name


def build_model(name: str, num_classes: int | None = None, in_channels: int = 3, **options: Any):
    """Build a registered model. `num_classes` None: the family's dataset's (1000 or 10). Only positive counts
    are built: a config's 0 ("the data's") is fitted to the data first (config.ModelConfig.fitted)."""
    info = model_info(name)
    if num_classes is None:
        num_classes = info.default_classes
    if not isinstance(num_classes, int) or num_classes <= 0:
        raise BadInput(f"number of classes must be a positive integer, got {num_classes}")
    if not isinstance(in_channels, int) or in_channels <= 0:
        raise BadInput(f"input channels must be a positive integer, got {in_channels}")
    from .. import gate

    gate.check_count("number of classes", num_classes, gate.MAX_CLASSES)  # a checkpoint's config is outside bytes
    gate.check_count("input channels", in_channels, gate.MAX_CHANNELS)
    unknown = set(options) - {"zero_init_residual", "shortcut", "drop_path"}
    if unknown:
        raise BadInput(f"unknown model option(s): {', '.join(sorted(unknown))}; known: zero_init_residual, shortcut, "
                       "drop_path")
    if options.get("zero_init_residual") and info.plain:
        raise BadInput(f"{name} has no shortcuts, so zero_init_residual would zero its output")
    rate = options.pop("drop_path", 0.0) or 0.0
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate < 1:
        raise BadInput(f"drop_path (stochastic depth) is a probability in [0, 1), got {rate!r}")
    if rate and info.plain:
        raise BadInput(f"{name} has no shortcuts, so drop_path (stochastic depth) would cut the network itself")
    if rate:
        options["drop_path"] = float(rate)
    shortcut = check_shortcut(name, options.pop("shortcut", "") or "")
    if shortcut:  # an entrypoint without shortcut options (a plain net, one a user registered) is asked for none
        options["shortcut"] = shortcut
    return _ENTRYPOINTS[name](num_classes=num_classes, in_channels=in_channels, **options)


SHORTCUT_OPTIONS = ("A", "B", "C")  # the paper's section 3.3: zero-padding, projections where shapes change, all


def check_shortcut(name: str, shortcut: str) -> str:
    """The shortcut option `name` is built with: `shortcut` ("A", "B", "C"), or "" for the model's own (the
    paper's: B for ImageNet nets, A for CIFAR nets). A net without shortcuts takes none."""
    if not shortcut:
        return ""
    info = model_info(name)
    if info.plain:
        raise BadInput(f"{name} has no shortcuts, so --shortcut {shortcut} does not apply (it is for the ResNets)")
    if shortcut not in SHORTCUT_OPTIONS:
        raise BadInput(f"--shortcut must be A (zero-padding), B (projections where shapes change) or C "
                       f"(projections everywhere), got {shortcut!r}")
    return shortcut


def shortcut_in_keys(keys) -> str:
    """The shortcut option a ResNet state_dict's names show: a projection (`layerN.M.downsample.0`) on every
    block is C, on some B, on none A (or a plain net: their names are the same)."""
    blocks = {".".join(k.split(".")[:2]) for k in keys if k.startswith("layer") and k.count(".") >= 2}
    projected = {".".join(k.split(".")[:2]) for k in keys if ".downsample.0." in k}
    return "A" if not projected else "C" if projected == blocks else "B"


def shortcut_mismatch(model_keys, state_keys) -> str | None:
    """One line's worth when two state_dicts differ only in their shortcuts: "option X in the file, Y in the
    model: give --shortcut X"; None when anything else differs, or nothing does."""
    model_keys, state_keys = set(model_keys), set(state_keys)
    if {k for k in model_keys if ".downsample." not in k} != {k for k in state_keys if ".downsample." not in k}:
        return None
    found, built = shortcut_in_keys(state_keys), shortcut_in_keys(model_keys)
    if found == built:
        return None
    return (f"its shortcuts are option {found}, the model's option {built} (paper Table 3): give --shortcut {found} "
            f"(model.shortcut)")
