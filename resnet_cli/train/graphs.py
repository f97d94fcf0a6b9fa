"""The whole training step as one CUDA graph: forward, loss, backward, gradient clipping and the optimizer.

On a big GPU a small ResNet's step is bound by the host: Python, autograd and hundreds of kernel launches per step
(BENCHMARKS.md). A CUDA graph records the step's kernels once and replays them with one launch. What changes
from step to step lives in device memory the graph reads: the batch (copied into the graph's input), the
learning rate (a device tensor the fused optimizer reads, filled before each replay), the weights, the
optimizer's state and BatchNorm's statistics (updated in place). The graph's outputs (loss, logits) are read by
the loop before the next replay overwrites them.

How a step is graphed (`StepGraph`): the first `WARMUP` steps run eagerly on a side stream (they are real
steps: cuDNN picks its kernels, torch.compile compiles, the optimizer makes its state, autograd its buffers), the
next step is captured and replayed, and every later step of the same shape is a replay. A batch of another shape or
a step that must read the loss back (train.skip_nonfinite) runs the plain step; one that logs gradients replays
and reads the graph's gradient buffers (unless gradients are clipped: clipping rewrites them in place).

Memory: the captured step keeps its activations in a pool of its own (`pool_bytes`), so a plain step after the
capture needs a second set beside it. Where that runs out of memory (a batch of another shape late in a run that
fits eagerly), the graph is released, its pool returned, and the step runs again without it (`release`), after
one line; the run goes on eagerly rather than dying.

`train.cuda_graphs` (`resolve`): auto turns graphs on where they apply: a CUDA device, a plain process (not
under torchrun: DDP's all-reduce would need NCCL stream capture and static buckets; not done), no gradient
accumulation, no fp16 loss scaling (GradScaler decides on the host), no train.skip_nonfinite, and no compile
mode that brings CUDA graphs of its own (reduce-overhead, max-autotune). `on` where they cannot apply is an error; a capture that fails is
not: the run goes on with the plain step, after one line.

The capture restricts only its own thread (capture_error_mode "thread_local"): a DataLoader's pin-memory thread
keeps pinning the next batches meanwhile (cudaHostAlloc, event queries), which in the default "global" mode
would invalidate the capture and then fail the pin thread, whose error the DataLoader raises at the next batch.
Nothing another thread does lands in the graph: capture follows the capturing stream, not the process.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import BadInput, Interrupted
from ..speed import GRAPHED_COMPILE_MODES

WARMUP = 3  # eager steps before the capture (PyTorch's whole-network capture recipe uses a few)
CAPTURE_MODE = "thread_local"  # other threads (the loader's pin-memory thread) may call CUDA during the capture


def resolve(setting: str, device: torch.device, *, precision: str, torchrun: bool, accum_steps: int,
            skip_nonfinite: int, compile_mode: str, compile: bool) -> bool:
    """train.cuda_graphs (auto, on, off) decided for a run: whether its step is replayed from a CUDA graph."""
    if setting == "off":
        return False
    reasons = []
    if device.type != "cuda":
        reasons.append("a CUDA device")
    if torchrun:
        reasons.append("a process outside torchrun (DDP's all-reduce is not captured)")
    if accum_steps > 1:
        reasons.append("train.accum_steps 1")
    if precision == "fp16":
        reasons.append("no fp16 loss scaling (use bf16)")
    if skip_nonfinite:
        reasons.append("train.skip_nonfinite 0 (it reads every loss back)")
    if compile and compile_mode in GRAPHED_COMPILE_MODES:
        reasons.append(f"a compile mode without CUDA graphs of its own (not {compile_mode})")
    if reasons and setting == "on":
        raise BadInput(f"train.cuda_graphs on needs {', '.join(reasons)}; set it to auto or off")
    return not reasons


class StepGraph:
    """A `TrainStep` replayed from a CUDA graph (see the module's docstring); `None` from `run` where it does not
    apply, and the caller takes the plain step."""

    def __init__(self, step, on_fallback: Callable[[BaseException], None] | None = None,
                 on_capture: Callable[[], None] | None = None,
                 on_release: Callable[[int], None] | None = None) -> None:
        self.step = step  # the TrainStep whose parts are captured
        self.on_fallback, self.on_capture, self.on_release = on_fallback, on_capture, on_release
        self.calls = 0
        self.replays = 0  # steps replayed from the graph in this process (train's result and bench report it)
        self.pool_bytes = 0  # device memory the capture reserved: the graph's pool, beside the plain step's
        self.failed = False
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: dict[str, Any] = {}
        self.side: torch.cuda.Stream | None = None

    def run(self, x: torch.Tensor, y: torch.Tensor, lr: float | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The step on (x, y) as a replay (loss, logits), or None where the plain step must run."""
        if self.failed:
            return None
        if self.graph is not None:
            return self._replay(x, y, lr) if self._fits(x, y) else None
        self.calls += 1
        if self.calls <= WARMUP:
            return self._warm(x, y, lr)
        try:
            self._capture(x, y, lr)
        except Interrupted:  # a stop signal that landed during the capture stops the run, as anywhere else
            self._give_up(None)
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to capture: the plain step, never a dead run
            self._give_up(exc)
            return None
        if self.on_capture is not None:
            self.on_capture()
        return self._replay(x, y, lr)

    def _fits(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """A batch the captured graph can take: the shapes (and label type) it was captured with."""
        sx, sy = self.static["x"], self.static["y"]
        return x.shape == sx.shape and y.shape == sy.shape and y.dtype == sy.dtype

    def _warm(self, x, y, lr):
        """A real step on a side stream, as the capture recipe asks (autograd's and cuDNN's first allocations)."""
        if self.step.device.type != "cuda":
            return self.step.plain(x, y, lr)
        self.side = self.side or torch.cuda.Stream(self.step.device)
        self.side.wait_stream(torch.cuda.current_stream(self.step.device))
        with torch.cuda.stream(self.side):
            loss, logits = self.step.plain(x, y, lr)
        torch.cuda.current_stream(self.step.device).wait_stream(self.side)
        return loss, logits

    def _capture(self, x, y, lr) -> None:
        step, device = self.step, self.step.device
        groups = step.optimizer.param_groups
        lr_now = float(lr if lr is not None else groups[0]["lr"])
        self.static = {"x": torch.empty_like(x), "y": torch.empty_like(y),
                       "lr": torch.tensor(lr_now, dtype=torch.float32, device=device)}
        saved = [{"lr": g["lr"], "capturable": g.get("capturable")} for g in groups]
        for g in groups:  # the graph reads the lr from device memory, and the optimizer's state stays there
            g["lr"] = self.static["lr"]
            if "capturable" in g:
                g["capturable"] = True
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()  # the warm-up's cached activations go back: the pool takes their place, not beside
        reserved = torch.cuda.memory_reserved(device)
        try:
            step.optimizer.zero_grad(set_to_none=True)  # the gradients are the graph's own buffers
            with torch.cuda.graph(graph, capture_error_mode=CAPTURE_MODE):
                loss, logits = step.plain(self.static["x"], self.static["y"], None)
        finally:
            for g, kept in zip(groups, saved):  # the plain step and checkpoints see plain floats again
                g["lr"] = kept["lr"]
                if kept["capturable"] is not None:
                    g["capturable"] = kept["capturable"]
        self.pool_bytes = torch.cuda.memory_reserved(device) - reserved
        params = [p for g in groups for p in g["params"]]
        self.static.update(loss=loss, logits=logits, grads=[(p, p.grad) for p in params])
        self.graph = graph

    def _replay(self, x, y, lr):
        s = self.static
        s["x"].copy_(x)
        s["y"].copy_(y)
        if lr is not None:
            s["lr"].fill_(lr)
        self.graph.replay()
        self.replays += 1
        first, grad = s["grads"][0] if s.get("grads") else (None, None)
        if first is not None and first.grad is not grad:  # a plain step since put its own there: the graph's again
            for p, g in s["grads"]:
                p.grad = g
        return s["loss"], s["logits"]

    def release(self) -> None:
        """Drop the captured graph and its pool (a plain step beside it ran out of memory); later steps are plain.
        `on_release` is told the bytes its pool held."""
        self.failed, self.graph, self.static = True, None, {}
        self.step.optimizer.zero_grad(set_to_none=True)  # the gradients were the graph's buffers
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the pool's segments, back to the device
        if self.on_release is not None:
            self.on_release(self.pool_bytes)

    def _give_up(self, exc: BaseException | None) -> None:
        """A failed capture: forget it, and train on with the plain step (nothing ran in the capture)."""
        self.failed, self.graph, self.static = True, None, {}
        self.step.optimizer.zero_grad(set_to_none=True)  # gradients may point into the failed capture's memory
        if exc is not None and self.on_fallback is not None:
            self.on_fallback(exc)


CAPTURED = (f"CUDA graph: the training step was captured after {WARMUP} eager steps; every later step of "
            "this batch shape replays it")


def released_message(pool_bytes: int) -> str:
    """The one line a run prints when a plain step ran out of memory beside the graph and the graph was released."""
    return (f"a step of another batch shape ran out of device memory beside the CUDA graph (whose pool holds "
            f"{pool_bytes / 2**30:.1f} GiB); the graph is released and the run goes on without it. "
            "train.cuda_graphs=off, or a smaller --batch-size, avoids it")


def fallback_message(exc: BaseException) -> str:
    """The one line a run prints when its step could not be captured as a CUDA graph."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    if type(exc).__name__ == "OutOfMemoryError":  # the graph keeps a second set of activations in its own pool
        return ("CUDA graph capture ran out of device memory (a captured step keeps its activations in a pool of "
                "its own, beside the plain step's); continuing without it. A smaller --batch-size would let it "
                "capture; train.cuda_graphs=off skips the attempt.")
    return (f"CUDA graph capture failed ({type(exc).__name__}: {first}); continuing without it. "
            "Set train.cuda_graphs=off to skip the attempt.")
