"""The house: the package's import graph has no cycle, and the CLI's top level stays free of torch."""

from __future__ import annotations

import pytest

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "resnet_cli"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """resnet_cli module -> resnet_cli modules it imports, at any depth (lazy imports in functions count)."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                mod = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
                # `from . import x` names a submodule when there is one
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "resnet_cli.models.specs" in graph["resnet_cli.models"]  # the graph is really read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_a_cycle_would_be_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_registry_never_imports_the_models():
    graph = import_graph()
    # the gate bounds the class count a checkpoint's config may ask build_model for; it imports only errors
    assert not graph["resnet_cli.models.registry"] - {"resnet_cli.errors", "resnet_cli.gate"}
    assert not graph["resnet_cli.gate"] - {"resnet_cli.errors"}


@pytest.mark.slow
def test_cli_top_level_imports_no_torch():
    code = "import sys, resnet_cli.cli; print('torch' in sys.modules, 'fvcore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_the_model_table_imports_no_model_code():
    graph = import_graph()
    assert not graph["resnet_cli.models.specs"] - {"resnet_cli.models.registry"}


def _functions(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def test_the_training_core_reads_in_screens():
    """No function of resnet_cli/train/ runs over 60 lines."""
    long = [f"{p.name}:{n.name} ({n.end_lineno - n.lineno + 1} lines)" for p, n in _functions(PKG / "train")
            if n.end_lineno - n.lineno + 1 > 60]
    assert not long, long


def test_one_process_model():
    """Single-process and torchrun runs are the same kind of object: no `dist is None` branches."""
    hits = [f"{p.relative_to(PKG)}:{i + 1}" for p in PKG.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines()) if "dist is None" in line or "dist is not None" in line]
    assert not hits, hits


def test_the_checkpoint_format_does_not_import_the_data():
    graph = import_graph()
    assert not {m for m in graph["resnet_cli.checkpoint"] if m.startswith("resnet_cli.data")}
    assert "resnet_cli.files" in graph["resnet_cli.checkpoint"]  # the graph is really read


def test_no_module_imports_another_modules_private_names():
    hits = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                hits += [f"{path.relative_to(PKG)}: {node.module}.{a.name}" for a in node.names
                         if a.name.startswith("_") and not a.name.startswith("__")]
    assert not hits, hits


def test_the_two_process_kinds_have_one_interface():
    from resnet_cli.train.distributed import SingleProcess, TorchrunProcess

    def public(cls):
        return {n for n in dir(cls) if not n.startswith("_")} | set(cls.__dataclass_fields__)

    assert public(SingleProcess) == public(TorchrunProcess)


def test_the_two_loaders_have_the_loader_interface():
    """Tensors on the device and image folders serve batches through one interface (data.loader.Loader)."""
    import torch

    from resnet_cli.data.imagefolder import FolderLoader, ImageFolderDataset
    from resnet_cli.data.inputs import InputSpec
    from resnet_cli.data.loader import DeviceLoader, Loader

    spec = InputSpec.of(["a", "b", "c"], 3, 8, 0, (0.5,) * 3, (0.25,) * 3)
    cpu = torch.device("cpu")
    loaders = [DeviceLoader(torch.zeros(5, 3, 8, 8, dtype=torch.uint8), torch.zeros(5, dtype=torch.long), 2, spec,
                            cpu, train=False),
               FolderLoader(ImageFolderDataset([(Path(f"{i}.png"), 0) for i in range(5)], False, crop=8), 2, spec,
                            cpu, train=False, workers=0)]
    members = {n for n in vars(Loader) if not n.startswith("_")}
    assert members == {"classes", "num_classes", "channels", "batches"}
    for loader in loaders:
        assert all(hasattr(loader, n) for n in members)
        assert loader.input is spec and loader.classes == ["a", "b", "c"] and loader.num_classes == 3
        assert loader.channels == 3 and len(loader) == 3  # every image once: 2 + 2 + 1
