"""The one checkpoint format, written atomically and read with `weights_only=True`.

A checkpoint is a plain dict: `{"model": state_dict, "config": {...}, "version": N}`,
where `config["model"]` rebuilds the network with `build_model(**config["model"])` (less its `init`
key, where a training run's weights started from; `ModelConfig.architecture()`).
Training adds optimizer, scheduler, scaler and RNG state under more keys. Only
tensors and plain containers go in, so nothing in a checkpoint can run code.
`model_from_checkpoint` is the one way back from a file (or run folder) to a model. Writing goes
through files.atomic_write; what a model expects of an image is data.InputSpec (the "input" entry);
starting a run from a checkpoint's weights is train/init_weights.py.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import gate, torchvision_weights, weights
from .errors import BadInput
from .files import atomic_write_bytes

FORMAT_VERSION = 1
MAX_CHECKPOINT_BYTES = 16 * 2**30  # ResNet-152 with its optimizer state is under 1 GiB


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    import torch

    payload = {"version": FORMAT_VERSION, **state}
    return atomic_write_bytes(path, lambda buffer: torch.save(payload, buffer))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint (or a bare state_dict) safely; every failure is one BadInput line."""
    import torch

    path = Path(path)
    if not path.exists():
        raise BadInput(f"checkpoint not found: {path}")
    if path.is_dir():
        raise BadInput(f"{path} is a folder, not a checkpoint file")
    if path.suffix == weights.SUFFIX:  # no pickle at all: a JSON header and raw tensors (weights.py)
        return weights.read(path)
    with gate.open_regular(path, "checkpoint") as f:  # a FIFO would block, a device (/dev/zero) never end
        if os.fstat(f.fileno()).st_size > MAX_CHECKPOINT_BYTES:
            raise BadInput(f"{path} is larger than {MAX_CHECKPOINT_BYTES // 2**30} GiB: not a checkpoint of a ResNet")
        if not zipfile.is_zipfile(f):  # torch.save has written zip archives since PyTorch 1.6
            raise BadInput(f"cannot read checkpoint {path}: truncated or not a checkpoint (not a PyTorch file)")
        f.seek(0)
        size = os.fstat(f.fileno()).st_size
        try:
            with zipfile.ZipFile(f) as archive:
                members = archive.infolist()
        except (zipfile.BadZipFile, ValueError, OSError) as e:
            raise BadInput(f"cannot read checkpoint {path}: truncated or not a checkpoint ({str(e)[:160]})") from None
        if any(m.filename.endswith("constants.pkl") or "/code/" in m.filename for m in members):
            raise BadInput(f"{path} is a TorchScript file (resnet build/export --format torchscript), not a "
                           "checkpoint: give the checkpoint or run folder it was made from")
        # torch.save stores every record uncompressed; torch.load would inflate a compressed one to the size the
        # archive claims, so a small file could ask for terabytes: refused before a byte is inflated
        packed = max((m for m in members if m.compress_type != zipfile.ZIP_STORED or m.file_size > size),
                     key=lambda m: m.file_size, default=None)
        if packed is not None:
            raise BadInput(f"refusing to load {path}: its record {packed.filename} is compressed to "
                           f"{packed.compress_size:,} of {packed.file_size:,} bytes, and torch.save compresses "
                           "nothing (it would inflate past any bound)")
        f.seek(0)
        try:
            obj = torch.load(f, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            what = f"it would call {found.group(1)}" if found else "it holds objects other than tensors"
            raise BadInput(f"refusing to load {path}: {what}; only plain-tensor checkpoints are loaded "
                           "(weights_only=True)") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BadInput(f"cannot read checkpoint {path}: truncated or not a checkpoint ({first[:160]})") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{path} does not hold a checkpoint dict (found {type(obj).__name__})")
    known = None if is_full_checkpoint(obj) else torchvision_weights.published(path)
    return torchvision_weights.as_checkpoint(obj, known) if known else obj


def is_full_checkpoint(obj: dict[str, Any]) -> bool:
    return isinstance(obj.get("model"), dict) and isinstance(obj.get("config"), dict) \
        and isinstance(obj["config"].get("model"), dict)


def names_weights(source: str | os.PathLike) -> bool:
    """Whether a MODEL argument names trained weights (a file or folder that exists, or an `hf-hub:` name) rather
    than a registry name: what `summary` and `flops` load instead of building."""
    return weights.is_hub_name(source) or torchvision_weights.is_name(source) or Path(source).exists()


def checkpoint_file(source: str | os.PathLike, prefer: str = "best") -> Path:
    """A checkpoint file as given, or a run folder's `best.pt` (else `last.pt`); `prefer="last"` for resuming.
    Weights that travel (a .safetensors file, a Hub repo folder or an `hf-hub:` name) are their safetensors file;
    `torchvision:NAME` is torchvision's file, fetched once (torchvision_weights)."""
    if torchvision_weights.is_name(source):
        return torchvision_weights.fetch(source)
    travelling = weights.weights_file(source)
    if travelling is not None:
        return travelling
    source = Path(source)
    if not source.is_dir():
        return source
    order = ("best.pt", "last.pt") if prefer == "best" else ("last.pt",)
    for name in order:
        if (source / name).exists():
            return source / name
    raise BadInput(f"{source} holds no {' or '.join(order)}")


def config_from_checkpoint(ckpt: dict[str, Any], path: Path, model: str | None = None, dataset: str | None = None):
    """The run config a checkpoint was made with; for a bare state_dict (torchvision's, say), one built from
    `model` and the weights' shapes. `model`, when given with a full checkpoint, must name what it holds."""
    from . import config as C
    from .models import resolve_name

    if is_full_checkpoint(ckpt):
        cfg = C.from_dict(ckpt["config"], f"config in {path}")
        if model is not None and resolve_name(model) != cfg.model.name:
            raise BadInput(f"{path} holds a {cfg.model.name}, not a {model}")
        return cfg
    if model is None:
        raise BadInput(f"{path} is a bare state_dict; say which model it is with --model")
    state = state_dict_of(ckpt)
    try:
        num_classes, in_channels = int(state["fc.weight"].shape[0]), int(state["conv1.weight"].shape[1])
    except (KeyError, AttributeError, IndexError):
        raise BadInput(f"{path} does not look like a ResNet state_dict (no fc.weight / conv1.weight)") from None
    # the dataset is never guessed: commands that need one (eval) ask for --dataset; an image folder is cropped
    # at the network's own input size (config.resolve: 224 for the ImageNet family), as its weights were evaluated
    return C.resolve(flags={"model.name": resolve_name(model), "model.num_classes": num_classes,
                            "model.in_channels": in_channels, "data.dataset": dataset})


def state_dict_of(ckpt: dict[str, Any], weights: str = "auto") -> dict[str, Any]:
    """The weights in a checkpoint: ours, a {"state_dict": ...} wrapper, or a bare state_dict.

    Ours may hold two sets: "model" (raw) and, with train.ema, "ema" (the moving average), which training
    selects with and which `weights="auto"` returns; "raw" and "ema" ask for one."""
    if is_full_checkpoint(ckpt):
        return ckpt["ema"]["weights"] if uses_ema(ckpt, weights) else ckpt["model"]
    return ckpt.get("state_dict", ckpt)


def uses_ema(ckpt: dict[str, Any], weights: str = "auto") -> bool:
    """Whether `state_dict_of(ckpt, weights)` gives the EMA weights; "ema" without them is bad input."""
    has = is_full_checkpoint(ckpt) and isinstance(ckpt.get("ema"), dict)
    if weights == "ema" and not has:
        raise BadInput("this checkpoint has no EMA weights (the run did not set train.ema)")
    return has and weights != "raw"


@dataclass
class LoadedModel:
    model: Any  # the nn.Module, weights loaded, on the CPU, in eval mode
    config: Any  # the Config that rebuilds it (config.model) and says what it was trained on
    path: Path  # the checkpoint file
    checkpoint: dict[str, Any]
    weights: str = "raw"  # "ema" when the moving average was loaded (state_dict_of)

    @property
    def from_run(self) -> bool:
        """One of our checkpoints (config included), not a bare state_dict."""
        return is_full_checkpoint(self.checkpoint)

    @property
    def trained(self) -> bool:
        """Written by a training run (its config has a data section), not by `resnet build`: the weights were
        trained on something we know. Bare state_dicts (torchvision's) are trained but say nothing of their data."""
        return self.from_run and isinstance(self.checkpoint["config"].get("data"), dict)

    @property
    def recipe(self) -> bool:
        """Trained by a resnet-cli run, whose config (its train section) trains them again: not a bare state_dict,
        not `resnet build`'s, not another tool's weights with a config.json (timm's repo says no recipe)."""
        return self.trained and isinstance(self.checkpoint["config"].get("train"), dict)

    @property
    def unknown_data(self) -> str:
        """How to name, in a message, weights whose data we do not know (neither a run's nor given)."""
        return "holds untrained weights (resnet build)" if self.from_run else "is a bare state_dict"

    @property
    def saved_input(self) -> dict[str, Any] | None:
        """What the run recorded of its input (data.InputSpec.as_dict), when the checkpoint has it."""
        saved = self.checkpoint.get("input") if self.from_run else None
        return saved if isinstance(saved, dict) else None


def model_from_checkpoint(source: str | os.PathLike, model: str | None = None,
                          dataset: str | None = None, weights: str = "auto") -> LoadedModel:
    """The one way from a file to a model: a run folder, one of our checkpoints, or a bare state_dict with
    `model` naming the architecture. `weights`: see `state_dict_of` (the EMA weights when the run kept them).
    Every mismatch is one BadInput line."""
    from .models import build_model

    path = checkpoint_file(source)
    ckpt = load_checkpoint(path)
    cfg = config_from_checkpoint(ckpt, path, model, dataset)
    net = build_model(**cfg.model.architecture())
    state = state_dict_of(ckpt, weights)
    # BatchNorm's batch counters, which older torchvision files lack, count training steps: nothing evaluates them
    state = {**{k: v for k, v in net.state_dict().items() if k.endswith("num_batches_tracked")}, **state}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:  # "Error(s) in loading state_dict for ResNet:", then the details, one per line
        details = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()] or [str(e).strip()]
        more = f" ({len(details) - 1} more)" if len(details) > 1 else ""
        from .models.registry import shortcut_mismatch

        shortcuts = shortcut_mismatch(net.state_dict(), state)
        raise BadInput(f"{path} does not fit {cfg.model.name}: {shortcuts or details[0][:240] + more}") from None
    bad = next((k for k, v in net.state_dict().items() if v.is_floating_point() and not v.isfinite().all()), None)
    if bad is not None:  # its every output would be NaN: no accuracy or prediction of it is a number
        raise BadInput(f"{path} holds non-finite values (NaN or Inf) in {bad}: the run diverged before it was "
                       "saved; use an earlier checkpoint")
    if cfg.train.freeze:  # as the run trained it: `summary` counts these parameters as frozen
        net.freeze(cfg.train.freeze)
    return LoadedModel(net.eval(), cfg, path, ckpt, "ema" if uses_ema(ckpt, weights) else "raw")
