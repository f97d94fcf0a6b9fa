"""Weights as they travel between tools: safetensors files and Hugging Face Hub repos, written and read.

- A `.safetensors` file holds the weights (no pickle: a header of JSON, then raw tensor bytes) and, in its
  metadata, what rebuilds and feeds the model: the run's config (`resnet_cli.config`) and its input record
  (`resnet_cli.input`: classes, size, mean/std), as JSON strings.
- A Hub repo folder (`export --format hub`) holds `model.safetensors`, `config.json` (timm's keys where timm has
  the same network, and ours under `resnet_cli`), `train_config.yaml` (the run's config: `resnet train --config`
  trains it again) and a `README.md` model card.
- `hf-hub:ORG/NAME[@REVISION]` is such a repo, resolved through huggingface_hub's cache (offline when it was
  fetched before); a file is downloaded only after the Hub said its size and the size is within the file's
  bound, and under one deadline.
- timm's own repos of the ResNets that are ours (`hf-hub:timm/resnet50.a1_in1k`) are read through their
  config.json (`from_timm`): the network, timm's evaluation of it, the class names (ImageNet-1k's by default).

`read` turns any of them into the checkpoint dict `checkpoint.load_checkpoint` returns for our own files, so every
command that takes a checkpoint takes these. Bytes come through the gate (bounded, regular files only); nothing is
unpickled.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

from . import gate
from .config import DECODED
from .errors import BadInput

SUFFIX = ".safetensors"
HUB_PREFIX = "hf-hub:"
HUB_REPO = re.compile(r"[A-Za-z0-9_.-]{1,96}/[A-Za-z0-9_.-]{1,96}")  # the Hub's rule for a repo id, as its client checks
HUB_FILES = ("model.safetensors", "config.json")  # what a Hub repo must hold for us; the card and config are extra
SAFETENSORS_EXTRA = 'pip install "resnet-cli[safetensors]"'
HUB_EXTRA = 'pip install "resnet-cli[hub]"'
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on the JSON header
MAX_WEIGHTS_BYTES = 16 * 2**30
MAX_CONFIG_BYTES = 2**20
HUB_SECONDS = 3600.0  # the deadline on one file's download from the Hub (a ResNet-152's weights are 230 MB)
META_CONFIG, META_INPUT, META_WEIGHTS = "resnet_cli.config", "resnet_cli.input", "resnet_cli.weights"

# Our ImageNet nets that compute exactly what a timm architecture computes, with the same tensor names: timm's
# ResNets stride the 3x3 convolution (v1.5), and 18/34 have no 1x1 to stride, so the paper's 18/34 match too.
TIMM = {"resnet18": "resnet18", "resnet34": "resnet34", "resnet50-v1.5": "resnet50",
        "resnet101-v1.5": "resnet101", "resnet152-v1.5": "resnet152"}


def require(module: str, extra: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BadInput(f"{what} needs the {module} package: {extra}") from None


# ------------------------------------------------------------------------------------------------ reading

def is_hub_name(source: str | os.PathLike) -> bool:
    return str(source).startswith(HUB_PREFIX)


def weights_file(source: str | os.PathLike) -> Path | None:
    """The safetensors file `source` names (a `.safetensors` file, a folder holding model.safetensors, or an
    `hf-hub:` name, fetched or found in the cache), or None when it names something else."""
    if is_hub_name(source):
        return hub_snapshot(str(source)) / "model.safetensors"
    path = Path(source)
    if path.is_dir() and (path / "model.safetensors").exists():
        return path / "model.safetensors"
    return path if path.suffix == SUFFIX else None


def header(raw: bytes, where: str) -> dict[str, Any]:
    """A safetensors file's JSON header, checked before any tensor is made: a pickle, a zip or a truncated file
    renamed .safetensors is one line."""
    if len(raw) < 8:
        raise BadInput(f"{where} is not a safetensors file (truncated: {len(raw)} bytes)")
    (size,) = struct.unpack("<Q", raw[:8])
    if not 2 <= size <= min(MAX_HEADER_BYTES, len(raw) - 8) or raw[8:9] != b"{":
        raise BadInput(f"{where} is not a safetensors file (no JSON header at its start: a PyTorch pickle or zip "
                       "renamed .safetensors?)")
    head = gate.json_bytes(raw[8:8 + size], f"the header of {where}")
    if not isinstance(head, dict):
        raise BadInput(f"{where} is not a safetensors file (its header is not a JSON object)")
    return head


def read(path: Path) -> dict[str, Any]:
    """A safetensors file (and the config.json beside it, in a Hub folder) as a checkpoint dict:
    {"model": state_dict, "config": {...}, "input": {...}, "version": 1}, or a bare state_dict when neither its
    metadata nor a config.json says what it is (timm's or another tool's file: `--model` then names it)."""
    st = require("safetensors.torch", SAFETENSORS_EXTRA, f"reading {path}")
    limits = gate.Limits(MAX_WEIGHTS_BYTES, keys=("the bound on a weights file", "data.read_timeout"))
    raw = gate.read_file(path, limits, "weights file")
    meta = header(raw, str(path)).get("__metadata__") or {}
    try:
        state = st.load(raw)
    except Exception as e:  # safetensors raises its own SafetensorError for a damaged body
        raise BadInput(f"cannot read {path}: {str(e).splitlines()[0][:200]}") from None
    config, spec = _json_meta(meta.get(META_CONFIG), path), _json_meta(meta.get(META_INPUT), path)
    beside = path.parent / "config.json"
    if config is None and beside.is_file():  # a Hub folder: config.json names the model, as we or timm wrote it
        found = _config_json(beside)
        ours = found.get("resnet_cli")
        if isinstance(ours, dict):
            config, spec = ours.get("config"), spec or ours.get("input")
        elif "architecture" in found and found.get("num_classes") != 0:  # 0: a headless backbone, for --init
            config, spec = from_timm(found, str(beside))
    if not isinstance(config, dict):
        return state
    out = {"version": 1, "model": state, "config": config, "weights": meta.get(META_WEIGHTS, "raw")}
    if isinstance(spec, dict):
        out["input"] = spec
    return out


def from_timm(found: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(our config, our input record) from timm's config.json for one of its ResNets that are ours (TIMM): the
    network its `architecture` names, and the evaluation its `pretrained_cfg` describes, as timm's validate.py
    reads it (test_input_size and test_crop_pct where it has them, else input_size and crop_pct, applied as timm
    applies it; interpolation, mean/std, label_names; timm's defaults where it is silent). Classes it
    does not name are ImageNet-1k's for 1000 outputs (timm's own rule), else numbered. What we cannot do as timm
    does (a crop_mode other than center, another filter) is refused in one line, never approximated."""
    from .data.inputs import IMAGENET_MEAN, IMAGENET_STD, interpolations, named_outputs, resize_of

    ours = {timm: name for name, timm in TIMM.items()}
    arch = found["architecture"]
    if not isinstance(arch, str) or arch not in ours:
        raise BadInput(f"{where} names timm's {str(arch)[:80]!r}, which resnet-cli does not build (of timm's "
                       f"networks it builds {', '.join(ours)})")
    pre = found.get("pretrained_cfg", found)  # timm's older config.json is one flat dict
    args = found.get("model_args") or {}
    if not isinstance(pre, dict) or not isinstance(args, dict):
        raise BadInput(f"{where}: pretrained_cfg and model_args must be JSON objects")
    classes = found.get("num_classes", pre.get("num_classes", 1000))
    trained = pre.get("input_size", [3, 224, 224])  # the size it was trained at (timm's default for everything)
    size = pre.get("test_input_size") or trained  # the size it is evaluated at, as timm's validate.py takes it
    crop_pct, mode = pre.get("test_crop_pct") or pre.get("crop_pct", 0.875), pre.get("crop_mode", "center")
    interpolation = pre.get("interpolation") or "bicubic"  # timm's default where its config is silent
    if not (isinstance(classes, int) and 0 < classes <= gate.MAX_CLASSES
            and all(isinstance(v, list) and len(v) == 3 and all(isinstance(n, int) and n > 0 for n in v)
                    and v[1] == v[2] for v in (size, trained))
            and isinstance(crop_pct, (int, float)) and 0 < crop_pct <= 1):
        raise BadInput(f"{where}: num_classes, input_size ([C, H, H]) or crop_pct (a fraction in (0, 1]) is not "
                       "valid: the file is damaged or not timm's")
    if mode != "center" or interpolation not in interpolations():
        raise BadInput(f"{where} evaluates with crop_mode {str(mode)[:40]!r} and interpolation "
                       f"{str(interpolation)[:40]!r}; resnet-cli evaluates a center crop, "
                       f"{' or '.join(interpolations())}")
    names, described = named_outputs(classes)
    labels = found.get("label_names", pre.get("label_names", pre.get("labels")))  # "labels": timm's older name
    if isinstance(labels, dict):  # timm's id -> name where the ids have gaps
        labels = [labels.get(str(i), str(i)) for i in range(classes)]
    if labels is not None:
        said = found.get("label_descriptions", pre.get("label_descriptions")) or {}
        if not isinstance(labels, list) or not isinstance(said, dict):
            raise BadInput(f"{where}: label_names must be a list (or an object of ids) and label_descriptions an "
                           "object")
        names, described = labels, [said.get(n, "") if isinstance(n, str) else "" for n in labels] if said else ()
    channels, h = args.get("in_chans", size[0]), size[1]
    resize = resize_of(h, crop_pct)
    config = {"model": {"name": ours[arch], "num_classes": classes, "in_channels": channels},
              "data": {"dataset": "imagefolder", "image_size": trained[1], "eval_image_size": h,
                       "eval_resize": resize, "eval_interpolation": interpolation}}
    spec = {"classes": list(names), "channels": channels, "image_size": [h, h], "resize": resize,
            "mean": pre.get("mean", list(IMAGENET_MEAN)), "std": pre.get("std", list(IMAGENET_STD)),
            "interpolation": interpolation}
    if described:
        spec["descriptions"] = list(described)
    return config, spec  # both checked where every checkpoint's are (config.from_dict, InputSpec.from_dict)


