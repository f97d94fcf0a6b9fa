"""The training loop: config -> build_model -> data -> steps -> checkpoints and metrics.

Per step there is no host synchronisation: loss and accuracy are summed on the
device and read once per log interval. Each epoch ends with an evaluation on
the test split, a metrics.csv row and an atomic last.pt (and best.pt).
On CPU with the same seed, a run resumed from last.pt ends with exactly the
weights of a run that never stopped: the data order and augmentation are a
function of (seed, epoch), and the lr a function of the step.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .. import __version__
from ..checkpoint import atomic_write_text, save_checkpoint
from ..config import Config, to_yaml
from ..data import DataBundle, load_data, make_loader
from ..device import cpp_compiler, default_channels_last, resolve_device
from ..errors import BadInput, Interrupted, RunFailed
from ..gradflow import stage_of
from ..registry import build_model, model_info
from .evaluate import autocast, evaluate
from .progress import Progress
from .rundir import create_run_dir, write_metrics
from .schedule import LRSchedule


# A compiled CPU run pays ~20-50 s of compilation (train and eval graphs) and then trains resnet20 1.3-1.5x
# faster (~0.07 s saved per batch-128 step on 2 cores: BENCHMARKS.md), so `auto` compiles CPU runs that are
# long enough to earn it back several times over.
CPU_COMPILE_MIN_STEPS = 2000


@dataclass
class Speed:
    """The fast-path switches as resolved for one device and one run length."""

    precision: str
    channels_last: bool
    compile: bool

    @classmethod
    def resolve(cls, cfg: Config, device: torch.device, planned_steps: int) -> "Speed":
        t = cfg.train
        cuda = device.type == "cuda"
        precision = t.precision if t.precision != "auto" else ("bf16" if cuda else "fp32")
        if precision == "fp16" and not cuda:
            raise BadInput("train.precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        channels_last = {"on": True, "off": False}.get(t.channels_last, default_channels_last(device))
        if t.compile == "auto":
            compile_ = cuda or (planned_steps >= CPU_COMPILE_MIN_STEPS and cpp_compiler() is not None)
        else:
            compile_ = t.compile == "on"
            if compile_ and device.type == "cpu" and cpp_compiler() is None:
                raise BadInput("train.compile on CPU needs a C++ compiler (g++ or clang++, or $CXX); "
                               "install one or set train.compile=off")
        return cls(precision, channels_last, compile_)


def resolve_for_data(cfg: Config, data: DataBundle) -> Config:
    """The config with the dataset's class and channel counts filled in (config["model"] rebuilds the model)."""
    num_classes = cfg.model.num_classes or data.num_classes
    in_channels = cfg.model.in_channels or data.in_channels
    if num_classes < data.num_classes:
        raise BadInput(f"model.num_classes is {num_classes} but {cfg.data.dataset} has {data.num_classes} classes")
    if in_channels != data.in_channels:
        raise BadInput(f"model.in_channels is {in_channels} but {cfg.data.dataset} images have "
                       f"{data.in_channels} channel(s)")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num_classes,
                                                              in_channels=in_channels))


def param_groups(model: torch.nn.Module, weight_decay: float, no_wd_bn_bias: bool) -> list[dict]:
    if not no_wd_bn_bias:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def stage_grad_norms(model: torch.nn.Module) -> dict[str, float]:
    """L2 norm of the conv/fc weight gradients per stage (stem, conv2_x, ..., fc)."""
    groups: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if p.grad is None or p.ndim < 2:
            continue
        groups.setdefault(stage_of(name), []).append(p.grad.detach().float().pow(2).sum())
    return {f"grad_norm_{k}": torch.stack(v).sum().sqrt().item() for k, v in groups.items()}


class EagerFallback:
    """A compiled forward that becomes the eager one if compiling fails; for `train.compile: auto` only.

    Inductor on CPU needs a working C++ toolchain and headers; a run should not die over a speed switch
    it did not ask for. Compilation fails before the graph runs, so no state has changed when it falls back.
    """

    def __init__(self, compiled, eager, on_failure) -> None:
        from torch._dynamo.exc import BackendCompilerFailed

        self.compiled, self.eager, self.on_failure = compiled, eager, on_failure
        self.failure = BackendCompilerFailed

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except self.failure as exc:
                self.compiled = None
                self.on_failure(exc)
        return self.eager(*args, **kwargs)


