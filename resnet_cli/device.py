"""Turn `--device auto|cpu|cuda[:N]` into a torch.device, with a clear error when it cannot be had."""

from __future__ import annotations

from .errors import BadInput

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str = "auto"):
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BadInput(f"--device {name}: no CUDA GPU is available here (torch {torch.__version__}); "
                           "use --device cpu")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BadInput(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
        return dev
    raise BadInput(f"unknown device {name!r}; use {DEVICE_CHOICES}")


def default_channels_last(device) -> bool:
    """channels_last where it was measured to help: CUDA, and CPUs whose convolutions run on oneDNN.

    On the 2-core Xeon CI machines resnet20 trains 1.17-1.19x faster in NHWC and infers 1.0-1.17x faster,
    interleaved in one process (benchmarks/cpu_switches.py, BENCHMARKS.md).
    """
    import torch

    return device.type == "cuda" or (device.type == "cpu" and torch.backends.mkldnn.is_available())


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend (Inductor) would use, or None if there is none."""
    import os
    import shutil

    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
