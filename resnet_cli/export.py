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
from .quiet import quiet_export_load, quiet_torchscript

# The formats, each with the file suffix that names it; `resnet export` offers all, `resnet build` the first two.
SUFFIXES = {"torchscript": ".pt", "export": ".pt2", "onnx": ".onnx"}
FORMATS = tuple(SUFFIXES)
# Weights with what rebuilds and feeds the model (weights.py), read back by every command that takes a checkpoint:
# a safetensors file, or a folder laid out as a Hugging Face Hub model repo (named by --format hub alone).
WEIGHT_SUFFIXES = {"safetensors": ".safetensors", "hub": ""}
EXPORT_FORMATS = FORMATS + tuple(WEIGHT_SUFFIXES)


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

    from .exported import sidecar
    from .trust import remember

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
        remember(output)  # loaded again only because this user wrote it (exported.py)
    else:
        write_onnx(net, example, output, batch_size is None, metadata or {})
    if metadata and fmt != "onnx":
        atomic_write_text(sidecar(output), json.dumps(metadata, indent=2) + "\n")
    return output


TORCHSCRIPT_NOTE = ("note: PyTorch deprecates TorchScript (torch.jit); --format export (.pt2) or onnx are its "
                    "successors")


def onnx_exporter() -> str:
    """Which of torch.onnx's exporters writes ONNX files here: "dynamo" (the torch.export-based one, where
    `torch.onnx.export` takes `dynamic_shapes`: torch >= 2.5), else "torchscript" (torch 2.4's dynamo route has no
    way to make the batch alone dynamic; its TorchScript-based exporter does, with `dynamic_axes`)."""
    import inspect

    import torch

    return "dynamo" if "dynamic_shapes" in inspect.signature(torch.onnx.export).parameters else "torchscript"