class Trainer:
    def __init__(self, cfg: Config, progress: Progress | None = None, dist=None) -> None:
        self.cfg = cfg
        self.progress = progress or Progress()
        self.dist = dist  # distributed context (rank, world, all_reduce) or None
        self.device = dist.device if dist is not None else resolve_device(cfg.run.device)
        torch.manual_seed(cfg.run.seed)
        self.data = load_data(cfg.data)
        self.speed = Speed.resolve(cfg, self.device, cfg.train.steps
                                   or cfg.train.epochs * (self.data.train_count // cfg.train.batch_size))
        if cfg.train.batch_size % self.world:
            raise BadInput(f"train.batch_size {cfg.train.batch_size} is the global batch and must divide evenly "
                           f"over {self.world} processes")
        if self.data.train_count < cfg.train.batch_size:
            raise BadInput(f"train.batch_size {cfg.train.batch_size} is larger than the training set "
                           f"({self.data.train_count} images)")
        self.cfg = cfg = resolve_for_data(cfg, self.data)
        self.model = build_model(**dataclasses.asdict(cfg.model))
        if cfg.train.sync_bn and self.device.type != "cuda":
            raise BadInput("train.sync_bn needs CUDA devices: PyTorch's SyncBatchNorm does not run on CPU")
        if dist is not None and cfg.train.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device)
        if self.speed.channels_last:
            self.model.to(memory_format=torch.channels_last)
        t = cfg.train
        self.optimizer = torch.optim.SGD(param_groups(self.model, t.weight_decay, t.no_wd_bn_bias), lr=t.lr,
                                         momentum=t.momentum, nesterov=t.nesterov,
                                         **({"fused": True} if self.device.type == "cuda" else {"foreach": True}))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.speed.precision == "fp16")
        self.train_loader = make_loader(self.data, cfg.data, "train", t.batch_size // self.world, self.device,
                                        training=True, seed=cfg.run.seed, channels_last=self.speed.channels_last,
                                        rank=self.rank, world=self.world)
        self.test_loader = make_loader(self.data, cfg.data, "test", t.eval_batch_size, self.device,
                                       training=False, channels_last=self.speed.channels_last, rank=self.rank, world=self.world)
        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = t.steps or t.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        info = model_info(cfg.model.name)
        self.lr_at = LRSchedule(t, self.total_steps, self.steps_per_epoch, info.depth, info.family)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
        self.step = 0
        self.epoch = 0  # epochs completed
        self.best_top1 = -1.0
        self.rows: list[dict] = []
        self.partial: dict[str, Any] = {}  # progress inside an epoch, for a checkpoint taken on Ctrl-C
        self.skipped = 0  # non-finite steps skipped (train.skip_nonfinite)
        self._interrupted = False
        self.run_dir: Path | None = None
        self.forward = self.model if dist is None else dist.wrap(self.model, self.model)
        if self.speed.compile:
            compiled = torch.compile(self.forward, mode=None if t.compile_mode == "default" else t.compile_mode)
            self.forward = compiled if t.compile == "on" else EagerFallback(compiled, self.forward, self._compile_failed)

    def _compile_failed(self, exc: BaseException) -> None:
        self.speed.compile = False
        cause = getattr(exc, "inner_exception", None) or exc
        first = (str(cause).strip().splitlines() or [""])[0][:200]
        self.progress.line(f"torch.compile failed ({type(cause).__name__}: {first}); continuing without it. "
                           "Set train.compile=off to skip the attempt, or train.compile=on to make it an error.")

    # ------------------------------------------------------------ distributed helpers
    @property
    def rank(self) -> int:
        return self.dist.rank if self.dist is not None else 0

    @property
    def world(self) -> int:
        return self.dist.world if self.dist is not None else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"model": self.model.state_dict(), "config": self.cfg.to_dict(), "resnet_cli": __version__,
                "optimizer": self.optimizer.state_dict(), "scheduler": {"step": self.step},
                "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
                "best_top1": self.best_top1, "metrics": self.rows, "rng": rng, "partial": dict(self.partial),
                "finished": self.step >= self.total_steps}

    def load_state(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self.best_top1 = float(ckpt.get("best_top1", -1.0))
        self.rows = list(ckpt.get("metrics", []))
        self.partial = dict(ckpt.get("partial") or {})
        rng = ckpt.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    # ------------------------------------------------------------ run folder
    def open_run_dir(self, run_dir: Path | None = None) -> Path:
        if run_dir is None:
            name = self.cfg.run.name or f"{self.cfg.model.name}-{self.cfg.data.dataset}"
            run_dir = create_run_dir(self.cfg.run.run_dir, name)
        else:  # resuming: a process killed mid-write leaves its temporary file behind
            for stale in run_dir.glob(".*.tmp.*"):
                stale.unlink(missing_ok=True)
        self.run_dir = run_dir
        atomic_write_text(run_dir / "config.yaml", to_yaml(self.cfg))
        return run_dir

    def save(self, improved: bool = False) -> None:
        """last.pt (and best.pt when `improved`), atomically: a failed write leaves the previous file intact."""
        if not self.is_main:
            return
        assert self.run_dir is not None
        state = self.state()
        try:
            save_checkpoint(self.run_dir / "last.pt", state)
            if improved and self.cfg.run.save_best:
                save_checkpoint(self.run_dir / "best.pt", state)
        except OSError as e:
            import errno

            why = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise RunFailed(f"could not save a checkpoint in {self.run_dir} ({why}); the previous last.pt "
                            "is intact") from None

    def resume_command(self) -> str:
        return f"resnet train --resume {self.run_dir}"

    # ------------------------------------------------------------ the loop
    def _sigint(self, signum, frame) -> None:
        if self._interrupted:  # a second Ctrl-C: stop now, without a checkpoint
            raise KeyboardInterrupt
        self._interrupted = True

    def _nonfinite(self, epoch: int, step: int, value: float) -> RunFailed:
        last = f"{self.run_dir}/last.pt (epoch {self.epoch})" if self.rows else "none yet"
        return RunFailed(f"loss became {value} at epoch {epoch}, step {step}; stopped. Last good checkpoint: "
                         f"{last}. Lower the lr, or set train.skip_nonfinite=N to skip up to N bad steps")

    def train_epoch(self) -> dict[str, float]:
        t = self.cfg.train
        model, opt = self.model, self.optimizer
        model.train()
        epoch = self.epoch + 1
        p = self.partial  # a run saved mid-epoch (Ctrl-C) continues where it stopped
        start = int(p.get("batch", 0))
        steps = min(self.steps_per_epoch, self.total_steps - (self.step - start))
        loss_sum = torch.tensor(float(p.get("loss_sum", 0.0)), device=self.device)
        correct = torch.tensor(int(p.get("correct", 0)), dtype=torch.int64, device=self.device)
        seen, prior_seconds = int(p.get("seen", 0)), float(p.get("seconds", 0.0))
        grad_norms: dict[str, float] = {}
        finite: list[torch.Tensor] = []  # per-step flags of the current log interval, read at the interval's end
        self.progress.start_epoch(epoch, self.epochs, steps)
        t0 = time.perf_counter()
        lr = self.lr_at(self.step)
        for i, (x, y) in enumerate(self.train_loader.batches(epoch, start), start=start):
            if i >= steps:
                break
            lr = self.lr_at(self.step)
            for group in opt.param_groups:
                group["lr"] = lr
            with autocast(self.device, self.speed.precision):
                logits = self.forward(x)
                loss = self.criterion(logits, y)
            if t.skip_nonfinite and not torch.isfinite(loss).item():  # opt-in: a host sync per step
                self.skipped += 1
                if self.skipped > t.skip_nonfinite:
                    self.progress.end_epoch()
                    raise self._nonfinite(epoch, self.step + 1, loss.item())
                self.progress.line(f"skipping step {self.step + 1} of epoch {epoch}: loss {loss.item()} "
                                   f"({self.skipped}/{t.skip_nonfinite} skips used)")
                self.step += 1  # the step happened, without an update: epochs and the schedule keep their length
                continue
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if t.log_grad_norms and i == steps - 1:
                grad_norms = stage_grad_norms(model)
            if t.grad_clip > 0:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            self.scaler.step(opt)
            self.scaler.update()
            self.step += 1
            seen += len(y)
            loss = loss.detach().float()
            finite.append(torch.isfinite(loss))
            loss_sum += loss * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            if (i + 1) % t.log_interval == 0 or i + 1 == steps:
                interval_sum = loss_sum if self.dist is None else self.dist.all_reduce([loss_sum])[0] / self.world
                avg = interval_sum.item() / seen  # the one host sync per interval
                if self.dist is not None:  # every rank stops at the same step boundary
                    self._interrupted = self.dist.any(self._interrupted)
                if not math.isfinite(avg):
                    flags = torch.stack(finite)
                    bad = int((~flags).nonzero()[0].item()) if not flags.all() else len(finite) - 1
                    self.progress.end_epoch()
                    raise self._nonfinite(epoch, self.step - len(finite) + bad + 1, avg)
                finite.clear()
                elapsed = time.perf_counter() - t0
                self.progress.update(i + 1, steps, avg, correct.item() / seen, lr,
                                     (seen - int(p.get("seen", 0))) * self.world / elapsed)
            if self._interrupted and i + 1 < steps and (self.dist is None or (i + 1) % t.log_interval == 0):
                self.progress.end_epoch()
                self.partial = {"batch": i + 1, "loss_sum": loss_sum.item(), "correct": int(correct.item()),
                                "seen": seen, "seconds": prior_seconds + time.perf_counter() - t0}
                self.save()
                if self.dist is not None:
                    self.dist.barrier()
                raise Interrupted(f"checkpoint saved at epoch {epoch}, step {self.step}; resume with: "
                                  f"{self.resume_command()}")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        run_seconds = prior_seconds + seconds
        self.progress.end_epoch()
        self.partial = {}
        totals = torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(seen), device=self.device,
                                                                               dtype=torch.float64)])
        if self.dist is not None:
            (totals,) = self.dist.all_reduce([totals])
        loss_total, correct_total, seen_total = totals.tolist()
        return {"lr": lr, "train_loss": loss_total / seen_total, "train_top1": correct_total / seen_total,
                "seconds": run_seconds, "img_per_s": (seen_total - int(p.get("seen", 0)) * self.world) / seconds,
                **grad_norms}

    def run(self) -> Path | None:
        """Train to the end (or from a resumed state); returns the run folder (None off rank 0).

        Ctrl-C saves a checkpoint at the next step boundary and raises Interrupted (exit 130).
        """
        import signal
        import threading

        self._interrupted = False
        handler_installed = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._sigint) if handler_installed else None
        try:
            return self._run()
        finally:
            if handler_installed:
                signal.signal(signal.SIGINT, previous)

    def _run(self) -> Path | None:
        stop_at = self.epoch + self.cfg.run.stop_after_epochs if self.cfg.run.stop_after_epochs else None
        while self.step < self.total_steps and (stop_at is None or self.epoch < stop_at):
            stats = self.train_epoch()
            self.epoch += 1
            res = evaluate(self.forward if self.dist is None else self.model, self.test_loader,
                           self.cfg.model.num_classes, self.device, self.speed.precision,
                           all_reduce=self.dist.all_reduce if self.dist is not None else None)
            row = {"epoch": self.epoch, "step": self.step, **stats, "test_loss": res.loss, "test_top1": res.top1,
                   "test_top5": res.top5}
            self.rows.append(row)
            improved = res.top1 > self.best_top1
            self.best_top1 = max(self.best_top1, res.top1)
            if self.is_main:
                self.save(improved)
                extra = sorted({k for r in self.rows for k in r if k.startswith("grad_norm_")})
                write_metrics(self.run_dir / "metrics.csv", self.rows, extra)
                self.progress.line(
                    f"epoch {self.epoch}/{self.epochs}  train loss {row['train_loss']:.4f} "
                    f"acc {row['train_top1']:.2%}  test loss {res.loss:.4f} top1 {res.top1:.2%} "
                    f"top5 {res.top5:.2%}  lr {row['lr']:.4g}  {row['seconds']:.1f}s "
                    f"{row['img_per_s']:,.0f} img/s")
            if self._interrupted and self.step < self.total_steps:
                raise Interrupted(f"checkpoint saved at the end of epoch {self.epoch}; resume with: "
                                  f"{self.resume_command()}")
        return self.run_dir if self.is_main else None

    # ------------------------------------------------------------ a bare step, for overhead benchmarks
    def bare_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.speed.precision):
            loss = F.cross_entropy(self.forward(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss
