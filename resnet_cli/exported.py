"""Files `resnet export` wrote, used as models: an ONNX file through onnxruntime, a .pt2 file through torch.export,
with what a model expects of an image (classes, channels, size, normalisation) read from the metadata export
writes into them (ONNX `metadata_props`) or beside them (FILE.pt2.json). `predict` and `eval` take them where
they take a checkpoint, as Ultralytics' predict and val take their exports; the figures name the runtime.

Every byte comes through the gate (gate.py); a file without the metadata is one line naming what is missing.

A .pt2 file is code, not data: torch.export.load unpickles parts of it (falling back to a full unpickler when the
safe one refuses) and its graph names the functions it calls, so a crafted file runs a command when it is loaded.
One is loaded only when `resnet export` wrote it for this user (its sha256 recorded then: trust.py), or with
--trust-exported; anything else is one line. ONNX files are data to onnxruntime and need neither, but an ONNX
tensor may name a file of its own ("external data", which onnxruntime reads from the working directory, past the
gate and its byte bound): `resnet export` writes none, so a file with one is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import gate
from .data.inputs import InputSpec
from .errors import BadInput
from .quiet import quiet_export_load
from .trust import TRUST_FLAG, written_here

RUNTIMES = {".onnx": "onnxruntime", ".pt2": "torch.export"}
NEEDED = ("model", "classes", "channels", "image_size", "resize", "mean", "std")
MAX_EXPORT_BYTES = 4 * 2**30


def sidecar(path: Path) -> Path:
    """Where the metadata of a file without room for it (TorchScript, .pt2) lives: FILE.json beside it."""
    return path.with_name(path.name + ".json")


def is_exported(source: str | Path) -> bool:
    """Whether `source` names an exported file (by its suffix) rather than a checkpoint or run folder."""
    return Path(source).suffix in RUNTIMES and not Path(source).is_dir()


class ExportedModel(nn.Module):
    """An exported file as a module: `forward` runs it in its runtime (float32 N x C x H x W in, logits out).
    ONNX runs on the CPU; a .pt2 file on the device it was traced on. A file traced for one batch size is fed
    batches of that size (the last one padded)."""

    def __init__(self, path: Path, runtime: str, metadata: dict[str, Any], run, device: torch.device,
                 batch: int | None) -> None:
        super().__init__()
        self.path, self.runtime, self.metadata, self._run = path, runtime, metadata, run
        self.device, self.batch = device, batch
        self.spec = InputSpec.from_dict(metadata)
        self.name = str(metadata["model"])

    @property
    def num_classes(self) -> int:
        return len(self.spec.classes)

    def twin(self, strict: bool = True) -> nn.Module | None:
        """The registry model this file was exported from, in eval mode, with fresh weights: the same shapes (the
        reference bench times beside it, the memory a batch of it needs). A name this registry lacks (a newer
        resnet-cli's model): one line, or with `strict` False None (the file still runs)."""
        from .models import build_model

        try:
            return build_model(self.name, num_classes=self.num_classes, in_channels=self.spec.channels).eval()
        except BadInput:
            if strict:
                raise
            return None

    def forward_batch(self, batch: int) -> int:
        """The batch the runtime sees for `batch` images: a file traced for one batch size runs at that one."""
        return self.batch or batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().contiguous()
        if self.batch is None or len(x) == self.batch:
            return self._run(x)
        outs = []
        for chunk in x.split(self.batch):
            n = len(chunk)
            if n < self.batch:
                chunk = torch.cat([chunk, chunk.new_zeros(self.batch - n, *chunk.shape[1:])])
            outs.append(self._run(chunk)[:n])
        return torch.cat(outs)


def load_exported(source: str | Path, trust: bool = False) -> ExportedModel:
    """The exported file at `source`, ready to run; one BadInput line for anything missing or unreadable. A .pt2
    file loads only when this user's `resnet export` wrote it, or with `trust` (--trust-exported)."""
    path = Path(source)
    runtime = RUNTIMES[path.suffix]
    raw = gate.read_file(path, gate.Limits(MAX_EXPORT_BYTES, keys=("the bound on an exported model, 4 GiB", "")),
                         "exported model")
    if runtime == "onnxruntime":
        return _onnx(path, raw)
    if not (trust or written_here(raw)):
        raise BadInput(f"{path} was not written by resnet export for this user, and a .pt2 file runs code when it is "
                       f"loaded (torch.export unpickles it): refused; pass {TRUST_FLAG} if you trust its source, or "
                       "use its ONNX export")
    return _pt2(path, raw)


def _checked(path: Path, metadata: dict[str, Any], where: str) -> dict[str, Any]:
    missing = [k for k in NEEDED if k not in metadata]
    if missing:
        raise BadInput(f"{path} has no {', '.join(missing)} in {where}: it was not written by resnet export (or by "
                       "an older one); export the checkpoint again")
    try:
        InputSpec.from_dict(metadata)
    except BadInput:
        raise BadInput(f"{path}: the input record in {where} is not valid (classes, channels, image size, "
                       "mean/std)") from None
    return metadata


def _onnx(path: Path, raw: bytes) -> ExportedModel:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise BadInput(f'running {path.name} needs onnx and onnxruntime: pip install "resnet-cli[onnx]"') from None
    try:
        proto = onnx.load_model_from_string(raw)
    except Exception as e:  # noqa: BLE001 - a damaged file is one line
        raise BadInput(f"cannot read {path} as ONNX: {str(e)[:160] or type(e).__name__}") from None
    metadata: dict[str, Any] = {}
    for entry in proto.metadata_props:
        try:
            metadata[entry.key] = json.loads(entry.value)
        except ValueError:
            metadata[entry.key] = entry.value
    _checked(path, metadata, "its metadata_props")
    outside = external_tensors(proto)
    if outside:
        raise BadInput(f"{path} keeps tensor {outside[0]!r} in another file: onnxruntime would read it past the "
                       "byte bound, and resnet export writes one self-contained file: refused")
    try:
        session = onnxruntime.InferenceSession(raw, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise BadInput(f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:160]}") from None
    first = session.get_inputs()[0]
    batch = first.shape[0] if isinstance(first.shape[0], int) else None

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {first.name: x.cpu().numpy()})[0])

    return ExportedModel(path, "onnxruntime", metadata, run, torch.device("cpu"), batch)


