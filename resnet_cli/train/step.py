"""One training step, written once for `train`, `bench` and the benchmarks.

forward under autocast -> loss -> backward (scaled under fp16) -> optional gradient clipping ->
optimizer step. With `accum_steps` K > 1 the batch is split into K micro-batches whose gradients
add up (each loss divided by K) before the one update; under DDP only the last one all-reduces. Nothing in it
reads a value back to the host unless asked to (`check_finite`), so a step is a stream of kernel launches the
GPU can run ahead of Python.

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
    """SGD, AdamW or LAMB from a `train` config section, over the parameters that train (frozen ones have no
    gradient and no weight decay): fused kernels on CUDA, foreach (multi-tensor) on CPU; LAMB's are foreach on
    either (lamb.py)."""
    groups = param_groups(model, t.weight_decay, t.no_wd_bn_bias)
    if t.optimizer == "lamb":
        from .lamb import Lamb

        return Lamb(groups, lr=t.lr)
    kernels = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr, betas=(0.9, 0.999), eps=1e-8, **kernels)
    return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, **kernels)


KERNEL_FLAGS = ("fused", "foreach", "capturable")  # how an optimizer runs here, not what it has learnt


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """An optimizer's saved state, fitted to this process: its kernel flags stay the ones chosen here (a CPU
    checkpoint saved foreach; resumed on CUDA it runs fused), and each state tensor of a parameter's shape
    (momentum, Adam's moments) takes the parameter's memory layout (train.channels_last may have changed). Adam's
    `step` counters go where the kernels read them: on the parameter's device for fused (and capturable, CUDA
    graphs) kernels, on the host for foreach ones, whichever device saved them."""
    flags = [{k: g[k] for k in KERNEL_FLAGS if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, flags):
        group.update(kept)
    for p, saved in optimizer.state.items():
        for k, v in saved.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                saved[k] = torch.empty_like(p).copy_(v)  # empty_like keeps p's strides
    for group in optimizer.param_groups:  # load_state_dict placed `step` by the *saved* groups' flags
        on_device = bool(group.get("fused") or group.get("capturable"))
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if not torch.is_tensor(step):
                continue
            if on_device and step.device != p.device:  # a CPU (foreach) checkpoint resumed fused on CUDA
                optimizer.state[p]["step"] = step.to(p.device, torch.float32)
            elif not on_device and step.device.type != "cpu":  # a fused CUDA checkpoint resumed foreach on CPU
                optimizer.state[p]["step"] = step.to("cpu", torch.float32)


class StepResult(NamedTuple):
    loss: torch.Tensor  # detached, on the device
    logits: torch.Tensor
    updated: bool  # False when `check_finite` found the loss NaN/Inf and skipped the update


class TrainStep:
    """forward, loss, backward, clip, optimizer step: `step(x, y, lr)` -> StepResult of device tensors."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, speed: Speed,
                 device: torch.device, criterion: Callable[..., torch.Tensor] | None = None, grad_clip: float = 0.0,
                 call_module: torch.nn.Module | None = None,
                 on_fallback: Callable[[BaseException], None] | None = None, accum_steps: int = 1,
                 all_true: Callable[[bool], bool] | None = None,
                 on_graph_fallback: Callable[[BaseException], None] | None = None) -> None:
        self.model, self.optimizer, self.speed, self.device = model, optimizer, speed, device
        self.criterion = criterion or torch.nn.CrossEntropyLoss()  # takes class indices or soft targets
        self.grad_clip = grad_clip
        self.accum_steps = accum_steps
        # check_finite's verdict, agreed by every process (Process.all_true): under DDP one rank must not skip a
        # backward the others all-reduce
        self.all_true = all_true or bool
        self._unscaled = False  # fp16: gradients already divided by the loss scale in this step
        self.ddp = call_module if hasattr(call_module, "no_sync") else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=speed.precision == "fp16")
        # DDP (when given) wraps the module; compilation wraps whatever is called.
        self.forward = speed.forward(call_module if call_module is not None else model, on_fallback)
        self.graph = None  # speed.cuda_graphs: the whole step replayed from a CUDA graph (graphs.py)
        if speed.cuda_graphs:
            from .graphs import StepGraph

            self.graph = StepGraph(self, on_graph_fallback)

    # The three phases, public so that `bench --detail` times exactly these.
    def forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.speed.autocast(self.device):
            logits = self.forward(x)
            loss = self.criterion(logits, y)
        return loss, logits

    def backward(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()

    def unscale(self) -> None:
        """fp16: divide the gradients by the loss scale (once per step), so that they are the true gradients."""
        if self.scaler.is_enabled() and not self._unscaled:
            self.scaler.unscale_(self.optimizer)
            self._unscaled = True

    def update(self, lr: float | None = None) -> None:
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        if self.grad_clip > 0:
            self.unscale()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._unscaled = False

    def _zeroed_grads(self) -> None:
        """Every gradient a zeroed buffer of its own (allocated once), which backward adds into in place."""
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                else:
                    p.grad.zero_()

    def _finite(self, loss: torch.Tensor) -> bool:
        return self.all_true(bool(torch.isfinite(loss).item()))

    def _inspect(self, after_backward: Callable[[], Any] | None) -> None:
        """Gradient logging sees the true gradients (unscaled under fp16), between backward and the update."""
        if after_backward is not None:
            self.unscale()
            after_backward()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float | None = None, *, check_finite: bool = False,
                 after_backward: Callable[[], Any] | None = None) -> StepResult:
        """One step. `check_finite` reads the loss back first (a host sync) and skips the update when it is
        NaN or Inf. `after_backward` runs between backward and the update (gradient logging)."""
        if self.accum_steps > 1:
            return self._accumulated(x, y, lr, check_finite, after_backward)
        if self.graph is not None and not check_finite and (after_backward is None or not self.grad_clip):
            replayed = self.graph.run(x, y, lr)
            if replayed is not None:
                if after_backward is not None:  # the graph's gradients: the update leaves them as backward made them
                    after_backward()
                return StepResult(*replayed, True)
        try:
            return self._plain_step(x, y, lr, check_finite, after_backward)
        except torch.cuda.OutOfMemoryError:
            if self.graph is None or self.graph.graph is None:
                raise
            self.graph.release()  # its pool left room for one set of activations too few: run without it
            return self._plain_step(x, y, lr, check_finite, after_backward)

    def _plain_step(self, x, y, lr, check_finite, after_backward) -> StepResult:
        loss, logits = self.forward_loss(x, y)
        if check_finite and not self._finite(loss):
            return StepResult(loss.detach(), logits.detach(), False)
        self.backward(loss)
        self._inspect(after_backward)
        self.update(lr)
        return StepResult(loss.detach(), logits.detach(), True)

    def plain(self, x: torch.Tensor, y: torch.Tensor, lr: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """forward, backward, update: what a CUDA graph captures (and its warm-up steps run)."""
        loss, logits = self.forward_loss(x, y)
        self.backward(loss)
        self.update(lr)
        return loss.detach(), logits.detach()

    def _accumulated(self, x, y, lr, check_finite, after_backward) -> StepResult:
        """K micro-batches, one update. Under CUDA graphs (compile_mode reduce-overhead or max-autotune) each
        micro-batch replays the same graphs: a new step is marked before each, its outputs are copied out before
        the next overwrites them, and the gradients are accumulated into buffers that live outside the graphs'
        memory (zeroed, not freed), so that a replay's gradient outputs are added, never adopted."""
        k, graphed = self.accum_steps, self.speed.cuda_graphed(self.device)
        if graphed:
            self._zeroed_grads()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        losses, outputs = [], []
        for i, (xs, ys) in enumerate(zip(x.chunk(k), y.chunk(k))):
            last = i == k - 1
            if graphed:
                torch.compiler.cudagraph_mark_step_begin()
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                loss, logits = self.forward_loss(xs, ys)
                self.scaler.scale(loss / k).backward()
            losses.append(loss.detach().clone() if graphed else loss.detach())
            outputs.append(logits.detach().clone() if graphed else logits.detach())
        loss, logits = torch.stack(losses).mean(), torch.cat(outputs)
        if check_finite and not self._finite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(loss, logits, False)
        self._inspect(after_backward)
        self.update(lr)
        return StepResult(loss, logits, True)
