"""The training loop: epochs of steps over a built `Run`, evaluations, checkpoints and metrics.

Per step there is no host synchronisation: loss and accuracy are summed on the
device (`EpochMeter`) and read once per log interval. Each epoch ends with the
evaluations (evaluations.py), a metrics.csv row (and TensorBoard scalars) and an
atomic last.pt (and best.pt, by the selection figure); with
`train.checkpoint_every`, last.pt is also written inside epochs.
On CPU with the same seed, a run resumed from last.pt ends with exactly the
weights of a run that never stopped, wherever it stopped: the data order is a
function of (seed, epoch), the augmentation of (seed, epoch, batch), and the lr
of the step, so a resumed epoch skips the batches it has done without loading them.

Stop signals (SIGINT, SIGTERM, SIGUSR1) finish the current step, write last.pt
at it and raise Interrupted (exit 128 + signal); a second signal stops at once.
"""

from __future__ import annotations

import errno
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import save_checkpoint
from ..config import parse_interval, to_yaml
from ..data.augment import hard_labels
from ..errors import BadInput, Interrupted, RunFailed
from ..files import atomic_write_text
from ..models.resnet import stage_of
from .trackers import Trackers
from .build import Run, build_run
from .distributed import from_env
from .evaluate import evaluate
from .evaluations import METRICS, epoch_fields, evaluations, split_name, metric_fields, selection_metric
from .progress import Progress
from .rundir import RunLock, claim_run_dir, create_run_dir, remove_own_temporaries, run_name, write_metrics
from .state import RunState, StopRules, invocation_done, reaches_target

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")  # Ctrl-C; SLURM, Kubernetes, timeout, torchrun; SLURM --signal
INPUT_BOUND = 0.2  # the share of an epoch's steps spent waiting for decoded batches that train reports


def stage_grad_norms(model: torch.nn.Module) -> dict[str, float]:
    """L2 norm of the conv/fc weight gradients per stage (stem, conv2_x, ..., fc)."""
    groups: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if p.grad is None or p.ndim < 2:
            continue
        groups.setdefault(stage_of(name), []).append(p.grad.detach().float().pow(2).sum())
    return {f"grad_norm_{k}": torch.stack(v).sum().sqrt().item() for k, v in groups.items()}


class EpochMeter:
    """An epoch's running loss and accuracy, summed on the device; a run saved mid-epoch resumes its sums."""

    def __init__(self, partial: dict[str, Any], device: torch.device) -> None:
        self.start = int(partial.get("batch", 0))  # the first batch this process runs
        self.loss_sum = torch.tensor(float(partial.get("loss_sum", 0.0)), device=device)
        self.correct = torch.tensor(int(partial.get("correct", 0)), dtype=torch.int64, device=device)
        self.seen_before = self.seen = int(partial.get("seen", 0))
        self.prior_seconds = float(partial.get("seconds", 0.0))
        self.finite: list[torch.Tensor] = []  # per-step flags of the current log interval
        self.t0 = time.perf_counter()
        self.elapsed: float | None = None  # set when the epoch's steps are done (`stop_clock`)
        self.waited = 0.0  # seconds the loop waited for batches, after the first (`timed`)
        self.first_at: float | None = None  # when the first batch arrived

    def timed(self, batches):
        """`batches`, with the time the loop waits for each counted in `waited`; the first batch's wait (workers
        starting) is left out, so that `input_share` measures the loader's pace, not its start-up."""
        it = iter(batches)
        while True:
            asked = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            now = time.perf_counter()
            if self.first_at is None:
                self.first_at = now
            else:
                self.waited += now - asked
            yield batch

    def input_share(self) -> tuple[float, float]:
        """(seconds waited for batches, seconds since the first batch arrived) of this epoch's steps."""
        steady = self.seconds() - ((self.first_at or self.t0) - self.t0)
        return self.waited, steady

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        loss = loss.float()
        self.seen += len(y)
        self.finite.append(torch.isfinite(loss))
        self.loss_sum += loss * len(y)
        self.correct += (logits.argmax(1) == hard_labels(y)).sum()

    def first_nonfinite(self) -> int:
        """Index, in the current interval, of its first step with a non-finite loss (the last if none)."""
        flags = torch.stack(self.finite)
        return int((~flags).nonzero()[0].item()) if not flags.all() else len(self.finite) - 1

    def seconds(self) -> float:
        """Seconds of this process's steps in the epoch so far."""
        return self.elapsed if self.elapsed is not None else time.perf_counter() - self.t0

    def stop_clock(self) -> None:
        self.elapsed = time.perf_counter() - self.t0

    def partial(self, batch: int) -> dict[str, Any]:
        """What a mid-epoch checkpoint keeps of this epoch (RunState.partial)."""
        return {"batch": batch, "loss_sum": self.loss_sum.item(), "correct": int(self.correct.item()),
                "seen": self.seen, "seconds": self.prior_seconds + self.seconds()}

    def row(self, lr: float, process, grad_norms: dict[str, float]) -> dict[str, float]:
        """The epoch's training columns, summed over every rank."""
        seconds = self.seconds()
        totals = torch.stack([self.loss_sum.double(), self.correct.double(),
                              torch.tensor(float(self.seen), device=self.loss_sum.device, dtype=torch.float64)])
        (totals,) = process.all_reduce([totals])
        loss, correct, seen = totals.tolist()
        return {"lr": lr, "train_loss": loss / seen, "train_top1": correct / seen,
                "seconds": self.prior_seconds + seconds,
                "img_per_s": (seen - self.seen_before * process.world) / seconds, **grad_norms}