def external_tensors(model) -> list[str]:
    """The names of the tensors in an ONNX ModelProto whose bytes lie in another file (external data): in any
    graph, subgraph (If, Loop, Scan), node attribute, sparse tensor or function."""
    from itertools import chain

    from onnx import TensorProto

    def in_graph(graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        for node in graph.node:
            yield from in_node(node)

    def in_node(node):
        for a in node.attribute:
            yield from (a.t, *a.tensors)
            for sparse in (a.sparse_tensor, *a.sparse_tensors):
                yield from (sparse.values, sparse.indices)
            for graph in (a.g, *a.graphs):
                yield from in_graph(graph)

    every = chain(in_graph(model.graph), *(in_node(n) for f in model.functions for n in f.node))
    return [t.name or "(unnamed)" for t in every if t.data_location == TensorProto.EXTERNAL or len(t.external_data)]


def _pt2(path: Path, raw: bytes) -> ExportedModel:
    import io

    side = sidecar(path)
    if not side.exists():
        raise BadInput(f"{path} has no {side.name} beside it: its classes, input size and normalisation are "
                       "written there by resnet export; export the checkpoint again")
    metadata = _checked(path, gate.json_bytes(gate.read_file(side, gate.Limits(2**20)), str(side)), side.name)
    try:
        with quiet_export_load():
            program = torch.export.load(io.BytesIO(raw))
    except Exception as e:  # noqa: BLE001
        raise BadInput(f"cannot load {path} with torch.export: {str(e).splitlines()[0][:160]}") from None
    device = torch.device(metadata.get("device", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"{path} was traced on {device} and runs there only; no CUDA device is available: export it "
                       "again with --device cpu")
    module = program.module()
    batch = metadata.get("batch_size") if isinstance(metadata.get("batch_size"), int) else None

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x.to(device))

    return ExportedModel(path, "torch.export", metadata, run, device, batch)
