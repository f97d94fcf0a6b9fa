"""A training run, built once: `build_run(cfg, process, progress)` -> `Run`, the finished parts the loop reads.

The order is fixed and reads top to bottom: seed, data, the config fitted to the data (model.num_classes
and in_channels; nothing is built on an unfinished config), the plan (steps per epoch, total), the speed
settings, the model (initial weights, frozen stages, SyncBatchNorm, device and memory format), the one
training step, the EMA, the loaders and the schedule. The seed is set before the data and the model, so
the same config builds the same weights.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from .. import __version__
from ..analysis import refuse_on_cpu
from ..config import DECODED, Config, from_dict
from ..data import Data, load_data, make_loader
from ..data.loader import Loader
from ..errors import BadInput
from ..models import build_model, model_info
from ..speed import Speed, fallback_message
from . import graphs, trackers
from .distributed import Process
from .ema import EMA
from .evaluations import splits
from .init_weights import init_from
from .losses import make_loss
from .progress import Progress
from .schedule import LRSchedule
from .step import TrainStep, load_optimizer_state, make_optimizer


@dataclass(frozen=True)
class Plan:
    """How long the run is: optimizer steps per epoch (global batches), in all, and the epochs they span."""

    steps_per_epoch: int
    total_steps: int

    @classmethod
    def of(cls, cfg: Config, data, world: int = 1) -> "Plan":
        per_epoch = data.epoch_steps(cfg.train.batch_size, world)
        return cls(per_epoch, cfg.train.steps or cfg.train.epochs * per_epoch)

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)


@dataclass
class Run:
    """The finished parts of a run. `cfg` is resolved: its model section fits the data."""

    cfg: Config
    process: Process
    speed: Speed
    data: Data
    plan: Plan
    model: torch.nn.Module  # the plain module: evaluation, checkpoints and gradient logging use it
    step: TrainStep  # forward, loss, backward, update; `step.forward` may be compiled and/or under DDP
    ema: EMA | None
    train_loader: Loader
    eval_loaders: dict[str, Loader]  # "val" (with data.val_split), "test"
    trackers: tuple[str, ...]  # train/trackers.py: where rank 0 logs besides metrics.csv
    started: float  # perf_counter at the start of the build: wall time to a target counts from here

    @property
    def device(self) -> torch.device:
        return self.process.device

    @property
    def eval_forward(self):
        """What evaluation calls on the raw weights (the process decides: compiled forward, or the bare module)."""
        return self.process.eval_forward(self.model, self.step.forward)

    def seed_step(self, step: int) -> None:
        """Stochastic depth (model.drop_path) draws from torch's own generator: seeded before each step from (run
        seed, step, rank), so that a run resumed anywhere, mid-epoch too, draws what the uninterrupted one draws,
        and each torchrun process draws its own. Nothing else in a step draws from it (augmentations have their
        batch's generator)."""
        if self.cfg.model.drop_path:
            torch.manual_seed((self.cfg.run.seed * 1_000_003 + step * 7_919 + self.process.rank * 65_537 + 54_321)
                              % (2**63 - 1))

    def schedule(self, plan: dict[str, Any] | None = None) -> LRSchedule:
        """The lr schedule, laid out for this run or (resuming) as a checkpoint's `plan` says."""
        info = model_info(self.cfg.model.name)
        return LRSchedule(self.cfg.train, self.plan.total_steps, self.plan.steps_per_epoch, info.depth, info.family,
                          plan=plan)

    def saved_plan(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        """The schedule plan a checkpoint was written with (older ones: laid out for their own run length)."""
        plan = (ckpt.get("scheduler") or {}).get("plan")
        if plan is None:
            return {"total": Plan.of(from_dict(ckpt["config"]), self.data, self.process.world).total_steps}
        return plan

    def state_dict(self) -> dict[str, Any]:
        """The weights and everything that evolves with them: optimizer, scaler, EMA, random generators."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"model": self.model.state_dict(), "config": self.cfg.to_dict(), "resnet_cli": __version__,
                "input": self.data.input.as_dict(), "world": self.process.world,
                "optimizer": self.step.optimizer.state_dict(),
                "scaler": self.step.scaler.state_dict(), "rng": rng,
                **({"ema": self.ema.state_dict()} if self.ema is not None else {})}

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        saved = (ckpt.get("input") or {}).get("classes")
        if saved is not None and list(saved) != list(self.data.classes):  # else every label would change meaning
            raise BadInput(f"this run was trained on the classes {_few(saved)}, but its data now has "
                           f"{_few(self.data.classes)}: resume on the same classes (the same folders), or start a "
                           "new run with --init from this one")
        note = world_change_note(ckpt.get("world"), self.process.world, self.cfg.data.dataset)
        if note and self.process.is_main:
            print(note, file=sys.stderr, flush=True)
        self.model.load_state_dict(ckpt["model"])
        load_optimizer_state(self.step.optimizer, ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.step.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        rng = ckpt.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)


def world_change_note(saved: int | None, world: int, dataset: str) -> str | None:
    """The one line a resume on another number of processes prints where that changes the data's plan: shards
    are dealt to ranks by their number, so the epoch's steps and the rest of its batches differ from the
    uninterrupted run's (the global batch, and with it the lr schedule, stay; a batch the new number does not
    divide was refused before: check_batch). Tensor datasets and image folders shard by index: no note."""
    if saved is None or saved == world or dataset != "shards":
        return None
    return (f"note: resumed on {world} process{'es' * (world != 1)}, started on {saved}: shards are dealt to ranks "
            "by their number, so this epoch's steps and remaining batches differ from the uninterrupted run's (the "
            "global batch and the lr schedule stay)")


def _few(names) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:5]) + (f" ... ({len(names)} in all)" if len(names) > 5 else "")


def build_run(cfg: Config, process: Process, progress: Progress, resuming: bool = False) -> Run:
    """Every part of a run, from its config. `resuming`: the weights will come from a checkpoint
    (Run.load_state_dict), so model.init is not read."""
    started = time.perf_counter()
    torch.manual_seed(cfg.run.seed)
    data = load_data(cfg.data)
    check_batch(cfg, data.train_count, process.world)
    plan = Plan.of(cfg, data, process.world)
    speed = Speed.for_train(cfg.train, process.device, plan.total_steps)
    speed.cuda_graphs = graphs.resolve(cfg.train.cuda_graphs, process.device, precision=speed.precision,
                                       torchrun=bool(process.backend), accum_steps=cfg.train.accum_steps,
                                       skip_nonfinite=cfg.train.skip_nonfinite, compile_mode=speed.compile_mode,
                                       compile=speed.compile)
    speed.configure_backends(process.device)
    loggers = trackers.resolve(cfg)
    cfg = cfg.fitted(data.num_classes, data.channels, data.input.image_size[0])
    model = build_network(cfg, process, speed, progress, resuming)
    t = cfg.train
    if process.device.type == "cpu":  # one micro-batch of one process
        crop = (cfg.data.image_size,) * 2 if cfg.data.dataset in DECODED else data.input.image_size  # training's
        refuse_on_cpu(model, crop, t.batch_size // process.world // t.accum_steps,
                      f"train.batch_size {t.batch_size}", cfg.model.name,
                      advice="use a smaller batch, or train.accum_steps to keep it as the global batch")
    step = TrainStep(model, make_optimizer(model, t, process.device), speed, process.device,
                     make_loss(t), t.grad_clip,
                     call_module=process.wrap(model), on_fallback=lambda exc: progress.line(fallback_message(exc)),
                     accum_steps=t.accum_steps, all_true=process.all_true,
                     on_graph_fallback=lambda exc: progress.line(graphs.fallback_message(exc)))
    if step.graph is not None:  # the log says that the step replays, not only that graphs were asked for
        step.graph.on_capture = lambda: progress.line(graphs.CAPTURED)
        step.graph.on_release = lambda held: progress.line(graphs.released_message(held))
    ema = EMA(model, t.ema) if t.ema else None
    loader = dict(device=process.device, channels_last=speed.channels_last, rank=process.rank, world=process.world)
    train_loader = make_loader(data, cfg.data, "train", t.batch_size // process.world, training=True,
                               seed=cfg.run.seed, num_classes=cfg.model.num_classes, **loader)
    eval_loaders = {split: make_loader(data, cfg.data, split, t.eval_batch_size, training=False, **loader)
                    for split in splits(cfg)}
    return Run(cfg, process, speed, data, plan, model, step, ema, train_loader, eval_loaders, loggers,
               started)


def check_batch(cfg: Config, train_count: int, world: int) -> None:
    """The global batch divides over the processes and into train.accum_steps, and fits the training set."""
    b, k = cfg.train.batch_size, cfg.train.accum_steps
    if b % world:
        raise BadInput(f"train.batch_size {b} is the global batch and must divide evenly over {world} processes")
    if b % (world * k):
        raise BadInput(f"train.batch_size {b} must divide into train.accum_steps {k} equal micro-batches"
                       + (f" on each of {world} processes" if world > 1 else ""))
    if train_count < b:
        raise BadInput(f"train.batch_size {b} is larger than the training set ({train_count} images)")


def build_network(cfg: Config, process: Process, speed: Speed, progress: Progress, resuming: bool) -> torch.nn.Module:
    """The model of a fitted config: built, its initial weights loaded (model.init), stages frozen
    (train.freeze), BatchNorm synchronised (train.sync_bn), on the device in the run's memory format."""
    model = build_model(**cfg.model.architecture())
    if cfg.model.init and not resuming:
        progress.line(init_from(model, cfg.model.init, cfg.model.name))
    if cfg.train.freeze:
        try:
            model.freeze(cfg.train.freeze)
        except ValueError as e:
            raise BadInput(f"train.freeze: {e}") from None
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        progress.line(f"frozen: {', '.join(cfg.train.freeze)} ({frozen:,} parameters; {trainable:,} trainable)")
    if cfg.train.sync_bn:
        if process.device.type != "cuda":
            raise BadInput("train.sync_bn needs CUDA devices: PyTorch's SyncBatchNorm does not run on CPU")
        model = process.sync_batchnorm(model)
    return model.to(process.device, memory_format=speed.memory_format())
