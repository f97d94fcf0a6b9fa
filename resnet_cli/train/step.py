"""One training step, written once for `train`, `bench` and the benchmarks.

forward under autocast -> loss -> backward (scaled under fp16) -> optional gradient clipping ->
optimizer step. With `accum_steps` K > 1 the batch is split into K micro-batches whose gradients
add up (each loss divided by K) before the one update; under DDP only the last one all-reduces. Nothing in it reads a value back to the host unless asked to (`check_finite`), so a
step is a stream of kernel launches the GPU can run ahead of Python.

The module that trains stays a plain `nn.Module` (`TrainStep.model`): evaluation, checkpoints and
gradient logging use it. What is called in the step (`TrainStep.forward`) may be the module under
DDP and/or its compiled forward (speed.py); only the step and evaluation call it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, NamedTuple

import torch

from ..speed import Speed


def param_groups(model: torch.nn.Module, weight_decay: float, no_wd_bn_bias: bool) -> list[dict]:
    """Parameters with and without weight decay (BatchNorm and bias exempt when `no_wd_bn_bias`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_wd_bn_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, t, device: torch.device) -> torch.optim.Optimizer:
    """SGD or AdamW from a `train` config section, over the parameters that train (frozen ones have no
    gradient and no weight decay): fused kernels on CUDA, foreach (multi-tensor) on CPU."""
    groups = param_groups(model, t.weight_decay, t.no_wd_bn_bias)
    kernels = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr, betas=(0.9, 0.999), eps=1e-8, **kernels)
    return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, **kernels)


class StepResult(NamedTuple):
    loss: torch.Tensor  # detached, on the device
    logits: torch.Tensor
    updated: bool  # False when `check_finite` found the loss NaN/Inf and skipped the update


class TrainStep:
    """forward, loss, backward, clip, optimizer step: `step(x, y, lr)` -> StepResult of device tensors."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, speed: Speed,
                 device: torch.device, criterion: Callable[..., torch.Tensor] | None = None, grad_clip: float = 0.0,
                 call_module: torch.nn.Module | None = None,
                 on_fallback: Callable[[BaseException], None] | None = None, accum_steps: int = 1) -> None:
        self.model, self.optimizer, self.speed, self.device = model, optimizer, speed, device
        self.criterion = criterion or torch.nn.CrossEntropyLoss()  # takes class indices or soft targets
        self.grad_clip = grad_clip
        self.accum_steps = accum_steps
        self.ddp = call_module if hasattr(call_module, "no_sync") else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=speed.precision == "fp16")
        # DDP (when given) wraps the module; compilation wraps whatever is called.
        self.forward = speed.forward(call_module if call_module is not None else model, on_fallback)

    # The three phases, public so that `bench --detail` times exactly these.
    def forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.speed.autocast(self.device):
            logits = self.forward(x)
            loss = self.criterion(logits, y)
        return loss, logits

    def backward(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()

    def update(self, lr: float | None = None) -> None:
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float | None = None, *, check_finite: bool = False,
                 after_backward: Callable[[], Any] | None = None) -> StepResult:
        """One step. `check_finite` reads the loss back first (a host sync) and skips the update when it is
        NaN or Inf. `after_backward` runs between backward and the update (gradient logging)."""
        if self.accum_steps > 1:
            return self._accumulated(x, y, lr, check_finite, after_backward)
        loss, logits = self.forward_loss(x, y)
        if check_finite and not torch.isfinite(loss).item():
            return StepResult(loss.detach(), logits.detach(), False)
        self.backward(loss)
        if after_backward is not None:
            after_backward()
        self.update(lr)
        return StepResult(loss.detach(), logits.detach(), True)

    def _accumulated(self, x, y, lr, check_finite, after_backward) -> StepResult:
        k = self.accum_steps
        self.optimizer.zero_grad(set_to_none=True)
        losses, outputs = [], []
        for i, (xs, ys) in enumerate(zip(x.chunk(k), y.chunk(k))):
            last = i == k - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                loss, logits = self.forward_loss(xs, ys)
                self.scaler.scale(loss / k).backward()
            losses.append(loss.detach())
            outputs.append(logits.detach())
        loss, logits = torch.stack(losses).mean(), torch.cat(outputs)
        if check_finite and not torch.isfinite(loss).item():
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(loss, logits, False)
        if after_backward is not None:
            after_backward()
        self.update(lr)
        return StepResult(loss, logits, True)
