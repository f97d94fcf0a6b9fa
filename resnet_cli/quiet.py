"""PyTorch's warnings that do not concern the user, kept from the user's terminal in one place.

torch 2.13 warns on every `torch.jit` call, and fvcore scripts a loss function when it is imported. Where we
write or read TorchScript on purpose, the command prints `export.TORCHSCRIPT_NOTE` once instead; where a
dependency uses it (fvcore's import and tracing), nothing of it concerns the user. torch 2.11's
`torch.export.load` (the GPU image's version) makes its weights with `torch.frombuffer` on the archive's
read-only bytes and warns that they are not writable: the loaded program only infers, so nothing of it concerns
the user either (2.13's loader copies and says nothing)."""

from __future__ import annotations

import contextlib


# torch.frombuffer's warning, as torch 2.11's torch.export.load raises it (tensor_new.cpp)
READ_ONLY_BUFFER = r"The given buffer is not writable"


@contextlib.contextmanager
def _ignoring(*rules: tuple[str, type[Warning]]):
    """The warnings matching these (message pattern, category) rules, silenced for the block; no other."""
    import warnings

    with warnings.catch_warnings():
        for message, category in rules:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def quiet_torchscript():
    """torch.jit's deprecation warnings, silenced for the block (no other warning is touched)."""
    return _ignoring((r".*torch\.jit.*", DeprecationWarning), (r".*torch\.jit.*", FutureWarning))


def quiet_export_load():
    """The read-only-buffer warning of torch.export.load, silenced for the block (no other warning is touched)."""
    return _ignoring((READ_ONLY_BUFFER, UserWarning))