def write_onnx(net, example, output: Path, dynamic: bool, metadata: dict[str, Any], exporter: str = "") -> None:
    """torch.onnx's exporter (`onnx_exporter()`: the torch.export-based one where torch has it, needs onnxscript),
    the batch dimension dynamic alike, metadata in `metadata_props`. What the exporter prints is dropped (onnxscript
    0.6 prints "Applied 60 of general pattern rewrite rules." on stdout); its failures are exceptions."""
    import contextlib
    import io
    import logging
    import warnings

    import torch

    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter's dependency)
    except ImportError:
        raise BadInput('ONNX export needs the onnx extra: pip install "resnet-cli[onnx]"') from None
    names = {"input_names": ["images"], "output_names": ["logits"], "verbose": False}
    quiet = logging.getLogger("torch.onnx")  # e.g. "torchvision is not installed", which does not concern us
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations inside the exporter
            if (exporter or onnx_exporter()) == "dynamo":
                proto = torch.onnx.export(net, (example,), None, **names, dynamo=True, dynamic_shapes=(
                    {0: torch.export.Dim("batch", min=1)},) if dynamic else None).model_proto
            else:
                warnings.simplefilter("ignore", DeprecationWarning)  # newer torch deprecates this exporter
                buffer = io.BytesIO()
                torch.onnx.export(net, (example,), buffer, **names, opset_version=17, dynamic_axes={
                    "images": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None, dynamo=False)
                proto = onnx.load_from_string(buffer.getvalue())
    except ModuleNotFoundError as e:  # an onnxscript older than this torch's exporter (0.5 has no torch_2_11 API)
        if not (e.name or "").startswith("onnx"):
            raise
        from importlib.metadata import version

        raise BadInput(f"torch {torch.__version__}'s ONNX exporter needs a newer onnxscript than "
                       f"{version('onnxscript')} (it has no {e.name}): pip install -U onnxscript") from None
    finally:
        quiet.setLevel(level)
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
        with quiet_export_load():
            program = torch.export.load(str(path))
        return program.module()(x)
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
    return largest_difference(net, example_batch(net, batch_size, input_size, seed=1),
                              lambda x: run_file(path, fmt, x), str(path))


def largest_difference(net: "torch.nn.Module", x: "torch.Tensor", other, what: str) -> float:
    """Largest absolute difference between `other(x)` and the PyTorch model's output (evaluation mode); a
    different output shape is one line naming `what` returned it."""
    import torch

    with torch.inference_mode():
        want = net.eval()(x)
        got = other(x)
    if got.shape != want.shape:
        raise BadInput(f"{what} returned shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    return float((got.float() - want.float()).abs().max())


def format_for(output: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    for name, suffix in {**SUFFIXES, **WEIGHT_SUFFIXES}.items():
        if suffix and output.suffix == suffix:
            return name
    raise BadInput(f"cannot tell the format from {output.name!r}; add --format {', '.join(EXPORT_FORMATS)}")


def export_checkpoint(source, output: Path, fmt: str | None = None, batch_size: int | None = None,
                      input_size: tuple[int, int] | None = None, tolerance: float = 1e-3, model: str | None = None,
                      dataset: str | None = None, force: bool = False, device: str = "cpu") -> dict[str, Any]:
    """`resnet export`: a trained model written as `fmt` (traced on `device`), loaded back, and compared with
    PyTorch's output there."""
    from .checkpoint import model_from_checkpoint
    from .data import input_of_run
    from .device import resolve_device
    from .exported import sidecar
    from .files import output_path

    dev = resolve_device(device)
    fmt = format_for(output, fmt)
    if fmt in WEIGHT_SUFFIXES:
        return export_weights(source, output, fmt, tolerance, model, dataset, force)
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


def export_weights(source, output: Path, fmt: str, tolerance: float = 1e-3, model: str | None = None,
                   dataset: str | None = None, force: bool = False) -> dict[str, Any]:
    """`resnet export --format safetensors|hub`: the weights `eval` would use (the EMA where the run kept them)
    with the run's config and input record, as one safetensors file or a Hub repo folder (weights.py); then read
    back as any command reads it, and compared with the model it came from."""
    from . import weights as W
    from .checkpoint import model_from_checkpoint
    from .config import to_yaml
    from .data import input_of_run
    from .files import output_path

    W.require("safetensors.torch", W.SAFETENSORS_EXTRA, f"export --format {fmt}")
    if fmt == "hub":
        folder = _hub_folder(output, force)
        target = folder / "model.safetensors"
    else:
        target = output_path(output, force)
    loaded = model_from_checkpoint(source, model, dataset)
    spec = input_of_run(loaded.config, loaded.saved_input, loaded.trained or dataset is not None,
                        f"{loaded.path} {loaded.unknown_data}").as_dict()
    config = loaded.config.to_dict() if not loaded.from_run else dict(loaded.checkpoint["config"])
    config["model"] = {**config["model"], "init": ""}  # the weights are these; where they started does not travel
    blob = W.safetensors_bytes(loaded.model.state_dict(), config, spec, loaded.weights)
    atomic_write_bytes(target, lambda buffer: buffer.write(blob))
    written = [target]
    if fmt == "hub":
        cfg_json = W.config_json(config, spec, loaded.weights)
        params = sum(p.numel() for p in loaded.model.parameters())
        metrics = loaded.checkpoint.get("metrics") if loaded.from_run else None
        from .train.evaluations import selection_metric

        elsewhere = "" if loaded.recipe else "untrained weights (resnet build)" if loaded.from_run and not \
            loaded.trained else f"weights from {source}, not trained by resnet-cli"
        card = W.model_card(config, spec, cfg_json, metrics if isinstance(metrics, list) else [],
                            selection_metric(loaded.config), loaded.weights, params, elsewhere)
        files = [("config.json", json.dumps(cfg_json, indent=2) + "\n"), ("README.md", card)]
        if loaded.recipe:  # a run's config trains it again; weights made elsewhere have none to give
            files.insert(1, ("train_config.yaml", to_yaml(loaded.config)))
        for name, text in files:
            written.append(atomic_write_text(folder / name, text))
    back = model_from_checkpoint(folder if fmt == "hub" else target)
    diff = check_weights(back.model, loaded.model, tuple(spec["image_size"]))
    out_path = folder if fmt == "hub" else target
    return {"path": str(out_path), "format": fmt, "model": loaded.config.model.name, "source": str(loaded.path),
            "bytes": sum(f.stat().st_size for f in written), "files": [str(f) for f in written],
            "weights": loaded.weights, "timm": W.TIMM.get(loaded.config.model.name) if fmt == "hub" else None,
            "batch_size": "any", "input_size": list(spec["image_size"]), "device": "cpu", "check_batch": 3,
            "metadata": ", ".join(f.name for f in written[1:]) if fmt == "hub" else "in the file (metadata)",
            "max_abs_diff": diff, "tolerance": tolerance, "ok": diff <= tolerance}


def _hub_folder(output: Path, force: bool) -> Path:
    """A Hub repo folder to write: new, empty, or (with --force) one whose files are replaced."""
    from .files import ensure_writable_dir

    if output.exists() and not output.is_dir():
        raise BadInput(f"-o {output} is a file; --format hub writes a folder (a Hugging Face model repo)")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise BadInput(f"-o {output} is a folder that is not empty; pass --force to replace its files")
    return ensure_writable_dir(output)


def check_weights(back: "torch.nn.Module", net: "torch.nn.Module", input_size: tuple[int, int]) -> float:
    """Largest absolute difference between the model read back from the written weights and the one they came
    from, on a random batch of 3."""
    return largest_difference(net, example_batch(net, 3, input_size, seed=1), back.eval(), "the weights read back")