def _json_meta(text: str | None, path: Path) -> Any:
    if text is None:
        return None
    return gate.json_bytes(text.encode(), f"the metadata of {path}")


def _config_json(path: Path) -> dict[str, Any]:
    raw = gate.read_file(path, gate.Limits(MAX_CONFIG_BYTES, keys=("the bound on a config.json",
                                                                    "data.read_timeout")), "config.json")
    found = gate.json_bytes(raw, str(path))
    if not isinstance(found, dict):
        raise BadInput(f"{path} is not a JSON object")
    return found


def hub_snapshot(name: str) -> Path:
    """`hf-hub:ORG/NAME[@REVISION]` as a local folder, through huggingface_hub (its cache, $HF_HOME; offline under
    HF_HUB_OFFLINE=1, or when the Hub cannot be reached, from what was fetched before). Each file is fetched only
    after the Hub said its size and the size is within its bound, and under one deadline (HUB_SECONDS); every
    failure is one line saying how to get the repo."""
    hub = require("huggingface_hub", HUB_EXTRA, f"{name}")
    repo, _, revision = name[len(HUB_PREFIX):].partition("@")
    if not HUB_REPO.fullmatch(repo) or any(part[0] in "-." or part[-1] in "-." or "--" in part or ".." in part
                                           for part in repo.split("/")):
        raise BadInput(f"{name[:120]!r}: give a Hub repo as hf-hub:ORG/NAME (optionally @REVISION); each part of "
                       "it letters, digits, '-', '_' or '.', at most 96 characters, not starting or ending with "
                       "'-' or '.'")
    from huggingface_hub import utils as hub_errors  # these errors are there from 0.23 on (errors.py has them later)

    folder = None
    try:
        for file in HUB_FILES:
            folder = Path(_hub_file(hub, name, repo, file, revision or None)).parent
    except hub_errors.LocalEntryNotFoundError:
        raise _not_cached(name, repo, "offline") from None
    except hub_errors.EntryNotFoundError:
        raise BadInput(f"{name} has no {file}: not a model repo written by resnet export --format hub") from None
    except (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError, hub_errors.HFValidationError) as e:
        raise BadInput(f"{name}: {str(e).splitlines()[0][:200]}") from None
    except (OSError, hub_errors.HfHubHTTPError) as e:
        raise BadInput(f"{name}: could not fetch it ({str(e).splitlines()[0][:200]})") from None
    assert folder is not None
    return folder


