"""Writing a model to a file other programs run: TorchScript, torch.export (.pt2) or ONNX, then checking it.

`resnet build` writes fresh models and `resnet export` trained ones, both through `write_model`; after
writing, `check_file` loads the file back with its own runtime and compares its output with the
PyTorch model's on a random batch. What the model expects (class names, input size and normalisation)
goes into the file where the format has room for it (ONNX metadata) and into a sidecar JSON otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from .files import atomic_write, atomic_write_bytes, atomic_write_text
from .errors import BadInput
from .quiet import quiet_torchscript

# The formats, each with the file suffix that names it; `resnet export` offers all, `resnet build` the first two.
SUFFIXES = {"torchscript": ".pt", "export": ".pt2", "onnx": ".onnx"}
FORMATS = tuple(SUFFIXES)


def example_batch(net: torch.nn.Module, batch_size: int, input_size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A seeded random batch, drawn on the CPU (the same numbers on every device), on `net`'s device."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, net.in_channels, *input_size, generator=g)
    return x.to(next(net.parameters()).device)


def write_model(net: torch.nn.Module, fmt: str, output: Path, input_size: tuple[int, int],
                batch_size: int | None = None, metadata: dict[str, Any] | None = None, device=None) -> Path:
    """Write `net` (eval mode) as `fmt`, traced on `device` (default the CPU): a TorchScript or .pt2 file runs on
    the device it was traced on; ONNX is the same graph from either. `batch_size` None: any batch size (dynamic);
    spatial size fixed. `metadata` (strings) goes into ONNX files, and beside the others as OUTPUT.json."""
    import torch

    if fmt not in FORMATS:
        raise BadInput(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    net = net.eval().to(device or "cpu")
    example = example_batch(net, batch_size or 2, input_size)
    if fmt == "torchscript":  # PyTorch deprecates TorchScript; kept for older runtimes (TORCHSCRIPT_NOTE)
        with quiet_torchscript():
            scripted = torch.jit.trace(net, example)
            atomic_write_bytes(output, lambda buffer: torch.jit.save(scripted, buffer))
    elif fmt == "export":
        dynamic = None if batch_size else ({0: torch.export.Dim("batch", min=1)},)
        exported = torch.export.export(net, (example,), dynamic_shapes=dynamic)
        atomic_write_bytes(output, lambda buffer: torch.export.save(exported, buffer))
    else:
        _write_onnx(net, example, output, batch_size is None, metadata or {})
    if metadata and fmt != "onnx":
        atomic_write_text(sidecar(output), json.dumps(metadata, indent=2) + "\n")
    return output


TORCHSCRIPT_NOTE = ("note: PyTorch deprecates TorchScript (torch.jit); --format export (.pt2) or onnx are its "
                    "successors")


def sidecar(output: Path) -> Path:
    return output.with_name(output.name + ".json")


def _write_onnx(net, example, output: Path, dynamic: bool, metadata: dict[str, Any]) -> None:
    """torch.onnx's exporter (the torch.export-based one; needs onnxscript), metadata in `metadata_props`."""
    import torch

    import logging

    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter's dependency)
    except ImportError:
        raise BadInput('ONNX export needs the onnx extra: pip install "resnet-cli[onnx]"') from None
    import warnings

    quiet = logging.getLogger("torch.onnx")  # e.g. "torchvision is not installed", which does not concern us
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations inside the exporter
            program = torch.onnx.export(net, (example,), None, input_names=["images"], output_names=["logits"],
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},) if dynamic else None,
                                        dynamo=True, verbose=False)
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    atomic_write(output, lambda tmp: onnx.save(proto, str(tmp)))


def run_file(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """Run a written file with the runtime its format is for: TorchScript, torch.export (on `x`'s device),
    onnxruntime (on the CPU)."""
    import torch

    if fmt == "torchscript":
        with quiet_torchscript():
            return torch.jit.load(str(path))(x)
    if fmt == "export":
        return torch.export.load(str(path)).module()(x)
    try:
        import onnxruntime
    except ImportError:
        raise BadInput('checking an ONNX file needs onnxruntime: pip install "resnet-cli[onnx]"') from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.cpu().numpy()})[0]
    return torch.from_numpy(out).to(x.device)


def check_file(path: Path, fmt: str, net: torch.nn.Module, input_size: tuple[int, int], batch_size: int) -> float:
    """Largest absolute difference between the file's output and the PyTorch model's on a random batch (on the
    model's device)."""
    import torch

    x = example_batch(net, batch_size, input_size, seed=1)
    with torch.inference_mode():
        want = net.eval()(x)
        got = run_file(path, fmt, x)
    if got.shape != want.shape:
        raise BadInput(f"{path} returned shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    return float((got.float() - want.float()).abs().max())


def format_for(output: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    for name, suffix in SUFFIXES.items():
        if output.suffix == suffix:
            return name
    raise BadInput(f"cannot tell the format from {output.name!r}; add --format {', '.join(FORMATS)}")


def export_checkpoint(source, output: Path, fmt: str | None = None, batch_size: int | None = None,
                      input_size: tuple[int, int] | None = None, tolerance: float = 1e-3, model: str | None = None,
                      dataset: str | None = None, force: bool = False, device: str = "cpu") -> dict[str, Any]:
    """`resnet export`: a trained model written as `fmt` (traced on `device`), loaded back, and compared with
    PyTorch's output there."""
    from .checkpoint import model_from_checkpoint
    from .data import input_of_run
    from .device import resolve_device
    from .files import output_path

    dev = resolve_device(device)
    fmt = format_for(output, fmt)
    output = output_path(output, force)
    if fmt != "onnx":  # the metadata goes beside the file
        output_path(sidecar(output), force)
    loaded = model_from_checkpoint(source, model, dataset)
    spec = input_of_run(loaded.config, loaded.saved_input, loaded.trained or dataset is not None,
                        f"{loaded.path} {loaded.unknown_data}")
    size = input_size or spec.image_size
    metadata = {"model": loaded.config.model.name, **spec.as_dict(), "image_size": list(size),
                "input": "images: float32, N x C x H x W, (pixel / 255 - mean) / std per channel",
                "output": "logits: N x classes", "source": str(loaded.path), "batch_size": batch_size or "dynamic",
                "dataset": dataset or (loaded.config.data.dataset if loaded.trained else "")}
    if fmt != "onnx":  # a TorchScript or .pt2 file keeps the device it was traced on
        metadata["device"] = str(dev)
    write_model(loaded.model, fmt, output, size, batch_size, metadata, dev)
    check_batch = batch_size or 3  # a dynamic-batch file is checked at a batch it was not traced with
    diff = check_file(output, fmt, loaded.model, size, check_batch)
    return {"path": str(output), "format": fmt, "model": loaded.config.model.name, "source": str(loaded.path),
            "bytes": output.stat().st_size, "batch_size": batch_size or "dynamic", "input_size": list(size),
            "metadata": str(sidecar(output)) if fmt != "onnx" else "in the ONNX file (metadata_props)",
            "device": str(dev), "check_batch": check_batch, "max_abs_diff": diff, "tolerance": tolerance, "ok": diff <= tolerance}
