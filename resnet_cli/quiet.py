"""PyTorch's deprecation of TorchScript, kept from the user's terminal in one place.

torch 2.13 warns on every `torch.jit` call, and fvcore scripts a loss function when it is imported. Where we
write or read TorchScript on purpose, the command prints `export.TORCHSCRIPT_NOTE` once instead; where a
dependency uses it (fvcore's import and tracing), nothing of it concerns the user."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def quiet_torchscript():
    """torch.jit's deprecation warnings, silenced for the block (no other warning is touched)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=FutureWarning)
        yield
