"""The speed settings, resolved in one place for `train`, `eval`, `bench` and `flops --device`.

A `Speed` says how a model runs on one device: autocast precision, memory format and
torch.compile (with its mode). `Speed.resolve` turns the config's `auto` values into
decisions once, from what was measured (BENCHMARKS.md):

- precision: bf16 autocast on CUDA; fp32 on CPU (bf16 ran at 0.4-0.5x on CPUs without bf16 units).
- channels_last: on for CUDA and for CPUs whose convolutions run on oneDNN (+17-19% training on the
  2-core CI machines).
- compile: only for runs long enough to earn the compile time back (`train.compile_min_steps`, by device
  `config.COMPILE_MIN_STEPS`): on CPU 2,000 steps, where compiling costs 20-60 s and then trains 1.3-1.5x
  faster (and only when a C++ compiler is found: Inductor's CPU backend needs one); on CUDA 20,000 steps,
  where it costs about 18 s more and then saves about a fifth of a step replayed from a CUDA graph. Short
  runs stay eager; a run of unknown length (`planned_steps` None) compiles.

Under `auto`, a compilation that fails falls back to eager with one line (`CompiledForward`): a run
should not die over a speed switch it did not ask for. `on` makes that failure an error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, replace
from typing import Any, Callable, get_args

from .config import CompileMode, min_compile_steps
from .errors import BadInput

COMPILE_MODES = get_args(CompileMode)
GRAPHED_COMPILE_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that replay CUDA graphs themselves


def default_channels_last(device) -> bool:
    """channels_last where it was measured to help: CUDA, and CPUs whose convolutions run on oneDNN."""
    import torch

    return device.type == "cuda" or (device.type == "cpu" and torch.backends.mkldnn.is_available())


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend (Inductor) would use, or None if there is none."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def autocast(device, precision: str):
    """The autocast context for a precision; fp32 and tf32 run without one."""
    import torch

    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


@dataclass
class Speed:
    """How a model runs on one device: autocast precision, memory format, compilation."""

    precision: str  # fp32, tf32, bf16 or fp16
    channels_last: bool
    compile: bool
    compile_mode: str = "default"
    strict: bool = False  # compile asked for explicitly (on): a failed compilation is an error, not a fallback
    deterministic: bool = False  # CUDA: deterministic kernels, so that a run repeats exactly (train.deterministic)
    cuda_graphs: bool = False  # the training step replayed from one CUDA graph (train/graphs.py decides)

    @classmethod
    def resolve(cls, device, precision: str = "auto", channels_last: str = "auto", compile: str = "auto",
                compile_mode: str = "default", planned_steps: int | None = None,
                compile_min_steps: int = -1) -> "Speed":
        """Decide every `auto` for `device`; `planned_steps` (None: unknown, e.g. inference) gates compile
        against `compile_min_steps` (-1: the device's, config.COMPILE_MIN_STEPS)."""
        cuda = device.type == "cuda"
        if precision == "auto":
            precision = "bf16" if cuda else "fp32"
        if precision in ("fp16", "tf32") and not cuda:
            raise BadInput(f"precision {precision} needs a CUDA device; use bf16 or fp32 on CPU")
        if compile_mode not in COMPILE_MODES:
            raise BadInput(f"compile mode {compile_mode!r} is not one of {', '.join(COMPILE_MODES)}")
        nhwc = default_channels_last(device) if channels_last == "auto" else channels_last == "on"
        if compile == "auto":
            needed = min_compile_steps(device.type, compile_min_steps)
            long_enough = planned_steps is None or planned_steps >= needed
            compile_ = long_enough and (cuda or cpp_compiler() is not None)
        else:
            compile_ = compile == "on"
            if compile_ and device.type == "cpu" and cpp_compiler() is None:
                raise BadInput("torch.compile on CPU needs a C++ compiler (g++ or clang++, or $CXX); "
                               "install one or turn compile off")
        return cls(precision, nhwc, compile_, compile_mode, strict=compile == "on")

    @classmethod
    def for_train(cls, t, device, planned_steps: int) -> "Speed":
        """The speed of a training run from its `train` config section."""
        speed = cls.resolve(device, t.precision, t.channels_last, t.compile, t.compile_mode, planned_steps,
                            t.compile_min_steps)
        return replace(speed, deterministic=t.deterministic)

    def describe(self) -> str:
        """One line for the start of a run: `fp32, channels_last on, compile on (...)`."""
        comp = "compile off"
        if self.compile:
            mode = "" if self.compile_mode == "default" else f"mode {self.compile_mode}, "
            comp = f"compile on ({mode}the first steps and the first evaluation compile)"
        extra = (", CUDA graphs on" if self.cuda_graphs else "") + (", deterministic" if self.deterministic else "")
        return f"{self.precision}, channels_last {'on' if self.channels_last else 'off'}, {comp}{extra}"

    def autocast(self, device):
        return autocast(device, self.precision)

    def cuda_graphed(self, device) -> bool:
        """Whether the compiled calls replay CUDA graphs (torch.compile's reduce-overhead and max-autotune modes)."""
        return self.compile and device.type == "cuda" and self.compile_mode in GRAPHED_COMPILE_MODES

    def memory_format(self):
        import torch

        return torch.channels_last if self.channels_last else torch.contiguous_format

    def configure_backends(self, device) -> None:
        """Process-wide kernel choices: cuDNN autotuning on CUDA (off when deterministic), TF32 only when asked for.

        Deterministic: cuDNN's autotuner times candidate kernels and may pick another one on the next run, and
        some kernels add with atomics in any order, so two CUDA runs of one config drift apart (training amplifies
        the last bits). `deterministic` pins the algorithms and asks cuBLAS for a fixed workspace; operations
        without a deterministic kernel warn instead of failing."""
        import torch

        if device.type == "cuda":
            torch.backends.cudnn.benchmark = not self.deterministic
            torch.backends.cudnn.deterministic = self.deterministic
            torch.backends.cuda.matmul.allow_tf32 = self.precision == "tf32"
            torch.backends.cudnn.allow_tf32 = self.precision == "tf32"
        if self.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS first starts
        if torch.are_deterministic_algorithms_enabled() != self.deterministic:  # off unless a run turned it on:
            torch.use_deterministic_algorithms(self.deterministic, warn_only=True)  # it imports Inductor (1-2 s)

    def forward(self, module, on_fallback: Callable[[BaseException], None] | None = None) -> "Callable[..., Any]":
        """The call to run `module` with: the module itself, or its compiled forward."""
        if not self.compile:
            return module
        return CompiledForward(module, self, on_fallback)


class CompiledForward:
    """A module's compiled forward call; under `auto`, the eager call if compiling fails.

    Only ever called: evaluation, checkpoints, DDP and gradient logging are handed the module itself,
    never this object. Compilation fails before the graph runs, so nothing has changed when it falls back.
    """

    def __init__(self, module, speed: Speed, on_fallback: Callable[[BaseException], None] | None) -> None:
        import torch

        from .quiet import quiet_torchscript

        with quiet_torchscript():  # Inductor's CPU backend imports this module, which defines TorchScript classes
            import torch.utils.mkldnn  # noqa: F401
        self.module = module
        self.compiled = torch.compile(module, mode=None if speed.compile_mode == "default" else speed.compile_mode)
        self.speed = speed
        self.on_fallback = on_fallback
        self.failure = compile_failures()

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.module(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except self.failure as exc:
            if self.speed.strict:
                from .errors import RunFailed

                raise RunFailed(f"torch.compile failed ({_cause(exc)}); set train.compile=auto to fall back "
                                "to eager, or off") from exc
            self.compiled = None
            self.speed.compile = False
            if self.on_fallback is not None:
                self.on_fallback(exc)
        return self.module(*args, **kwargs)


def compile_failures() -> tuple[type[BaseException], ...]:
    """What torch.compile raises when it, not the model, fails: any Dynamo error (tracing, an internal error, the
    backend), and Inductor's toolchain errors that reach the caller unwrapped (no Triton, an old GPU, a C++ or
    CUDA compile error). A model's own error raises again from the eager call the fallback makes."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor import exc as inductor

    names = ("CppCompileError", "CUDACompileError", "TritonMissing", "GPUTooOldForTriton", "InvalidCxxCompiler",
             "LoweringException")
    return (TorchDynamoException, *(getattr(inductor, n) for n in names if hasattr(inductor, n)))


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "inner_exception", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0][:200]
    return f"{type(cause).__name__}: {first}"


def fallback_message(exc: BaseException) -> str:
    """The one line a run prints when compiling failed under `auto`."""
    return (f"torch.compile failed ({_cause(exc)}); continuing without it. "
            "Set train.compile=off to skip the attempt, or train.compile=on to make it an error.")
