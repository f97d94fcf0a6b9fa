"""PyTorch's warnings that do not concern the user, kept from the user's terminal in one place.

torch 2.13 warns on every `torch.jit` call, and fvcore scripts a loss function when it is imported. Where we
write or read TorchScript on purpose, the command prints `export.TORCHSCRIPT_NOTE` once instead; where a
dependency uses it (fvcore's import and tracing), nothing of it concerns the user. torch 2.11's
`torch.export.load` (the GPU image's version) makes its weights with `torch.frombuffer` on the archive's
read-only bytes and warns that they are not writable: the loaded program only infers, so nothing of it concerns
the user either (2.13's loader copies and says nothing). torch 2.4's loader calls `torch.load` without
`weights_only` and warns, a paragraph, that a pickle can run code: we load a .pt2 file only when this user's
`resnet export` wrote it or they passed --trust-exported (exported.py), the decision that warning asks for."""

from __future__ import annotations

import contextlib


# torch.frombuffer's warning, as torch 2.11's torch.export.load raises it (tensor_new.cpp)
READ_ONLY_BUFFER = r"The given buffer is not writable"
# torch.load's, as torch 2.4's torch.export.load raises it (torch/serialization.py)
FULL_UNPICKLER = r"You are using `torch.load` with `weights_only=False`"


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
    """torch.export.load's warnings (a read-only buffer; torch.load's full unpickler), silenced for the block, no
    other warning touched: call it only where the file is trusted (exported.load_exported decides)."""
    return _ignoring((READ_ONLY_BUFFER, UserWarning), (FULL_UNPICKLER, FutureWarning))
