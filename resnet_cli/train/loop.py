"""The training loop: config -> build_model -> data -> steps -> checkpoints and metrics.

Per step there is no host synchronisation: loss and accuracy are summed on the
device and read once per log interval. Each epoch ends with evaluations (the
validation split when data.val_split holds one out, the test set; the EMA
weights too with train.ema), a metrics.csv row (and TensorBoard scalars) and an
atomic last.pt (and best.pt, by `rundir.selection_metric`); with
`train.checkpoint_every`, last.pt is also written inside epochs.
On CPU with the same seed, a run resumed from last.pt ends with exactly the
weights of a run that never stopped, wherever it stopped: the data order is a
function of (seed, epoch), the augmentation of (seed, epoch, batch), and the lr
of the step, so a resumed epoch skips the batches it has done without loading them.

Stop signals (SIGINT, SIGTERM, SIGUSR1) finish the current step, write last.pt
at it and raise Interrupted (exit 128 + signal); a second signal stops at once.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..checkpoint import atomic_write_text, init_from, save_checkpoint
from .. import config as C
from ..config import Config, parse_interval, to_yaml
from ..data import DataBundle, fit_model, load_data, make_loader
from ..data.augment import hard_labels
from ..device import resolve_device
from ..errors import BadInput, Interrupted, RunFailed
from ..models.resnet import stage_of
from ..models import build_model, model_info
from ..speed import Speed, fallback_message
from . import tensorboard
from .ema import EMA
from .evaluate import evaluate
from .progress import Progress
from .rundir import create_run_dir, metric_fields, selection_metric, write_metrics
from .schedule import LRSchedule
from .step import TrainStep, make_optimizer


def resolve_for_data(cfg: Config, data: DataBundle) -> Config:
    """The config with the dataset's class and channel counts filled in (config["model"] rebuilds the model)."""
    num_classes, in_channels = fit_model(data, cfg.data.dataset, cfg.model.num_classes, cfg.model.in_channels,
                                         f"{cfg.model.name} (model.num_classes/in_channels)")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num_classes,
                                                              in_channels=in_channels))


def stage_grad_norms(model: torch.nn.Module) -> dict[str, float]:
    """L2 norm of the conv/fc weight gradients per stage (stem, conv2_x, ..., fc)."""
    groups: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if p.grad is None or p.ndim < 2:
            continue
        groups.setdefault(stage_of(name), []).append(p.grad.detach().float().pow(2).sum())
    return {f"grad_norm_{k}": torch.stack(v).sum().sqrt().item() for k, v in groups.items()}


def planned_steps(cfg: Config, steps_per_epoch: int) -> int:
    return cfg.train.steps or cfg.train.epochs * steps_per_epoch