def _not_cached(name: str, repo: str, why: str) -> BadInput:
    from huggingface_hub import constants

    return BadInput(f"{name} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and cannot be fetched now "
                    f"({why}): fetch it once with `hf download {repo}`")


def _hub_file(hub, name: str, repo: str, file: str, revision: str | None) -> str:
    """One file of a Hub repo, in huggingface_hub's cache: its size asked first (a HEAD request) and checked
    against the file's bound, then the download under the deadline. Where the Hub cannot be asked (offline, no
    network, a server error), only the cache is looked in: nothing is fetched whose size was not checked."""
    from huggingface_hub import utils as hub_errors

    limits = gate.Limits(MAX_WEIGHTS_BYTES if file == "model.safetensors" else MAX_CONFIG_BYTES, HUB_SECONDS,
                         keys=(f"the bound on a {file}", "the deadline on a Hub download"))
    where = f"{name}: {file}"
    try:
        size = hub.get_hf_file_metadata(hub.hf_hub_url(repo, file, revision=revision)).size
    except (hub_errors.EntryNotFoundError, hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError,
            hub_errors.HFValidationError):
        raise  # the Hub answered: the repo, the revision or the file is not there
    except Exception as e:  # not asked (offline mode, no network, an error of the server's): the cache alone
        why = "offline" if isinstance(e, hub_errors.OfflineModeIsEnabled) else \
            (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        try:
            return hub.hf_hub_download(repo, file, revision=revision, local_files_only=True)
        except hub_errors.LocalEntryNotFoundError:
            raise _not_cached(name, repo, why) from None
    gate.declared_size(size, limits, where)
    return gate.within_deadline(lambda: hub.hf_hub_download(repo, file, revision=revision), limits, where)


# ------------------------------------------------------------------------------------------------ writing

def safetensors_bytes(state: dict[str, Any], config: dict[str, Any], spec: dict[str, Any], weights: str) -> bytes:
    """The weights (contiguous CPU copies: safetensors stores no views) with what rebuilds and feeds the model."""
    st = require("safetensors.torch", SAFETENSORS_EXTRA, "export --format safetensors")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    meta = {"format": "pt", META_CONFIG: json.dumps(config), META_INPUT: json.dumps(spec), META_WEIGHTS: weights}
    return st.save(tensors, metadata=meta)


def config_json(config: dict[str, Any], spec: dict[str, Any], weights: str) -> dict[str, Any]:
    """config.json of a Hub repo: timm's keys (`architecture`, `num_classes`, `pretrained_cfg`) where timm has the
    same network, and ours under `resnet_cli` (the run's config, its input record) to rebuild it with `resnet`."""
    name = config["model"]["name"]
    from .data.inputs import crop_pct_of

    channels, (h, w) = spec["channels"], spec["image_size"]
    resize = spec.get("resize") or 0
    out: dict[str, Any] = {}
    timm_name = TIMM.get(name)
    if timm_name and not config["model"].get("plain") and config["model"].get("shortcut") in (None, "", "B"):
        classes = config["model"].get("num_classes") or len(spec["classes"])
        out = {"architecture": timm_name, "num_classes": classes, "num_features": 512 if
               name in ("resnet18", "resnet34") else 2048,
               "pretrained_cfg": {"input_size": [channels, h, w], "mean": spec["mean"], "std": spec["std"],
                                  "crop_pct": crop_pct_of(h, resize) if resize else 1.0, "crop_mode": "center",
                                  "interpolation": spec.get("interpolation", "bilinear"), "num_classes": classes,
                                  "label_names": spec["classes"], "first_conv": "conv1", "classifier": "fc"}}
        data = config.get("data") or {}
        trained = data.get("image_size") if data.get("dataset") in DECODED else None
        if trained and resize and (trained, trained) != (h, w):  # evaluated at another crop than it trained at:
            cfg = out["pretrained_cfg"]  # timm's input_size is the training size, test_input_size the evaluation's
            cfg["test_input_size"], cfg["test_crop_pct"] = [channels, h, w], cfg["crop_pct"]
            cfg["input_size"] = [channels, trained, trained]
        if spec.get("descriptions"):  # timm's words for each class, as its config.json holds them
            out["pretrained_cfg"]["label_descriptions"] = {c: d for c, d in zip(spec["classes"], spec["descriptions"])
                                                           if d}
        if channels != 3:
            out["model_args"] = {"in_chans": channels}
    out["resnet_cli"] = {"model": name, "timm": timm_name if "architecture" in out else None, "weights": weights,
                         "build": build_command(config["model"]), "config": config, "input": spec}
    return out


def build_command(model: dict[str, Any]) -> str:
    """The `resnet build` line that makes this architecture, untrained (the weights then load into it)."""
    parts = ["resnet build", model["name"]]
    if model.get("num_classes"):
        parts.append(f"--num-classes {model['num_classes']}")
    if model.get("in_channels") and model["in_channels"] != 3:
        parts.append(f"--in-channels {model['in_channels']}")
    if model.get("shortcut"):
        parts.append(f"--shortcut {model['shortcut']}")
    return " ".join(parts + ["-o", "model.pt"])


def model_card(config: dict[str, Any], spec: dict[str, Any], cfg_json: dict[str, Any], metrics: list[dict],
               selected_by: str, weights: str, params: int, made_elsewhere: str = "") -> str:
    """README.md of a Hub repo: what the model is, what it was trained on and how, how well, how to use it.
    `made_elsewhere`: what weights are that no resnet-cli run trained ("weights from PATH, not trained by
    resnet-cli": a bare state_dict, timm's repo; untrained ones of `resnet build`): the card then gives no recipe
    (export writes no train_config.yaml: there is none to give)."""
    model, data, train = config["model"], config.get("data") or {}, config.get("train") or {}
    name, dataset = model["name"], data.get("dataset", "unknown")
    best = max(metrics, key=lambda r: r.get(selected_by, -1.0)) if metrics else None
    timm_name = cfg_json["resnet_cli"]["timm"]
    h, w = spec["image_size"]
    lines = ["---", "library_name: resnet-cli", "pipeline_tag: image-classification",
             "tags:", "- image-classification", "- resnet", "- resnet-cli", *(["- timm"] if timm_name else []),
             "---", "", f"# {name} on {dataset}", "",
             f"A {name} ({model.get('family', '') or 'ResNet'}, He et al. 2015: \"Deep Residual Learning for Image "
             f"Recognition\") with {params:,} parameters, "
             + (f"{made_elsewhere}, for " if made_elsewhere else
                "trained with resnet-cli on ")
             + f"{dataset}: {len(spec['classes'])} classes, {spec['channels']}-channel {h}x{w} input"
             + (" (the EMA weights)." if weights == "ema" else "."), ""]
    if best is not None:
        rows = [(k, best[k]) for k in sorted(best) if k.endswith("top1") or k.endswith("top5")]
        lines += [f"## Results (epoch {best['epoch']} of {len(metrics)}, selected by `{selected_by}`)", "",
                  "| metric | value |", "| --- | --- |",
                  *[f"| {k} | {v:.2%} |" for k, v in rows if isinstance(v, (int, float))], ""]
    recipe = [("optimizer", train.get("optimizer")), ("lr", train.get("lr")), ("schedule", train.get("schedule")),
              ("batch size", train.get("batch_size")), ("epochs", train.get("epochs")),
              ("weight decay", train.get("weight_decay")), ("label smoothing", train.get("label_smoothing")),
              ("loss", train.get("loss") if train.get("loss", "ce") != "ce" else None),
              ("stochastic depth", model.get("drop_path") or None), ("EMA", train.get("ema") or None)]
    if not made_elsewhere:
        lines += ["## Training", "", "| setting | value |", "| --- | --- |",
                  *[f"| {k} | {v} |" for k, v in recipe if v not in (None, "")], "",
                  "The run's whole config is `train_config.yaml`; this trains the model again:", "", "```bash",
                  "resnet train --config train_config.yaml", "```", ""]
    lines += ["## Use", "",
              f"The architecture alone, untrained: `{cfg_json['resnet_cli']['build']}`.", "", "```bash",
              "resnet predict hf-hub:ORG/NAME image.png      # this repo, once uploaded (hf upload ORG/NAME .)",
              "resnet eval hf-hub:ORG/NAME", "```", ""]
    if timm_name:
        lines += [f"timm builds the same network (`{timm_name}`) and loads these weights:", "", "```python",
                  "import timm", "", "model = timm.create_model(\"hf-hub:ORG/NAME\", pretrained=True)", "```", ""]
    else:
        lines += ["timm has no architecture that computes this network (" + (
            "the paper's stride on the first 1x1 convolution" if name in ("resnet50", "resnet101", "resnet152")
            else "CIFAR-style ResNets and plain nets are not in timm") + "); build it with resnet-cli.", ""]
    lines += ["Input: float32 images N x C x H x W, (pixel / 255 - mean) / std per channel, with "
              f"mean {[round(v, 4) for v in spec['mean']]} and std {[round(v, 4) for v in spec['std']]}.", ""]
    return "\n".join(lines)