@dataclass(frozen=True)
class Resumed:
    """What a restored checkpoint planned, and what the resume changed."""

    lr: float  # the lr the saved plan has at the resume point
    planned_total: int  # the run length it was planned for
    rule: str  # what a changed run length did to the schedule ("" when unchanged)


class Trainer:
    """Trains a built `Run`: its state in one `RunState`, its stop rules in `StopRules`."""

    def __init__(self, run: Run, progress: Progress | None = None) -> None:
        self.run, self.cfg = run, run.cfg
        self.progress = progress or Progress()
        self.state = RunState()
        self.selection = selection_metric(run.cfg)
        self.rules = StopRules(run.plan.total_steps, self.selection, run.cfg.train.patience,
                               run.cfg.train.stop_at_target)
        self.lr_at = run.schedule()
        self.run_dir: Path | None = None
        self.trackers = Trackers((), self.progress.line)  # rank 0's, once the run folder is open
        self.stop_signal = 0  # the stop signal received (SIGINT, SIGTERM, SIGUSR1), 0 while none
        self.every_steps, self.every_seconds = parse_interval(run.cfg.train.checkpoint_every)
        self._saved_at = (0, time.monotonic())  # (step, clock) of the last checkpoint, for checkpoint_every
        self._said_input_bound = False  # the input-bound line is said once per invocation
        self.lock: RunLock | None = None  # rank 0's hold on the run folder while it trains

    @classmethod
    def for_config(cls, cfg, progress: Progress | None = None) -> "Trainer":
        """A trainer of `cfg` in this process (benchmarks, tests; `resnet train` goes through session.py)."""
        progress = progress or Progress(enabled=False)
        return cls(build_run(cfg, from_env(cfg.run.device), progress), progress)

    # ------------------------------------------------------------ state and files
    def restore(self, ckpt: dict[str, Any]) -> Resumed:
        """Continue from a training checkpoint, its schedule re-laid for a changed run length (LRSchedule.resized)."""
        self.run.load_state_dict(ckpt)
        self.state = RunState.from_checkpoint(ckpt)
        self.lr_at = self.run.schedule(self.run.saved_plan(ckpt))
        lr, planned_total = self.lr_at(self.state.step), self.lr_at.end()
        return Resumed(lr, planned_total, self.lr_at.resized(self.state.step, self.run.plan.total_steps))

    def checkpoint(self) -> dict[str, Any]:
        best = self.rules.best_row(self.state.rows)
        return {**self.run.state_dict(), **self.state.to_checkpoint(self.wall_seconds()),
                "scheduler": {"step": self.state.step, "plan": self.lr_at.plan()},
                "best_top1": best[self.selection] if best else -1.0, "finished": self.finished}

    def open_run_dir(self, run_dir: Path | None = None) -> Path:
        """Rank 0 creates the run folder (numbered when the name is taken; exactly run_dir/name under
        run.resume auto) or takes over `run_dir` (resuming), and writes config.yaml; every rank then knows the
        folder and must see it (checkpoints written by global rank 0 are read by every rank on a resume)."""
        process = self.run.process
        if process.is_main:
            run_dir = self._make_run_dir(run_dir)
            atomic_write_text(run_dir / "config.yaml", to_yaml(self.cfg))
        self.run_dir = run_dir = Path(process.broadcast(str(run_dir) if process.is_main else None))
        if process.max(int(not run_dir.is_dir())):
            raise BadInput(f"run folder {run_dir} was made by global rank 0 but other ranks do not see it: put "
                           "run.run_dir on a file system every node shares, so that a resume finds last.pt")
        if process.is_main and self.run.trackers:
            self.trackers = Trackers(self.run.trackers, self.progress.line)
            self.trackers.start(run_dir, self.cfg, self.state.step, str(self.run.device))
        return run_dir

    def _make_run_dir(self, run_dir: Path | None) -> Path:
        """The folder, locked for this process (RunLock); resuming, what a kill mid-write left is removed."""
        if run_dir is None and self.cfg.run.resume == "auto":  # exactly the name: a restart finds it
            run_dir = claim_run_dir(self.cfg.run.run_dir, run_name(self.cfg))
        elif run_dir is None:
            run_dir = create_run_dir(self.cfg.run.run_dir, run_name(self.cfg))
        wait = self.cfg.run.lock_wait if self.cfg.run.lock_wait >= 0 else 120.0 if self.cfg.run.resume == "auto" else 0
        self.lock = RunLock(run_dir, wait, on_unlocked=self.progress.line)
        remove_own_temporaries(run_dir)
        return run_dir

    def close(self) -> None:
        """Let another process train in the folder (the lock); the trainer is done."""
        if self.lock is not None:
            self.lock.release()

    def save(self, improved: bool = False) -> None:
        """last.pt (and best.pt when `improved`), atomically: a failed write leaves the previous file intact.
        Rank 0 writes; every rank restarts the checkpoint_every clock (else the others would find a save due at
        every step once it has passed)."""
        self._saved_at = (self.state.step, time.monotonic())
        if not self.run.process.is_main:
            return
        assert self.run_dir is not None
        state = self.checkpoint()
        try:
            save_checkpoint(self.run_dir / "last.pt", state)
            if improved and self.cfg.run.save_best:
                save_checkpoint(self.run_dir / "best.pt", state)
        except OSError as e:
            why = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise RunFailed(f"could not save a checkpoint in {self.run_dir} ({why}); the previous last.pt is intact: "
                            f"make room, then resume with: {self.resume_command()}") from None

    def wall_seconds(self) -> float:
        """Wall time of the run so far, across resumes: process start-up, data, compilation, evaluation."""
        return self.state.prior_wall + time.perf_counter() - self.run.started

    @property
    def finished(self) -> bool:
        return self.rules.finished(self.state)

    # ------------------------------------------------------------ stopping
    def resume_command(self) -> str:
        """What to type to go on, quoted for a shell: a run folder's path may hold spaces or `$`."""
        import shlex

        return f"resnet train --resume {shlex.quote(str(self.run_dir))}"

    def _on_signal(self, signum, frame) -> None:
        if self.stop_signal:  # a second signal: stop now, without a checkpoint
            raise self._said(Interrupted(f"stopped at once by a second {signal.Signals(signum).name}; no checkpoint "
                                         f"was written since the last one. Resume with: {self.resume_command()}",
                                         signum))
        self.stop_signal = signum

    def _interrupted(self, where: str) -> Interrupted:
        name = signal.Signals(self.stop_signal).name
        note = "" if name == "SIGINT" else f" ({name})"
        return self._said(Interrupted(f"checkpoint saved {where}{note}; resume with: {self.resume_command()}",
                                      self.stop_signal))

    def _said(self, stop: Interrupted) -> Interrupted:
        """Every rank stops with the same exit code; rank 0 alone prints the line (the others' would repeat it)."""
        return stop if self.run.process.is_main else Interrupted("", stop.exit_code - 128)

    def _nonfinite(self, epoch: int, step: int, value: float) -> RunFailed:
        last = f"{self.run_dir}/last.pt (epoch {self.state.epoch})" if self.state.rows else "none yet"
        return RunFailed(f"loss became {value} at epoch {epoch}, step {step}; stopped. Last good checkpoint: "
                         f"{last}. Lower the lr, or set train.skip_nonfinite=N to skip up to N bad steps")

    def _checkpoint_due(self) -> bool:
        """train.checkpoint_every: N steps, or N seconds of this process's training, since the last checkpoint."""
        step, clock = self._saved_at
        if self.every_steps:
            return self.state.step - step >= self.every_steps
        return bool(self.every_seconds) and time.monotonic() - clock >= self.every_seconds

    # ------------------------------------------------------------ the loop
    def fit(self) -> None:
        """Train to the end (or from a restored state). A stop signal saves a checkpoint at the next step
        boundary and raises Interrupted (exit 128 + signal)."""
        self.stop_signal = 0
        previous = {}
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for name in STOP_SIGNALS:
                if hasattr(signal, name):
                    previous[name] = signal.signal(getattr(signal, name), self._on_signal)
        try:
            first = self.state.epoch
            while not self.finished and not invocation_done(self.state.epoch, first, self.cfg.run.stop_after_epochs):
                self.end_epoch(self.train_epoch())
        finally:
            for name, handler in previous.items():
                signal.signal(getattr(signal, name), handler)
            self.trackers.end(self.wall_seconds(), str(self.run.device), self.finished)

    def train_epoch(self) -> dict[str, float]:
        """One epoch of steps (the rest of one, after a mid-epoch resume); its training columns."""
        run, state, t = self.run, self.state, self.cfg.train
        run.model.train()
        epoch = state.epoch + 1
        meter = EpochMeter(state.partial, run.device)
        steps = min(run.plan.steps_per_epoch, run.plan.total_steps - (state.step - meter.start))
        grad_norms: dict[str, float] = {}
        lr = self.lr_at(state.step)
        self.progress.start_epoch(epoch, run.plan.epochs, steps)
        try:
            for i, (x, y) in enumerate(meter.timed(run.train_loader.batches(epoch, meter.start)), start=meter.start):
                if i >= steps:
                    break
                lr = self.lr_at(state.step)
                capture = (lambda: grad_norms.update(stage_grad_norms(run.model))) \
                    if t.log_grad_norms and i == steps - 1 else None
                run.seed_step(state.step)
                out = run.step(x, y, lr, check_finite=t.skip_nonfinite > 0, after_backward=capture)
                if not out.updated:  # train.skip_nonfinite: the loss was NaN/Inf, no update was made
                    self._skip(epoch, out.loss)
                    continue
                state.step += 1
                self.progress.advance(i + 1)
                if run.ema is not None:
                    run.ema.update()
                meter.add(out.loss, out.logits, y)
                at_interval = (i + 1) % t.log_interval == 0 or i + 1 == steps
                if at_interval:
                    self._log(meter, epoch, i + 1, steps, lr)
                self._stop_or_save_inside(meter, epoch, i + 1, steps, at_interval)
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)
            meter.stop_clock()
        finally:
            self.progress.end_epoch()
        state.partial = {}
        self._say_if_input_bound(meter, epoch)
        return meter.row(lr, run.process, grad_norms)

    def _say_if_input_bound(self, meter: EpochMeter, epoch: int) -> None:
        """Once per invocation: the steps of an epoch waited for decoding workers (image folders, shards) for
        INPUT_BOUND of their time or more, so more workers (or faster storage) would train faster."""
        workers = getattr(self.run.train_loader, "workers", None)  # None: the data lives on the device
        waited, steady = meter.input_share()
        if workers is None or self._said_input_bound or steady <= 0 or waited < INPUT_BOUND * steady:
            return
        self._said_input_bound = True
        decoders = f"data.workers={workers}" if workers else "data.workers=0 (decoding in the training process)"
        import shlex

        where = shlex.quote(self.cfg.data.data_dir) if self.cfg.data.data_dir else "DATA_DIR"
        self.progress.line(f"input-bound: the steps waited for decoded batches {waited / steady:.0%} of epoch "
                           f"{epoch} ({waited:.2f} of {steady:.2f} s) with {decoders}; `resnet data bench {where}` "
                           "says how many workers would keep up")

    def _skip(self, epoch: int, loss: torch.Tensor) -> None:
        """A step without an update: counted, so that epochs and the schedule keep their length."""
        state, limit = self.state, self.cfg.train.skip_nonfinite
        state.skipped += 1
        if state.skipped > limit:
            raise self._nonfinite(epoch, state.step + 1, loss.item())
        self.progress.line(f"skipping step {state.step + 1} of epoch {epoch}: loss {loss.item()} "
                           f"({state.skipped}/{limit} skips used)")
        state.step += 1

    def _log(self, meter: EpochMeter, epoch: int, done: int, steps: int, lr: float) -> None:
        """The log interval: the one host sync, a progress update, and a non-finite loss stops the run."""
        process = self.run.process
        avg = process.all_reduce([meter.loss_sum])[0].item() / process.world / meter.seen
        if not math.isfinite(avg):
            raise self._nonfinite(epoch, self.state.step - len(meter.finite) + meter.first_nonfinite() + 1, avg)
        meter.finite.clear()
        self.progress.update(done, steps, avg, meter.correct.item() / meter.seen, lr,
                             (meter.seen - meter.seen_before) * process.world / meter.seconds(), meter.start)

    def _stop_or_save_inside(self, meter: EpochMeter, epoch: int, done: int, steps: int, at_interval: bool) -> None:
        """A stop signal (agreed by every rank) or train.checkpoint_every: last.pt at this step, mid-epoch."""
        stop = self.run.process.stop_agreed(self.stop_signal, at_interval)
        if at_interval:
            self.stop_signal = stop or self.stop_signal
        if not (stop or self._checkpoint_due()) or done >= steps:
            return
        self.state.partial = meter.partial(done)
        self.save()  # rank 0 writes; a checkpoint_every save needs no other rank
        self.state.partial = {}
        if stop:
            self.run.process.barrier()  # the others wait for rank 0's file before they exit
            raise self._interrupted(f"at epoch {epoch}, step {self.state.step}")

    def evaluate_all(self) -> dict[str, float]:
        """This epoch's evaluations as metrics.csv columns (evaluations.py), and their time together."""
        run = self.run
        weights = {"raw": (run.model, run.eval_forward)}
        if run.ema is not None:  # the average is evaluated eagerly: it is not what the compiled step calls
            weights["ema"] = (run.ema.module, run.ema.module)
        out: dict[str, float] = {"eval_seconds": 0.0}
        for ev in evaluations(self.cfg):
            model, forward = weights[ev.weights]
            shown = ("ema " if ev.weights == "ema" else "") + split_name(self.cfg.data.dataset, ev.split)
            with self.progress.evaluation(shown) as on_batch:
                res = evaluate(model, run.eval_loaders[ev.split], self.cfg.model.num_classes, run.device,
                               run.speed.precision, all_reduce=run.process.all_reduce, forward=forward,
                               on_batch=on_batch)
            out.update({ev.column(m): getattr(res, m) for m in METRICS})
            out["eval_seconds"] += res.seconds  # evaluate() waits for the device before it stops its clock
        return out

    def end_epoch(self, stats: dict[str, float]) -> None:
        """Evaluate, record the row, save (best.pt when it is the best), report; stop on an agreed signal."""
        state, process = self.state, self.run.process
        state.epoch += 1
        row = {"epoch": state.epoch, "step": state.step, **stats, **self.evaluate_all()}
        state.rows.append(row)
        goal = self.cfg.train.target_top1
        if state.target is None and reaches_target(row, self.selection, goal):
            state.target = {"top1": goal, "epoch": state.epoch, "step": state.step,
                            "seconds": round(self.wall_seconds(), 2), "metric": self.selection}
        self.save(improved=self.rules.best_row(state.rows) is row)  # the first of equals stays best
        if process.is_main:
            write_metrics(self.run_dir / "metrics.csv", state.rows, metric_fields(self.cfg))
            self.trackers.epoch(row)
            self._report_epoch(row)
        # A signal during evaluation: all ranks stop, or none. The decision is the agreed value, never
        # self.stop_signal read again: a signal landing after the all-reduce would stop this rank alone.
        stop = process.max(self.stop_signal)
        self.stop_signal = stop or self.stop_signal
        if stop and not self.finished:
            raise self._interrupted(f"at the end of epoch {state.epoch}")

    def _report_epoch(self, row: dict) -> None:
        self.progress.epoch(row, epoch_fields(row, self.cfg, self.run.plan.epochs))
        target, goal = self.state.target, self.cfg.train.target_top1
        if target is not None and target["epoch"] == row["epoch"]:
            self.progress.line(f"reached {self.selection} >= {goal:.2%} at epoch {row['epoch']} (step "
                               f"{row['step']}), {target['seconds']:.1f} s after the start")
        if self.rules.stopped_early(self.state):
            best = self.rules.best_row(self.state.rows)
            self.progress.line(f"stopping early: no better {self.selection} for {self.cfg.train.patience} "
                               f"epochs (best {best[self.selection]:.2%} at epoch {best['epoch']})")
