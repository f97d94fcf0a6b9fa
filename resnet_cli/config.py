"""The training configuration: every default in one place, each with its intent.

Layers, lowest first: these defaults < preset (presets/*.yaml) < --config FILE
< command-line flags < --set KEY=VALUE. The order of the arguments on the
command line does not matter. YAML is read with `yaml.safe_load` only.
Unknown keys and wrong types are errors with a did-you-mean.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Literal, get_args, get_origin

from . import gate
from .errors import BadInput

Auto = Literal["auto", "on", "off"]
# Choice lists written once: the commands' options derive from these (commands/_common.choices).
Precision = Literal["auto", "fp32", "tf32", "bf16", "fp16"]
ShortcutOption = Literal["", "A", "B", "C"]  # models.SHORTCUT_OPTIONS, and "" for the model's own
Interpolation = Literal["bilinear", "bicubic"]  # an evaluation resize's filter (data.transforms.resample)
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


@dataclass
class ModelConfig:
    name: str = "resnet20"  # registry name (`resnet list`); the CIFAR nets suit small images
    num_classes: int = 0  # 0: take the dataset's class count
    in_channels: int = 0  # 0: take the dataset's channel count (1 for MNIST-like data)
    zero_init_residual: bool = False  # Goyal et al.; not in the paper, so off
    drop_path: float = 0.0  # stochastic depth (Huang et al. 2016; timm's --drop-path): in training, each block's
    #                         residual branch is skipped per image with a chance rising from 0 (first block) to this
    #                         (last); 0.05 in timm's "ResNet strikes back" A1/A2 recipes. Needs shortcuts
    shortcut: ShortcutOption = ""  # the paper's section 3.3 / Table 3: A zero-pads where shapes change, B projects
    #                                there, C projects on every block; "": the paper's choice (B ImageNet, A CIFAR)
    init: str = ""  # start from these weights: a run folder, one of our checkpoints, or a torchvision-format
    #                 state_dict (resnet50-0676ba61.pth). Tensors load by name and shape; a different num_classes
    #                 (in_channels) gets a newly initialised head (stem); any other mismatch is an error

    def architecture(self) -> dict[str, Any]:
        """The `build_model` arguments: everything but `init` (where the weights came from). The one builder of
        this dict: checkpoints, `resnet build` and training all rebuild a model from it."""
        return {"name": self.name, "num_classes": self.num_classes, "in_channels": self.in_channels,
                "zero_init_residual": self.zero_init_residual, "shortcut": self.shortcut, "drop_path": self.drop_path}

    def fitted(self, classes: int, channels: int, dataset: str, source: str) -> "ModelConfig":
        """This model section fitted to data of `classes` classes and `channels` channels: 0 (not given) takes
        the data's. A model that cannot take the data (fewer outputs than classes, other channels) is one
        BadInput line naming both numbers and `source`."""
        num_classes, in_channels = self.num_classes or classes, self.in_channels or channels
        if num_classes < classes:
            raise BadInput(f"{source} has {num_classes} outputs but {dataset} has {classes} classes")
        if in_channels != channels:
            raise BadInput(f"{source} expects {in_channels}-channel images; {dataset} has {channels}")
        return dataclasses.replace(self, num_classes=num_classes, in_channels=in_channels)


# Datasets of photos decoded per image (too large for the device): the crop is data.image_size, the evaluation
# split is the folder's val/ (an image folder, or the shards `resnet data convert` made of one).
DECODED = ("imagefolder", "shards")


@dataclass
class DataConfig:
    dataset: Literal["cifar10", "cifar100", "mnist", "fashion-mnist", "synthetic", "imagefolder", "shards"] = "synthetic"
    data_dir: str = ""  # "": $RESNET_CLI_DATA, else ~/.cache/resnet-cli
    download: bool = True  # fetch missing files over HTTPS; never when valid files are present
    url: str = ""  # "": the official archive; set for a mirror (https, or http on loopback only)
    train_limit: int = 0  # train on the first N images (0 = all): quick runs
    test_limit: int = 0  # evaluate on the first N test images (0 = all)
    crop_padding: int = 4  # zero padding before the random crop (paper: 4 on CIFAR); 0 = no crop
    flip: bool = True  # random horizontal flip (paper, CIFAR)
    normalize: bool = True  # subtract the per-channel mean, divide by the std
    image_size: int = 32  # synthetic: height and width; image folders and shards: the crop, unset the network's own
    #                       input size (224 for the ImageNet family, as in the paper; 32 for the CIFAR nets)
    channels: int = 3  # synthetic only
    classes: int = 10  # synthetic: how many to make; any other dataset: recorded from the data
    synthetic_train: int = 512  # synthetic only: training images
    synthetic_test: int = 256  # synthetic only: test images
    workers: int = -1  # image folders and shards: decoding processes per training process; -1: the cores this
    #                    process may use, shared by the training processes of this node, less one each for them
    #                    (1 on 2 cores, 15 on 16; at most 32). Resolved when the run starts, so config.yaml says it
    prefetch: bool = True  # image folders and shards on CUDA: each batch is copied to the GPU on a side stream while
    #                        the step before it runs (timm's prefetcher); off: on the compute stream, after that step
    max_read_mb: int = 4096  # the most one read from outside may bring (a shard, a file, an http body, a pipe:
    #                          command's output); the read stops there and fails, instead of filling the memory
    read_timeout: float = 900.0  # seconds one such read may take in all (not per packet): a stalled server or
    #                              command is stopped, never waited on for ever
    crop: Literal["scale", "random-resized"] = "scale"  # imagefolder training crop: the paper's scale augmentation
    #                     (shorter side in [256, 480] for 224, then a random crop) or torchvision's RandomResizedCrop
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # random-resized: area fraction range
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 4 / 3])  # random-resized: aspect ratio range
    eval_image_size: int = 0  # image folders and shards: the evaluation crop (each epoch's, and eval, predict and
    #                       export after: the checkpoint records it); 0 = data.image_size. A larger one than the
    #                       training crop evaluates better (Touvron et al. 2019, "FixRes"): torchvision's v2 weights
    #                       train at 176 and evaluate at 224, timm's A1 recipe trains at 224 and tests at 288
    eval_resize: int = 0  # imagefolder evaluation: shorter side before the centre crop; 0 = crop * 256 / 224 (the
    #                       paper's 256 for 224); torchvision's v2 weights evaluate at 232
    eval_interpolation: Interpolation = "bilinear"  # imagefolder evaluation and predict: the resize's filter
    #                       (torchvision's weights: bilinear; timm's recipes, and their Hub repos: bicubic)
    val_split: int = 0  # hold out N training images (stratified; the same N images for every seed) to select
    #                     best.pt, stop early and time train.target_top1; the test set is then reported only.
    #                     The paper tuned on CIFAR's 45k/5k split (the cifar presets hold out 5000)
    randaugment: str = ""  # "N,M": RandAugment, N random ops of magnitude M in 0-30 ("2,9" is the usual);
    #                        "trivial": TrivialAugment (one op, random magnitude); timm's strings ("rand-m9-mstd0.5-
    #                        inc1": timm's op set, magnitude 9 of 10 drawn per op with std 0.5, each op applied with
    #                        probability 0.5); "": off. Batched on the device
    random_erasing: float = 0.0  # probability of erasing one random rectangle per image (Zhong et al.; timm: 0.25)
    random_erasing_mode: Literal["pixel", "const"] = "pixel"  # what fills the rectangle: N(0, 1) noise per pixel
    #                       (timm's --remode pixel, its default) or zeros after normalisation, the mean colour
    #                       (const: torchvision's RandomErasing, value=0)
    aug_repeats: int = 1  # > 1: repeated augmentation (Hoffer et al. 2019, Berman et al. 2019; timm's --aug-repeats,
    #                       torchvision's --ra-sampler): each epoch takes n / K images, K times each, every copy
    #                       augmented its own way and, under torchrun, on another process. DeiT uses 3,
    #                       torchvision's v2 ResNet-50 recipe 4. Image folders and in-memory data (not shards)
    mixup: float = 0.0  # > 0: mixup with lambda ~ Beta(a, a) per batch (timm, torchvision recipes: 0.2 or 0.8)
    cutmix: float = 0.0  # > 0: cutmix with lambda ~ Beta(a, a) (recipes: 1.0); with mixup, each batch picks one


@dataclass
class TrainConfig:
    epochs: int = 10  # passes over the training set (ignored when `steps` > 0)
    steps: int = 0  # > 0: stop after this many optimizer steps instead (paper CIFAR: 64k)
    batch_size: int = 128  # GLOBAL batch per optimizer step, split over torchrun processes (paper: 128 CIFAR, 256 ImageNet)
    eval_batch_size: int = 1024  # evaluation needs no gradients, so a large batch is cheap
    optimizer: Literal["sgd", "adamw", "lamb"] = "sgd"  # adamw: Loshchilov & Hutter, betas (0.9, 0.999); lamb:
    #                   You et al. as timm runs it (train/lamb.py), for batches of thousands ("ResNet strikes back").
    #                   Unless set, each brings its own lr, weight_decay and no_wd_bn_bias (OPTIMIZER_DEFAULTS)
    lr: float = 0.1  # peak learning rate (paper: 0.1)
    momentum: float = 0.9  # SGD momentum (paper: 0.9)
    nesterov: bool = False  # the paper used plain momentum
    weight_decay: float = 1e-4  # L2 penalty (paper: 1e-4)
    no_wd_bn_bias: bool = False  # exempt BatchNorm and bias parameters from weight decay
    grad_clip: float = 0.0  # > 0: clip the global gradient norm to this value
    label_smoothing: float = 0.0  # not in the paper
    loss: Literal["ce", "bce"] = "ce"  # ce: softmax cross-entropy (the paper's); bce: a sigmoid per class, as timm's
    #                   --bce-loss and its "ResNet strikes back" recipes (train/losses.py). Evaluation reports
    #                   cross-entropy either way
    bce_threshold: float = 0.0  # bce: a class counts as present (target 1) where its share of a mixed or smoothed
    #                   label exceeds this, else 0 (timm's --bce-target-thresh; the recipes: 0.2); 0: soft targets
    schedule: Literal["multistep", "cosine", "constant"] = "multistep"  # lr after warm-up
    milestones: list[int] = field(default_factory=list)  # multistep: where lr is multiplied by `gamma`
    milestone_unit: Literal["epochs", "steps"] = "epochs"  # what `milestones` count
    gamma: float = 0.1  # multistep: lr factor at each milestone (paper: divide by 10)
    warmup: Literal["none", "linear", "constant", "paper"] = "none"  # paper: constant for deep CIFAR nets
    warmup_length: str = "0"  # warm-up length: steps ("400"), epochs ("2ep", "0.5ep") or a fraction of the run
    #                           ("5%"), so a shortened run keeps its warm-up ("paper": 400 steps for depth >= 110)
    warmup_factor: float = 0.1  # warm-up starts at (linear) or stays at (constant) lr x this
    precision: Precision = "auto"  # auto: bf16 autocast on CUDA; fp32 on CPU (bf16: 0.4-0.5x); tf32: fp32 with
    #                                TF32 matmuls and convolutions (CUDA only)
    channels_last: Auto = "auto"  # auto: on for CUDA and oneDNN CPUs (measured +17-19% CPU training)
    compile: Auto = "auto"  # torch.compile; auto: for runs of >= compile_min_steps steps (on CPU only with a
    #                         C++ compiler), where the time spent compiling is earned back
    compile_min_steps: int = -1  # compile auto: only runs at least this long compile; -1: by device
    #                              (COMPILE_MIN_STEPS: 2,000 on CPU, 20,000 on CUDA)
    compile_mode: CompileMode = "default"
    #              reduce-overhead adds CUDA graphs (CUDA only)
    cuda_graphs: Auto = "auto"  # replay the whole training step (forward, backward, optimizer) from one CUDA graph;
    #                             auto: on for one CUDA process without accum_steps, fp16 or skip_nonfinite, where it
    #                             was measured faster (BENCHMARKS.md); a failed capture falls back with one line
    deterministic: bool = False  # CUDA: deterministic kernels (cuDNN autotuning off, deterministic algorithms,
    #                              a fixed cuBLAS workspace), so that a run repeats bit for bit; slower. CPU runs
    #                              repeat without it
    log_interval: int = 50  # steps between progress updates (the only host syncs in an epoch)
    checkpoint_every: str = "5m"  # also write last.pt inside epochs: every N steps ("500") or N seconds, minutes
    #                               or hours of training ("90s", "30m", "2h"); "0": at epoch ends only. A kill loses
    #                               at most this much; short epochs never reach 5 minutes, so they save at ends only
    log_grad_norms: bool = False  # add per-stage gradient norms to metrics.csv
    sync_bn: bool = False  # torchrun: SyncBatchNorm, so BatchNorm sees the global batch (slower; exact)
    ema: float = 0.0  # > 0: keep an exponential moving average of the weights with this decay (0.999, 0.9998);
    #                   evaluated beside the raw weights, it selects best.pt and is what eval/export/predict use.
    #                   The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates
    freeze: list[str] = field(default_factory=list)  # stages to keep fixed, named as `resnet summary` prints them
    #                   (conv1, conv2_x, ..., fc): no gradient, no weight decay, BatchNorm statistics frozen
    patience: int = 0  # > 0: stop after this many epochs without a better selection figure (val, else test top-1)
    accum_steps: int = 1  # split each batch into this many micro-batches and accumulate their gradients: the
    #                       same batch_size and lr in less memory. BatchNorm normalises each micro-batch on its
    #                       own (batch_size / accum_steps images), so results differ a little from one big batch
    target_top1: float = 0.0  # > 0: report the wall time to the first epoch whose selection top-1 reaches this (0.94)
    stop_at_target: bool = False  # with target_top1: end the run there (a time-to-accuracy benchmark)
    skip_nonfinite: int = 0  # > 0: skip up to this many steps whose loss is NaN/Inf (checks every step: one sync each)
    loggers: list[str] = field(default_factory=list)  # experiment trackers besides metrics.csv (--logger, repeatable):
    #                   tensorboard, mlflow, wandb, jsonl (RUN/metrics.jsonl); TensorBoard also as run.tensorboard
    #                   says. Rank 0 logs; a resume continues the same tracker runs (RUN/trackers.json)


TRACKERS = ("tensorboard", "mlflow", "wandb", "jsonl")  # train.loggers' choices (train/trackers.py)
# train.compile_min_steps=-1, by device: the steps after which torch.compile has earned back its compile time
# (BENCHMARKS.md). CPU: 20-60 s of compiling, then 1.3-1.5x faster training. CUDA (H100, resnet20 at batch 512,
# the step replayed from a CUDA graph either way): 18 s more warm-up, then 0.95 ms less per step (3.56 against
# 4.51 ms), earned back after about 19,000 steps; so a fine-tune or the fashion-mnist preset (7,020 steps) starts
# at once, and a paper-length CIFAR run (64,000) or an ImageNet run compiles.
COMPILE_MIN_STEPS = {"cpu": 2000, "cuda": 20000}


def min_compile_steps(device_type: str, setting: int = -1) -> int:
    """train.compile_min_steps resolved for a device: the setting, or COMPILE_MIN_STEPS's (CPU's for others)."""
    return setting if setting >= 0 else COMPILE_MIN_STEPS.get(device_type, COMPILE_MIN_STEPS["cpu"])


@dataclass
class RunConfig:
    name: str = ""  # run folder name; "": <model>-<dataset>; never overwritten (a -2, -3 suffix is added)
    run_dir: str = "runs"  # parent folder of run folders
    seed: int = 0  # seeds the weights, the data order and the augmentation
    device: str = "auto"  # auto: cuda if available, else cpu
    save_best: bool = True  # keep best.pt by the selection figure (val top-1 with data.val_split, else test top-1;
    #                         of the EMA weights with train.ema) besides last.pt
    stop_after_epochs: int = 0  # > 0: stop (resumably) after this many epochs of this invocation; for time-limited jobs
    tensorboard: Auto = "auto"  # TensorBoard event files in the run folder, the scalars of metrics.csv;
    #                             auto: when the `tensorboard` extra is installed
    lock_wait: float = -1.0  # seconds to wait for a run folder's lock held by another process before refusing;
    #                          -1: 120 under resume auto (a dead node's lock on NFS lapses in about 90 s), else 0
    resume: Literal["off", "auto"] = "off"  # auto: one command line for the first start and every restart
    #                                         (torchrun --max-restarts, SLURM --requeue, a Job's restart): the run
    #                                         folder run_dir/name (name as given, never numbered) is resumed from
    #                                         its last.pt when it has one, else the run starts there


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fitted(self, classes: int, channels: int, size: int, source: str = "") -> "Config":
        """The config resolved against the data: model.num_classes and model.in_channels fitted to it
        (ModelConfig.fitted), and data.image_size and data.channels recording what its images are (28 and 1 for
        Fashion-MNIST), so that config.yaml and checkpoints say what the model was trained on."""
        where = source or f"{self.model.name} (model.num_classes/in_channels)"
        if self.data.dataset in DECODED:  # photos: the crops are the config's (data.image_size, eval_image_size)
            size = self.data.image_size
        return dataclasses.replace(self, model=self.model.fitted(classes, channels, self.data.dataset, where),
                                   data=dataclasses.replace(self.data, image_size=size, channels=channels,
                                                            classes=classes))


def fitted_keys(cfg: Config) -> set[str]:
    """The keys `Config.fitted` may change for this config's dataset: what a command line leaves to the data
    (0 for the model's classes and channels; the image size and channels of a dataset that fixes them)."""
    keys = {k for k, v in (("model.num_classes", cfg.model.num_classes), ("model.in_channels", cfg.model.in_channels))
            if v == 0}
    if cfg.data.dataset != "synthetic":  # synthetic images are made to data.image_size, channels and classes
        keys.update(("data.channels", "data.classes"))
        if cfg.data.dataset not in DECODED:  # an image folder's crop is data.image_size
            keys.add("data.image_size")
    return keys


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "run": RunConfig}

