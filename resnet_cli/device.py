"""Turn `--device auto|cpu|cuda[:N]` into a torch.device, with a clear error when it cannot be had.

What runs fast on a device (precision, memory format, compilation) is speed.py's to decide."""

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


def device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