class Trainer:
    def __init__(self, cfg: Config, progress: Progress | None = None, dist=None, resuming: bool = False) -> None:
        """`resuming`: the weights will come from a checkpoint (load_state), so model.init is not read."""
        self.started = time.perf_counter()  # wall time to a target counts from here: data, model, compile
        self.cfg = cfg
        self.progress = progress or Progress()
        self.dist = dist  # distributed context (rank, world, all_reduce) or None
        self.device = dist.device if dist is not None else resolve_device(cfg.run.device)
        torch.manual_seed(cfg.run.seed)
        self.data = load_data(cfg.data)
        self.speed = Speed.for_train(cfg.train, self.device,
                                     planned_steps(cfg, self.data.train_count // cfg.train.batch_size))
        self.speed.configure_backends(self.device)
        if cfg.train.batch_size % self.world:
            raise BadInput(f"train.batch_size {cfg.train.batch_size} is the global batch and must divide evenly "
                           f"over {self.world} processes")
        if cfg.train.batch_size % (self.world * cfg.train.accum_steps):
            raise BadInput(f"train.batch_size {cfg.train.batch_size} must divide into train.accum_steps "
                           f"{cfg.train.accum_steps} equal micro-batches" + (f" on each of {self.world} processes"
                                                                           if self.world > 1 else ""))
        self.tensorboard = tensorboard.check(cfg.run.tensorboard)
        if self.data.train_count < cfg.train.batch_size:
            raise BadInput(f"train.batch_size {cfg.train.batch_size} is larger than the training set "
                           f"({self.data.train_count} images)")
        self.cfg = cfg = resolve_for_data(cfg, self.data)
        self.model = build_model(**cfg.model.architecture())
        if cfg.model.init and not resuming:
            self.progress.line(init_from(self.model, cfg.model.init, cfg.model.name))
        if cfg.train.freeze:
            try:
                self.model.freeze(cfg.train.freeze)
            except ValueError as e:
                raise BadInput(f"train.freeze: {e}") from None
            trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
            frozen = sum(p.numel() for p in self.model.parameters() if not p.requires_grad)
            self.progress.line(f"frozen: {', '.join(cfg.train.freeze)} ({frozen:,} parameters; {trainable:,} "
                               "trainable)")
        if cfg.train.sync_bn and self.device.type != "cuda":
            raise BadInput("train.sync_bn needs CUDA devices: PyTorch's SyncBatchNorm does not run on CPU")
        if dist is not None and cfg.train.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device, memory_format=self.speed.memory_format())
        t = cfg.train
        self.train_step = TrainStep(
            self.model, make_optimizer(self.model, t, self.device), self.speed, self.device,
            torch.nn.CrossEntropyLoss(label_smoothing=t.label_smoothing), t.grad_clip,
            call_module=dist.wrap(self.model) if dist is not None else None,
            on_fallback=lambda exc: self.progress.line(fallback_message(exc)), accum_steps=t.accum_steps)
        self.ema = EMA(self.model, t.ema) if t.ema else None
        # Evaluation calls the same (compiled) forward; under DDP the bare module, eager, outside DDP's hooks.
        self.eval_forward = self.train_step.forward if dist is None else self.model
        self.train_loader = make_loader(self.data, cfg.data, "train", t.batch_size // self.world, self.device,
                                        training=True, seed=cfg.run.seed, channels_last=self.speed.channels_last,
                                        rank=self.rank, world=self.world, num_classes=cfg.model.num_classes)
        self.eval_loaders = {split: make_loader(self.data, cfg.data, split, t.eval_batch_size, self.device,
                                                training=False, channels_last=self.speed.channels_last,
                                                rank=self.rank, world=self.world)
                             for split in (("val", "test") if self.data.has_val else ("test",))}
        self.selection = selection_metric(cfg)
        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = planned_steps(cfg, self.steps_per_epoch)
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.lr_at = self._schedule()
        self.schedule_rule = ""  # what a resume with another run length did to the schedule (LRSchedule.resized)
        self.scalars: tensorboard.Scalars | None = None
        self.step = 0
        self.epoch = 0  # epochs completed
        self.rows: list[dict] = []
        self.partial: dict[str, Any] = {}  # progress inside an epoch, for a checkpoint taken on Ctrl-C
        self.skipped = 0  # non-finite steps skipped (train.skip_nonfinite)
        self.prior_wall = 0.0  # wall seconds spent by earlier processes of this run (resumed runs)
        self.target: dict[str, Any] | None = None  # where train.target_top1 was first reached: epoch, step, seconds
        self.stop_signal = 0  # the stop signal received (SIGINT, SIGTERM, SIGUSR1), 0 while none
        self.every_steps, self.every_seconds = parse_interval(t.checkpoint_every)
        self._saved_at = (0, time.monotonic())  # (step, clock) of the last checkpoint, for checkpoint_every
        self.run_dir: Path | None = None

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.train_step.optimizer

    @property
    def scaler(self) -> torch.amp.GradScaler:
        return self.train_step.scaler

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
                "input": self.data.input_info(),
                "optimizer": self.optimizer.state_dict(), "scheduler": {"step": self.step, "plan": self.lr_at.plan()},
                **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
                "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
                "best_top1": self.best_top1, "metrics": self.rows, "rng": rng, "partial": dict(self.partial),
                "skipped": self.skipped, "wall_seconds": self.wall_seconds(), "target": self.target,
                "finished": self.finished}

    def load_state(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        plan = (ckpt.get("scheduler") or {}).get("plan")
        if plan is None:  # written before plans were saved: the schedule was laid out for the saved run length
            plan = {"total": planned_steps(C.from_dict(ckpt["config"]), self.steps_per_epoch)}
        self.lr_at = self._schedule(plan)
        self.planned_lr = self.lr_at(self.step)  # the lr the saved plan has at the resume point
        self.planned_total = self.lr_at.end()
        self.schedule_rule = self.lr_at.resized(self.step, self.total_steps)
        self.rows = list(ckpt.get("metrics", []))
        self.partial = dict(ckpt.get("partial") or {})
        self.skipped = int(ckpt.get("skipped", 0))
        self.prior_wall = float(ckpt.get("wall_seconds", 0.0))
        self.target = ckpt.get("target")
        rng = ckpt.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    # ------------------------------------------------------------ run folder
    def open_run_dir(self, run_dir: Path | None = None) -> Path | None:
        """Create the run folder (or take over `run_dir` when resuming) and write config.yaml; rank 0 only."""
        if not self.is_main:  # other ranks write nothing; a new run's folder name is rank 0's to choose
            self.run_dir = run_dir
            return run_dir
        if run_dir is None:
            name = self.cfg.run.name or f"{self.cfg.model.name}-{self.cfg.data.dataset}"
            run_dir = create_run_dir(self.cfg.run.run_dir, name)
        else:  # resuming: a process killed mid-write leaves its temporary file behind
            for stale in run_dir.glob(".*.tmp.*"):
                stale.unlink(missing_ok=True)
        self.run_dir = run_dir
        atomic_write_text(run_dir / "config.yaml", to_yaml(self.cfg))
        if self.tensorboard:
            self.scalars = tensorboard.Scalars(run_dir, purge_step=self.step + 1 if self.step else None)
        return run_dir

    def save(self, improved: bool = False) -> None:
        """last.pt (and best.pt when `improved`), atomically: a failed write leaves the previous file intact."""
        if not self.is_main:
            return
        assert self.run_dir is not None
        self._saved_at = (self.step, time.monotonic())
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

    def wall_seconds(self) -> float:
        """Wall time of the run so far, across resumes: process start-up, data, compilation, evaluation."""
        return self.prior_wall + time.perf_counter() - self.started

    def target_stop(self) -> bool:
        return bool(self.cfg.train.stop_at_target and self.target)

    def _schedule(self, plan: dict[str, Any] | None = None) -> LRSchedule:
        info = model_info(self.cfg.model.name)
        return LRSchedule(self.cfg.train, self.total_steps, self.steps_per_epoch, info.depth, info.family, plan=plan)

    def best_row(self) -> dict | None:
        """The epoch best.pt holds: the best selection figure (the first of equals)."""
        return max(self.rows, key=lambda r: r[self.selection]) if self.rows else None

    def patience_stop(self) -> bool:
        """train.patience: that many epochs since the best selection figure (derived from the rows, so a
        resumed run stops where an uninterrupted one would)."""
        best = self.best_row()
        return bool(self.cfg.train.patience and best and self.epoch - best["epoch"] >= self.cfg.train.patience)

    @property
    def stopped_early(self) -> bool:
        """Ended by train.patience before its last step."""
        return self.patience_stop() and self.step < self.total_steps

    @property
    def best_top1(self) -> float:
        """The best selection figure so far (-1 before the first evaluation)."""
        best = self.best_row()
        return best[self.selection] if best else -1.0

    @property
    def finished(self) -> bool:
        """Every step done, stopped at train.target_top1 as asked, or stopped early (train.patience): a resume
        has nothing left to do."""
        return self.step >= self.total_steps or self.target_stop() or self.patience_stop()

    def resume_command(self) -> str:
        return f"resnet train --resume {self.run_dir}"

    # ------------------------------------------------------------ the loop
    STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")  # Ctrl-C; SLURM, Kubernetes, timeout, torchrun; SLURM --signal

    def _on_signal(self, signum, frame) -> None:
        if self.stop_signal:  # a second signal: stop now, without a checkpoint
            raise Interrupted(f"stopped at once by a second {signal.Signals(signum).name}; no checkpoint was "
                              f"written since the last one. Resume with: {self.resume_command()}", signum)
        self.stop_signal = signum

    def _interrupted(self, where: str) -> Interrupted:
        name = signal.Signals(self.stop_signal).name
        note = "" if name == "SIGINT" else f" ({name})"
        return Interrupted(f"checkpoint saved {where}{note}; resume with: {self.resume_command()}", self.stop_signal)

    def _checkpoint_due(self) -> bool:
        """train.checkpoint_every: N steps, or N seconds of this process's training, since the last checkpoint."""
        step, clock = self._saved_at
        if self.every_steps:
            return self.step - step >= self.every_steps
        return bool(self.every_seconds) and time.monotonic() - clock >= self.every_seconds

    def _nonfinite(self, epoch: int, step: int, value: float) -> RunFailed:
        last = f"{self.run_dir}/last.pt (epoch {self.epoch})" if self.rows else "none yet"
        return RunFailed(f"loss became {value} at epoch {epoch}, step {step}; stopped. Last good checkpoint: "
                         f"{last}. Lower the lr, or set train.skip_nonfinite=N to skip up to N bad steps")

    def train_epoch(self) -> dict[str, float]:
        t = self.cfg.train
        model = self.model
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
            capture = (lambda: grad_norms.update(stage_grad_norms(model))) \
                if t.log_grad_norms and i == steps - 1 else None
            loss, logits, updated = self.train_step(x, y, lr, check_finite=t.skip_nonfinite > 0,
                                                    after_backward=capture)
            if not updated:  # train.skip_nonfinite: the loss was NaN/Inf, no update was made
                self.skipped += 1
                if self.skipped > t.skip_nonfinite:
                    self.progress.end_epoch()
                    raise self._nonfinite(epoch, self.step + 1, loss.item())
                self.progress.line(f"skipping step {self.step + 1} of epoch {epoch}: loss {loss.item()} "
                                   f"({self.skipped}/{t.skip_nonfinite} skips used)")
                self.step += 1  # the step happened, without an update: epochs and the schedule keep their length
                continue
            self.step += 1
            if self.ema is not None:
                self.ema.update()
            seen += len(y)
            loss = loss.float()
            finite.append(torch.isfinite(loss))
            loss_sum += loss * len(y)
            correct += (logits.argmax(1) == hard_labels(y)).sum()
            if (i + 1) % t.log_interval == 0 or i + 1 == steps:
                interval_sum = loss_sum if self.dist is None else self.dist.all_reduce([loss_sum])[0] / self.world
                avg = interval_sum.item() / seen  # the one host sync per interval
                if self.dist is not None:  # every rank stops at the same step boundary
                    self.stop_signal = self.dist.max(self.stop_signal)
                if not math.isfinite(avg):
                    flags = torch.stack(finite)
                    bad = int((~flags).nonzero()[0].item()) if not flags.all() else len(finite) - 1
                    self.progress.end_epoch()
                    raise self._nonfinite(epoch, self.step - len(finite) + bad + 1, avg)
                finite.clear()
                elapsed = time.perf_counter() - t0
                self.progress.update(i + 1, steps, avg, correct.item() / seen, lr,
                                     (seen - int(p.get("seen", 0))) * self.world / elapsed)
            # Under torchrun a stop waits for the next log interval, where the ranks agree on it.
            stop = self.stop_signal and (self.dist is None or (i + 1) % t.log_interval == 0)
            if (stop or self._checkpoint_due()) and i + 1 < steps:
                self.partial = {"batch": i + 1, "loss_sum": loss_sum.item(), "correct": int(correct.item()),
                                "seen": seen, "seconds": prior_seconds + time.perf_counter() - t0}
                self.save()  # rank 0 writes; a checkpoint_every save needs no other rank
                self.partial = {}
                if stop:
                    self.progress.end_epoch()
                    if self.dist is not None:
                        self.dist.barrier()  # the others wait for rank 0's file before they exit
                    raise self._interrupted(f"at epoch {epoch}, step {self.step}")
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

        A stop signal saves a checkpoint at the next step boundary and raises Interrupted (exit 128 + signal).
        """
        import threading

        self.stop_signal = 0
        previous = {}
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for name in self.STOP_SIGNALS:
                if hasattr(signal, name):
                    previous[name] = signal.signal(getattr(signal, name), self._on_signal)
        try:
            return self._run()
        finally:
            for name, handler in previous.items():
                signal.signal(getattr(signal, name), handler)
            if self.scalars is not None:
                self.scalars.close()

    def evaluate_all(self) -> dict[str, float]:
        """This epoch's evaluations as metrics.csv columns: {val,test}_{loss,top1,top5}, and ema_* likewise."""
        models = [("", self.model, self.eval_forward)]
        if self.ema is not None:  # the average is evaluated eagerly: it is not what the compiled step calls
            models.append(("ema_", self.ema.module, self.ema.module))
        out: dict[str, float] = {}
        for prefix, model, forward in models:
            for split, loader in self.eval_loaders.items():
                res = evaluate(model, loader, self.cfg.model.num_classes, self.device, self.speed.precision,
                               all_reduce=self.dist.all_reduce if self.dist is not None else None, forward=forward)
                out.update({f"{prefix}{split}_loss": res.loss, f"{prefix}{split}_top1": res.top1,
                            f"{prefix}{split}_top5": res.top5})
        return out

    def _epoch_line(self, row: dict) -> str:
        evals = "  ".join(f"{split} loss {row[f'{split}_loss']:.4f} top1 {row[f'{split}_top1']:.2%}"
                          + (f" (ema {row[f'ema_{split}_top1']:.2%})" if self.ema is not None else "")
                          for split in self.eval_loaders)
        return (f"epoch {self.epoch}/{self.epochs}  train loss {row['train_loss']:.4f} acc {row['train_top1']:.2%}  "
                f"{evals}  lr {row['lr']:.4g}  {row['seconds']:.1f}s {row['img_per_s']:,.0f} img/s")

    def _run(self) -> Path | None:
        stop_at = self.epoch + self.cfg.run.stop_after_epochs if self.cfg.run.stop_after_epochs else None
        while not self.finished and (stop_at is None or self.epoch < stop_at):
            stats = self.train_epoch()
            self.epoch += 1
            row = {"epoch": self.epoch, "step": self.step, **stats, **self.evaluate_all()}
            self.rows.append(row)
            score = row[self.selection]
            improved = self.best_row() is row  # the first of equals stays best
            goal = self.cfg.train.target_top1
            if goal and self.target is None and score >= goal:
                self.target = {"top1": goal, "epoch": self.epoch, "step": self.step,
                               "seconds": round(self.wall_seconds(), 2), "metric": self.selection}
            if self.is_main:
                self.save(improved)
                write_metrics(self.run_dir / "metrics.csv", self.rows, metric_fields(self.cfg))
                if self.scalars is not None:
                    self.scalars.add(row)
                self.progress.line(self._epoch_line(row))
                if self.target is not None and self.target["epoch"] == self.epoch:
                    self.progress.line(f"reached {self.selection} >= {goal:.2%} at epoch {self.epoch} (step "
                                       f"{self.step}), {self.target['seconds']:.1f} s after the start")
                if self.stopped_early:
                    self.progress.line(f"stopping early: no better {self.selection} for {self.cfg.train.patience} "
                                       f"epochs (best {self.best_top1:.2%} at epoch {self.best_row()['epoch']})")
            if self.dist is not None:  # a signal that came during evaluation: all ranks stop, or none
                self.stop_signal = self.dist.max(self.stop_signal)
            if self.stop_signal and not self.finished:
                raise self._interrupted(f"at the end of epoch {self.epoch}")
        return self.run_dir if self.is_main else None