# Keys that were renamed: old config files, presets and checkpoints still read.
RENAMED = {"train.warmup_steps": "train.warmup_length"}

# Defaults that depend on another key, applied only where the key was not set (optimizer -> its own lr etc.).
# lamb's are the "ResNet strikes back" A2/A3 figures (Wightman et al. 2021, Table 1; lr 5e-3 for a batch of 2048).
OPTIMIZER_DEFAULTS = {"adamw": {"train.lr": 1e-3, "train.weight_decay": 0.05, "train.no_wd_bn_bias": True},
                      "lamb": {"train.lr": 5e-3, "train.weight_decay": 0.02, "train.no_wd_bn_bias": True}}


def optimizer_defaults(flat: dict[str, Any]) -> dict[str, Any]:
    """The defaults train.optimizer brings in a flat config (none for sgd, or for a value that is no name)."""
    name = flat.get("train.optimizer")
    return OPTIMIZER_DEFAULTS.get(name, {}) if isinstance(name, str) else {}


# ---------------------------------------------------------------- presets and files

def presets_dir() -> Path:
    """The folder of preset YAML files: the checkout's presets/ or the installed copy."""
    source = Path(__file__).resolve().parent.parent / "presets"
    if source.is_dir():
        return source
    return Path(__file__).resolve().parent / "presets"


def list_presets() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def preset_descriptions() -> dict[str, str]:
    """Each preset's one-line description (its `description:`), by name."""
    out = {}
    for name in list_presets():
        path = presets_dir() / f"{name}.yaml"
        out[name] = str(_load_yaml(path, "preset").get("description", "")) if path.is_file() else ""
    return out


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    data = _load_yaml(path, what)
    data.pop("description", None)  # presets carry a one-line description
    return data


MAX_YAML_BYTES = 1 << 20  # a config is a few hundred bytes; anything past 1 MiB is not one


def safe_yaml(text: str) -> Any:
    """yaml.safe_load without aliases (*name): a few hundred bytes of nested aliases expand to gigabytes
    ("billion laughs"), and a config never needs them. A refused or too-deep document is one BadInput line."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.events.AliasEvent):
                mark = self.peek_event().start_mark
                raise BadInput(f"YAML aliases (*name) are not read (line {mark.line + 1}): write the value out")
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=NoAliases)  # noqa: S506 (a SafeLoader)
    except RecursionError:
        raise BadInput("YAML nested too deeply to be a config") from None


def _load_yaml(path: Path, what: str) -> dict[str, Any]:
    import yaml

    if not path.exists() and not path.is_symlink():
        raise BadInput(f"{what} not found: {path}")
    raw = gate.read_file(path, gate.Limits(MAX_YAML_BYTES, keys=("the bound on a config, 1 MiB", "")), what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{what} {path} is not UTF-8 text") from None
    try:
        data = safe_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise BadInput(f"{what} {path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInput(f"{what} {path} must be a mapping of sections (model, data, train, run)")
    return data


def load_preset(name: str) -> dict[str, Any]:
    path = presets_dir() / f"{name}.yaml"
    if not path.is_file() or name not in list_presets():  # a name, never a path (../../x)
        names = list_presets()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise BadInput(f"unknown preset {name!r}{hint} (presets: {', '.join(names)})")
    return read_yaml(path, "preset")


# ---------------------------------------------------------------- merging and typing

def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(options)}"


def flatten(data: dict[str, Any], source: str) -> dict[str, Any]:
    """{section: {key: value}} -> {"section.key": value}, rejecting unknown sections and keys."""
    flat: dict[str, Any] = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise BadInput(f"{source}: unknown section {section!r}{_suggest(str(section), list(SECTIONS))}")
        if not isinstance(values, dict):
            raise BadInput(f"{source}: section {section!r} must be a mapping")
        for key, value in values.items():
            dotted = f"{section}.{key}"
            flat[RENAMED.get(dotted, dotted)] = value
    for key in flat:
        check_key(key, source)
    return flat


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls)]


def check_key(key: str, source: str) -> None:
    if key not in all_keys():
        section = key.split(".", 1)[0]
        if section in SECTIONS:
            options = [k for k in all_keys() if k.startswith(section + ".")]
        else:
            options = all_keys()
        raise BadInput(f"{source}: unknown key {key!r}{_suggest(key, options)}")


# timm's train.py and torchvision's references/classification name some keys otherwise: what each of their
# options is here, for the hint an unknown option gets (`--bce-loss` -> --set train.loss=bce).
OTHER_TOOLS_OPTIONS = {
    "bce_loss": "train.loss=bce", "bce_target_thresh": "train.bce_threshold=VALUE",
    "aug_repeats": "data.aug_repeats=VALUE", "ra_sampler": "data.aug_repeats=3", "ra_reps": "data.aug_repeats=VALUE",
    "reprob": "data.random_erasing=VALUE", "random_erase": "data.random_erasing=VALUE",
    "remode": "data.random_erasing_mode=pixel",
    "aa": "data.randaugment=VALUE (timm's string as it is: rand-m9-mstd0.5-inc1)",
    "auto_augment": "data.randaugment=2,9 (torchvision's ra; ta_wide: trivial)",
    "mixup_alpha": "data.mixup=VALUE", "cutmix_alpha": "data.cutmix=VALUE", "model_ema": "train.ema=0.9998",
    "model_ema_decay": "train.ema=VALUE", "clip_grad": "train.grad_clip=VALUE",
    "warmup_epochs": "train.warmup_length=5ep", "lr_warmup_epochs": "train.warmup_length=5ep",
    "train_crop_size": "data.image_size=VALUE", "val_crop_size": "data.eval_image_size=VALUE",
    "val_resize_size": "data.eval_resize=VALUE", "crop_pct": "data.eval_resize=VALUE (the crop / crop_pct)",
    "norm_weight_decay": "train.no_wd_bn_bias=true", "lr_scheduler": "train.schedule=cosine",
    "amp": "train.precision=bf16", "channels_last": "train.channels_last=on",
}


def set_for_option(option: str) -> str | None:
    """What an unknown command-line option is here, as the `--set` to write: another tool's option
    (OTHER_TOOLS_OPTIONS: --bce-loss -> train.loss=bce), else the config key it most likely meant (--momentum ->
    train.momentum=VALUE); None when nothing is close."""
    leaf = option.lstrip("-").replace("-", "_").lower()
    if leaf in OTHER_TOOLS_OPTIONS:
        return OTHER_TOOLS_OPTIONS[leaf]
    key = key_for_option(option)
    return f"{key}=VALUE" if key else None


def key_for_option(option: str) -> str | None:
    """The config key an unknown command-line option most likely meant (--momentum -> train.momentum), for the
    hint that points to --set; None when nothing is close."""
    leaf = option.lstrip("-").replace("-", "_").lower()
    keys = all_keys()
    leaves = {k.split(".", 1)[1]: k for k in reversed(keys)}  # the first section wins a shared leaf name
    close = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.75)
    return leaves[close[0]] if close else None


def parse_set(item: str) -> tuple[str, Any]:
    """`--set train.lr=0.05` -> ("train.lr", 0.05); the value is read as YAML (safe_load)."""
    import yaml

    if "=" not in item:
        raise BadInput(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=0.05")
    key, raw = item.split("=", 1)
    key = RENAMED.get(key.strip(), key.strip())
    check_key(key, "--set")
    try:
        value = safe_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def set_arg(key: str, value: Any) -> str:
    """The `--set` argument that `parse_set` reads back as exactly (`key`, `value`): plain where the plain text
    means the value (`train.lr=0.1`, `train.milestones=[2,3]`), else the value quoted as JSON, which YAML reads
    as written: a folder named `my data #2` would lose its `#2` to a YAML comment, `2026` become a number and
    `a: b` a mapping."""
    import json

    value = os.fspath(value) if isinstance(value, os.PathLike) else list(value) if isinstance(value, tuple) else value
    plain = "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)
    try:
        if parse_set(f"{key}={plain}")[1] == value:
            return f"{key}={plain}"
    except BadInput:
        pass
    return f"{key}={json.dumps(value)}"


def _shown(value: Any) -> str:
    """A value in an error message, cut short: a crafted config must not make a message gigabytes long."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the field type; accept the few lossless conversions YAML needs."""
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, bool) and "on" in choices and "off" in choices:
            value = "on" if value else "off"  # YAML 1.1 (safe_load) reads on/off/yes/no/true/false as booleans
        if value not in choices:
            hint = difflib.get_close_matches(str(value)[:80], [str(c) for c in choices], n=1)
            more = f"; did you mean {hint[0]!r}?" if hint else ""
            raise BadInput(f"{key}: {_shown(value)} is not one of {', '.join(map(str, choices))}{more}")
        return value
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise BadInput(f"{key}: expected a list, got {_shown(value)}")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise BadInput(f"{key}: expected true or false, got {_shown(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise BadInput(f"{key}: expected an integer, got {_shown(value)}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise BadInput(f"{key}: expected a number, got {str(value)[:80]!r}")
        if not math.isfinite(number):  # NaN passes every range check: refuse it here, for every float key
            raise BadInput(f"{key}: expected a finite number, got {number}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # `checkpoint_every: 500` in YAML
            return str(value)
        raise BadInput(f"{key}: expected a string, got {_shown(value)}")
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this module


def build_config(flat: dict[str, Any]) -> Config:
    flat = {**optimizer_defaults(flat), **flat}
    sections = {}
    for name, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in fields(cls):
            key = f"{name}.{f.name}"
            if key in flat:
                kwargs[f.name] = _coerce(key, flat[key], hints[f.name])
        sections[name] = cls(**kwargs)
    cfg = Config(**sections)
    if cfg.data.workers == -1:  # resolved here, so a config from a file that leaves it out (timm's) runs too
        cfg.data.workers = auto_workers()
    validate(cfg)
    return cfg


def resolve(preset: str | None = None, config_file: str | os.PathLike | None = None,
            flags: dict[str, Any] | None = None, sets: list[str] | None = None,
            identify: Callable[[str], str] | None = None) -> Config:
    """Layer the sources in their fixed precedence and return a checked Config.

    `identify` (data.identify_dataset) names the dataset in data.data_dir when no layer names one, so that
    `--data-dir DIR` alone never trains on the default synthetic data.

    Choosing adamw or lamb in one layer also replaces the SGD-minded lr, weight decay and no_wd_bn_bias of the
    layers below it (a preset's lr 0.1, say) with its OPTIMIZER_DEFAULTS, unless that layer or a higher one sets
    them too (flags and --set count as one layer: the command line)."""
    layers: list[dict[str, Any]] = []
    if preset:
        layers.append(flatten(load_preset(preset), f"preset {preset}"))
    if config_file:
        layers.append(flatten(read_yaml(Path(config_file), "config file"), f"config file {config_file}"))
    given = {}
    for key, value in (flags or {}).items():
        if value is not None:
            check_key(key, "flag")
            given[key] = value
    layers.append(given)
    layers.append(dict(parse_set(item) for item in sets or []))
    flat: dict[str, Any] = {}
    level: dict[str, int] = {}
    for i, layer in enumerate(layers):
        flat.update(layer)
        level.update(dict.fromkeys(layer, min(i, len(layers) - 2)))  # flags and --set: both the command line
    for key, value in optimizer_defaults(flat).items():  # none unless a layer names adamw or lamb
        if level.get(key, -1) < level["train.optimizer"]:
            flat[key] = value
    if identify is not None and "data.dataset" not in flat and flat.get("data.data_dir"):
        flat["data.dataset"] = identify(str(flat["data.data_dir"]))
    if flat.get("data.dataset") in DECODED and "data.image_size" not in flat:  # photos: the network's own size
        from .models import model_info

        flat["data.image_size"] = model_info(str(flat.get("model.name", ModelConfig.name))).input_size
    return build_config(flat)


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity (which SLURM and containers set), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_workers() -> int:
    """data.workers' default: the cores this process may use (`usable_cores`), shared by the training processes
    of this node (torchrun's LOCAL_WORLD_SIZE), less one for each of them."""
    cores = usable_cores()
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, min(32, cores // local - 1))


def from_dict(data: dict[str, Any], source: str = "checkpoint config") -> Config:
    return build_config(flatten(data, source))


def validate(cfg: Config) -> None:
    """Range checks: one BadInput naming the key."""
    t, d = cfg.train, cfg.data
    positive = {"train.batch_size": t.batch_size, "train.eval_batch_size": t.eval_batch_size, "train.lr": t.lr,
                "train.log_interval": t.log_interval, "data.image_size": d.image_size, "data.channels": d.channels,
                "data.classes": d.classes, "data.synthetic_train": d.synthetic_train,
                "data.synthetic_test": d.synthetic_test}
    for key, value in positive.items():
        if value <= 0:
            raise BadInput(f"{key} must be positive, got {value}")
    nonneg = {"train.epochs": t.epochs, "train.steps": t.steps, "train.weight_decay": t.weight_decay,
              "train.grad_clip": t.grad_clip, "data.train_limit": d.train_limit, "train.patience": t.patience,
              "data.val_split": d.val_split, "data.mixup": d.mixup, "data.cutmix": d.cutmix,
              "data.test_limit": d.test_limit, "data.crop_padding": d.crop_padding, "data.eval_resize": d.eval_resize,
              "data.eval_image_size": d.eval_image_size,
              "run.stop_after_epochs": cfg.run.stop_after_epochs, "train.skip_nonfinite": t.skip_nonfinite,
              "model.num_classes": cfg.model.num_classes, "model.in_channels": cfg.model.in_channels}
    for key, value in nonneg.items():
        if value < 0:
            raise BadInput(f"{key} must not be negative, got {value}")
    bounded = {"data.image_size": (d.image_size, gate.MAX_IMAGE_SIZE, "pixels a side"),
               "data.eval_image_size": (d.eval_image_size, gate.MAX_IMAGE_SIZE, "pixels a side"),
               "data.eval_resize": (d.eval_resize, gate.MAX_IMAGE_SIZE * 2, "pixels a side"),
               "data.channels": (d.channels, gate.MAX_CHANNELS, ""), "data.classes": (d.classes, gate.MAX_CLASSES, ""),
               "model.num_classes": (cfg.model.num_classes, gate.MAX_CLASSES, ""),
               "model.in_channels": (cfg.model.in_channels, gate.MAX_CHANNELS, ""),
               "data.synthetic_train": (d.synthetic_train, gate.MAX_IMAGES_IN_MEMORY, "images made in memory"),
               "data.synthetic_test": (d.synthetic_test, gate.MAX_IMAGES_IN_MEMORY, "images made in memory"),
               "data.workers": (d.workers, 1024, "processes"), "data.max_read_mb": (d.max_read_mb, 2**20, "1 TiB"),
               "train.batch_size": (t.batch_size, 2**24, ""), "train.eval_batch_size": (t.eval_batch_size, 2**24, "")}
    for key, (value, bound, why) in bounded.items():
        gate.check_count(key, value, bound, why)
    if d.dataset == "synthetic":
        held = (d.synthetic_train + d.synthetic_test) * d.channels * d.image_size ** 2 * 4
        gate.check_count("synthetic data (data.synthetic_train + synthetic_test) x channels x image_size^2 x 4 "
                         "bytes", held, gate.MAX_IN_MEMORY_BYTES, "made in memory")
    if not (cfg.run.lock_wait == -1 or 0 <= cfg.run.lock_wait <= 3600):
        raise BadInput(f"run.lock_wait is seconds in [0, 3600] (-1: 120 under resume auto, else 0), got "
                       f"{cfg.run.lock_wait}")
    if d.workers < -1:
        raise BadInput(f"data.workers must be 0 or more (-1: from the cores), got {d.workers}")
    if t.compile_min_steps < -1:
        raise BadInput(f"train.compile_min_steps must be 0 or more (-1: by device), got {t.compile_min_steps}")
    if d.max_read_mb <= 0 or not 0 < d.read_timeout <= 7 * 86400:
        raise BadInput(f"data.max_read_mb must be positive and data.read_timeout in (0, 604800] seconds, got "
                       f"{d.max_read_mb} and {d.read_timeout}")
    for key, pair, low, high in (("data.crop_scale", d.crop_scale, 0, 1), ("data.crop_ratio", d.crop_ratio, 0, 100)):
        if len(pair) != 2 or not low < pair[0] <= pair[1] <= high:
            raise BadInput(f"{key} is [low, high] with {low} < low <= high <= {high}, got {pair}")
    if not 1 <= d.aug_repeats <= 16:
        raise BadInput(f"data.aug_repeats is how many times each image is drawn (1-16; 1: off), got {d.aug_repeats}")
    if d.aug_repeats > 1 and d.dataset == "shards":
        raise BadInput("data.aug_repeats applies to image folders and datasets in memory: shards are streamed, "
                       "each image once an epoch (--set data.aug_repeats=1)")
    if d.eval_image_size and d.dataset not in DECODED:
        raise BadInput(f"data.eval_image_size applies to image folders and shards ({d.dataset} is evaluated at its "
                       "own size)")
    crop_key, crop = ("data.eval_image_size", d.eval_image_size) if d.eval_image_size else ("data.image_size",
                                                                                           d.image_size)
    if d.eval_resize and d.eval_resize < crop:
        raise BadInput(f"data.eval_resize ({d.eval_resize}) is smaller than the crop {crop_key} ({crop})")
    if t.epochs == 0 and t.steps == 0:
        raise BadInput("train.epochs must be positive (or set train.steps)")
    if not 0 <= t.target_top1 <= 1:
        raise BadInput(f"train.target_top1 is a fraction in [0, 1] (0.94 for 94%), got {t.target_top1}")
    if t.stop_at_target and not t.target_top1:
        raise BadInput("train.stop_at_target needs train.target_top1")
    if t.bce_threshold and t.loss != "bce":
        raise BadInput(f"train.bce_threshold applies to train.loss bce (the loss is {t.loss})")
    for key, value in {"train.momentum": t.momentum, "train.label_smoothing": t.label_smoothing,
                       "train.bce_threshold": t.bce_threshold}.items():
        if not 0 <= value < 1:
            raise BadInput(f"{key} must be in [0, 1), got {value}")
    for key, value in {"train.gamma": t.gamma, "train.warmup_factor": t.warmup_factor}.items():
        if not 0 < value <= 1:
            raise BadInput(f"{key} must be in (0, 1], got {value}")
    if t.nesterov and t.momentum == 0:
        raise BadInput("train.nesterov needs train.momentum > 0")
    if sorted(t.milestones) != t.milestones or any(m <= 0 for m in t.milestones):
        raise BadInput(f"train.milestones must be positive and increasing, got {t.milestones}")
    parse_interval(t.checkpoint_every, "train.checkpoint_every")
    length = parse_length(t.warmup_length, "train.warmup_length")
    if t.warmup in ("linear", "constant") and not length[0] and not length[1] and not length[2]:
        raise BadInput(f"train.warmup {t.warmup!r} needs a train.warmup_length (400, 2ep or 5%)")
    if t.accum_steps < 1:
        raise BadInput(f"train.accum_steps must be at least 1, got {t.accum_steps}")
    if not 0 <= t.ema < 1:
        raise BadInput(f"train.ema is a decay in [0, 1) (0.999; 0 = off), got {t.ema}")
    if not 0 <= d.random_erasing <= 1:
        raise BadInput(f"data.random_erasing is a probability in [0, 1], got {d.random_erasing}")
    parse_randaugment(d.randaugment)
    if len(set(t.freeze)) != len(t.freeze):
        raise BadInput(f"train.freeze names a stage twice: {t.freeze}")
    from .models import model_info

    info = model_info(cfg.model.name)  # unknown model: did-you-mean
    if not 0 <= cfg.model.drop_path < 1:
        raise BadInput(f"model.drop_path is a probability in [0, 1) (0.05; 0 = off), got {cfg.model.drop_path}")
    if cfg.model.drop_path and info.plain:
        raise BadInput(f"model.drop_path needs shortcuts: {cfg.model.name} has none (stochastic depth skips residual "
                       "branches)")


def parse_interval(text: str, key: str = "interval") -> tuple[int, float]:
    """"500" -> (500 steps, 0 s); "30m" -> (0, 1800.0); "90s", "2h" likewise; "0" -> (0, 0): never."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m or (not m.group(2) and "." in m.group(1)):
        raise BadInput(f"{key}: expected a number of steps (500), a time (90s, 30m, 2h) or 0, got {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    if not unit:
        return int(value), 0.0
    return 0, value * {"s": 1, "m": 60, "h": 3600}[unit]


def parse_length(text: str, key: str = "length") -> tuple[int, float, float]:
    """"400" -> (400 steps, 0, 0); "2ep" -> (0, 2.0 epochs, 0); "5%" -> (0, 0, 0.05 of the run)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ep|epochs?|%)?\s*", str(text))
    if not m or (not m.group(2) and "." in m.group(1)):
        raise BadInput(f"{key}: expected steps (400), epochs (2ep, 0.5ep) or a fraction of the run (5%), "
                       f"got {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    if not unit:
        return int(value), 0.0, 0.0
    if unit == "%":
        if value > 100:
            raise BadInput(f"{key}: {text!r} is more than the whole run")
        return 0, 0.0, value / 100
    return 0, value, 0.0


def parse_randaugment(text: str) -> tuple | None:
    """data.randaugment read: "2,9" -> ("rand", 2 ops, magnitude 9 of 30: torchvision's RandAugment);
    "trivial" -> ("trivial", 1, 0); timm's config strings, "rand-m9-mstd0.5-inc1" -> ("timm", layers 2,
    magnitude 9.0 of mmax, std 0.5, mmax 10.0, increasing True, prob 0.5) (timm's keys m, n, mstd, mmax, inc, p and
    their defaults; mstd over 100 is timm's "uniform in [0, m]", kept as inf); "" or "0" -> None (off)."""
    import re

    text = str(text).strip().lower()
    if text in ("", "0", "off", "none"):
        return None
    if text in ("trivial", "trivialaugment", "ta"):
        return "trivial", 1, 0
    if text.startswith("rand-") or text == "rand":
        return _parse_timm_randaugment(text)
    m = re.fullmatch(r"(\d+)\s*[,/ ]\s*(\d+)", text)
    if not m or not 1 <= int(m.group(1)) <= 10 or not 0 <= int(m.group(2)) <= 30:
        raise BadInput(f"data.randaugment: expected N,M (1-10 ops, magnitude 0-30; e.g. 2,9), \"trivial\", timm's "
                       f"\"rand-m9-mstd0.5-inc1\" or \"\" (off), got {text!r}")
    return "rand", int(m.group(1)), int(m.group(2))


TIMM_RANDAUGMENT_KEYS = {"m": "magnitude", "n": "ops per image", "mstd": "magnitude std", "mmax": "magnitude's upper "
                         "bound", "inc": "increasing-severity ops (0 or 1)", "p": "each op's probability"}


def _parse_timm_randaugment(text: str) -> tuple:
    """timm's `rand_augment_transform` config string, as timm reads it (its defaults: m 10, n 2, mstd 0, mmax 10,
    inc 0, p 0.5); `w` (op weights) is refused: every op here is equally likely."""
    import re

    values = {"m": 10.0, "n": 2.0, "mstd": 0.0, "mmax": 10.0, "inc": 0.0, "p": 0.5}
    for part in text.split("-")[1:]:
        m = re.fullmatch(r"([a-z]+)(\d+(?:\.\d+)?)", part)
        if not m or m.group(1) not in TIMM_RANDAUGMENT_KEYS:
            known = ", ".join(f"{k} ({v})" for k, v in TIMM_RANDAUGMENT_KEYS.items())
            raise BadInput(f"data.randaugment {text!r}: {part!r} is not one of timm's RandAugment keys here: {known}")
        values[m.group(1)] = float(m.group(2))
    std = math.inf if values["mstd"] > 100 else values["mstd"]
    layers, magnitude, top, prob = int(values["n"]), values["m"], values["mmax"], values["p"]
    if not 1 <= layers <= 10 or not 0 < top <= 30 or not 0 <= magnitude <= top or not 0 < prob <= 1 \
            or values["inc"] not in (0, 1) or values["n"] != layers:
        raise BadInput(f"data.randaugment {text!r}: expected n 1-10 ops, m in [0, mmax], mmax in (0, 30], p in "
                       "(0, 1], inc 0 or 1")
    return "timm", layers, magnitude, std, top, bool(values["inc"]), prob


def to_yaml(cfg: Config) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
