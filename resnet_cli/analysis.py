"""What `summary` and `flops` report: multiply-adds, parameters and output sizes.

Multiply-adds are counted by fvcore (one fused multiply-add counts once, which
is what the paper's Table 1 calls "FLOPs"). The paper's figure covers the
convolutions and the fc layer, so `macs` counts exactly those; BatchNorm is
reported separately as `bn_macs`, and any op fvcore saw but could not count
(max pool, the residual adds, ReLU) is listed by name in `uncounted`.

Output sizes are read off the real model with forward hooks, never computed
from a formula, so they follow whatever input size is asked for.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from .quiet import quiet_torchscript

# fvcore's op names for what the paper counts, and for BatchNorm.
PAPER_OPS = ("conv", "linear")
BN_OPS = ("batch_norm",)


@contextlib.contextmanager
def inspection_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for a look at the model; every module's own mode is restored.

    Eval mode keeps BatchNorm's running statistics untouched by the probe.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


Size = "int | tuple[int, int]"  # S (square) or (H, W)


def hw(size) -> tuple[int, int]:
    """(H, W) of an input size given as S or (H, W)."""
    h, w = (size, size) if isinstance(size, int) else size
    if h <= 0 or w <= 0:
        raise ValueError(f"input size must be positive, got {size}")
    return int(h), int(w)


def size_text(size) -> str:
    h, w = hw(size)
    return f"{h}x{w}"


def example_input(model: nn.Module, input_size, batch_size: int = 1) -> torch.Tensor:
    in_channels = model.in_channels  # type: ignore[union-attr]
    return torch.randn(batch_size, in_channels, *hw(input_size), device=model_device(model))


@dataclass
class MacCount:
    """Multiply-adds of one forward pass at batch 1."""

    macs: int  # conv + fc: the paper's convention
    bn_macs: int  # BatchNorm, reported apart
    by_module: dict[str, int]  # conv + fc multiply-adds per module name ("" is the whole model)
    other_counted: dict[str, int] = field(default_factory=dict)  # counted by fvcore, left out of `macs`
    uncounted: dict[str, int] = field(default_factory=dict)  # op -> occurrences fvcore has no formula for


def count_macs(model: nn.Module, input_size) -> MacCount:
    """Count multiply-adds with fvcore at batch 1 and `input_size` (S or (H, W))."""
    with quiet_torchscript():  # fvcore scripts a loss at import and traces with torch.jit
        from fvcore.nn import FlopCountAnalysis

    # fvcore logs a warning per op it cannot count; we report them as data instead.
    logging.getLogger("fvcore.nn.jit_analysis").setLevel(logging.ERROR)
    with inspection_mode(model), quiet_torchscript():
        analysis = FlopCountAnalysis(model, example_input(model, input_size))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        per_module = analysis.by_module_and_operator()
        by_op = analysis.by_operator()
        uncounted = dict(sorted(Counter(analysis.unsupported_ops()).items()))
    # Python ints (JSON, exact comparisons) whatever type fvcore's handles return (numpy int64 in older releases)
    by_module = {name: int(sum(c.get(op, 0) for op in PAPER_OPS)) for name, c in per_module.items()}
    other = {op: int(n) for op, n in by_op.items() if op not in PAPER_OPS + BN_OPS}
    return MacCount(
        macs=int(sum(by_op.get(op, 0) for op in PAPER_OPS)),
        bn_macs=int(sum(by_op.get(op, 0) for op in BN_OPS)),
        by_module=by_module,
        other_counted=other,
        uncounted=uncounted,
    )


def count_macs_dispatcher(model: nn.Module, input_size) -> int:
    """The second, independent count: conv + fc multiply-adds from PyTorch's own counter
    (torch.utils.flop_counter.FlopCounterMode, at the dispatcher, 2 FLOPs per multiply-add), on a copy of the
    model on the meta device (no memory, no arithmetic). It has no formula for BatchNorm, pooling or the
    residual additions, so its total is the paper's convention as it stands."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    with inspection_mode(model):
        meta = copy.deepcopy(model).to("meta")
    meta.eval()
    x = example_input(model, input_size).to("meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(x)
    return counter.get_total_flops() // 2


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def output_shapes(model: nn.Module, input_size) -> dict[str, tuple[int, ...]]:
    """Output shape (without the batch dimension) of every named module, from one forward pass.

    A module called more than once (the shared ReLU of a block) keeps its last output.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    names = {module: name for name, module in model.named_modules()}

    def hook(module, _inp, out):
        if isinstance(out, torch.Tensor):
            shapes[names[module]] = tuple(out.shape[1:])

    _probe(model, input_size, names, hook)
    return shapes


def _probe(model: nn.Module, input_size, modules, hook) -> None:
    """One forward pass of `model` at batch 1 (inspection_mode) with `hook(module, inputs, output)` on each of
    `modules`."""
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with inspection_mode(model):
            model(example_input(model, input_size))
    finally:
        for h in handles:
            h.remove()


@dataclass
class StageRow:
    """One row of the paper's Table 1."""

    layer: str  # conv1, pool, conv2_x, ..., fc
    modules: list[str]  # module names the row covers
    output: tuple[int, int, int]  # C, H, W read off the model
    block: str  # the block as the paper writes it
    params: int
    macs: int

    def as_dict(self) -> dict[str, Any]:
        c, h, w = self.output
        return {"layer": self.layer, "modules": self.modules, "output_size": [h, w], "channels": c,
                "block": self.block, "params": self.params, "macs": self.macs}


def _conv_text(conv: nn.Conv2d, with_stride: bool = False) -> str:
    k = conv.kernel_size
    text = f"{k[0]}x{k[1]}, {conv.out_channels}"
    if with_stride and conv.stride[0] > 1:
        text += f", stride {conv.stride[0]}"
    return text


def _block_text(stage: nn.Sequential) -> str:
    first = stage[0]
    convs = [m for name, m in first.named_children() if isinstance(m, nn.Conv2d)]
    return f"[{' / '.join(_conv_text(c) for c in convs)}] x {len(stage)}"


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], shape[1], shape[2]) if len(shape) == 3 else (shape[0], 1, 1)


def stage_rows(model: nn.Module, input_size, macs: MacCount | None = None,
               shapes: dict[str, tuple[int, ...]] | None = None) -> list[StageRow]:
    """The paper's Table 1 for `model`: stem, pool, one row per stage, then avgpool + fc."""
    macs = macs or count_macs(model, input_size)
    shapes = shapes or output_shapes(model, input_size)
    m = macs.by_module
    if hasattr(model, "features"):  # VGG (models/vgg.py): its five stages of convolutions, then its three fc
        rows, start = [], 0
        for name, stage in model.named_stages():
            names = [f"features.{k}" for k in range(start, start + len(stage))]
            convs = [c for c in stage if isinstance(c, nn.Conv2d)]
            rows.append(StageRow(name, names, _shape3(shapes[names[-1]]),
                                 f"[{_conv_text(convs[0])}] x {len(convs)}, 2x2 max pool", param_count(stage),
                                 sum(m.get(n, 0) for n in names)))
            start += len(stage)
        hidden = model.spec.hidden
        return rows + [StageRow("fc", ["avgpool", "classifier"], _shape3(shapes["classifier"]),
                                f"fc-{hidden}, fc-{hidden}, {model.num_classes}-d fc", param_count(model.classifier),
                                m.get("classifier", 0))]
    rows = [StageRow("conv1", ["conv1", "bn1"], _shape3(shapes["bn1"]), _conv_text(model.conv1, True),
                     param_count(model.conv1) + param_count(model.bn1), m.get("conv1", 0))]
    if isinstance(model.maxpool, nn.MaxPool2d):
        rows.append(StageRow("pool", ["maxpool"], _shape3(shapes["maxpool"]), "3x3 max pool, stride 2", 0, 0))
    for i, (paper_name, stage) in enumerate(model.named_stages()):
        name = f"layer{i + 1}"
        rows.append(StageRow(paper_name, [name], _shape3(shapes[name]), _block_text(stage),
                             param_count(stage), m.get(name, 0)))
    rows.append(StageRow("fc", ["avgpool", "fc"], _shape3(shapes["fc"]),
                         f"global average pool, {model.num_classes}-d fc", param_count(model.fc), m.get("fc", 0)))
    return rows


@dataclass
class ModuleRow:
    """One row of `summary --detail`."""

    name: str
    type: str
    depth: int
    output: tuple[int, ...] | None
    params: int
    macs: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "depth": self.depth,
                "output_shape": list(self.output) if self.output else None,
                "params": self.params, "macs": self.macs}


def module_rows(model: nn.Module, input_size, macs: MacCount | None = None,
                shapes: dict[str, tuple[int, ...]] | None = None) -> list[ModuleRow]:
    """A row per module (parameters and multiply-adds include the module's children)."""
    macs = macs or count_macs(model, input_size)
    shapes = shapes or output_shapes(model, input_size)
    return [ModuleRow(name, type(mod).__name__, name.count(".") + 1, shapes.get(name), param_count(mod),
                      macs.by_module.get(name, 0))
            for name, mod in model.named_modules() if name]


def inspected_model(source: str, plain: bool = False, num_classes: int | None = None,
                    in_channels: int | None = None, shortcut: str = "") -> tuple[nn.Module, str, str | None, Any]:
    """What `summary` and `flops` look at: (model, registry name, checkpoint path or None, input size). `source`
    is a registry name (built with `num_classes`/`in_channels`; its native size), or a checkpoint or run folder
    (its trained model, at the size it was trained on when the checkpoint records it)."""
    from .checkpoint import names_weights
    from .errors import BadInput
    from .models import build_model, model_info, resolve_name

    if names_weights(source):
        from .checkpoint import model_from_checkpoint

        loaded = model_from_checkpoint(source)
        cfg = loaded.config.model
        for flag, given, have in (("--num-classes", num_classes, cfg.num_classes),
                                  ("--in-channels", in_channels, cfg.in_channels),
                                  ("--shortcut", shortcut or None, cfg.shortcut or model_info(cfg.name).shortcut)):
            if given is not None and given != have:
                raise BadInput(f"{loaded.path} holds a model with {flag} {have}; {flag} {given} does not apply")
        size = None
        if loaded.saved_input is not None:
            h, w = loaded.saved_input["image_size"]
            size = h if h == w else (h, w)
        return loaded.model, cfg.name, str(loaded.path), size
    name = resolve_name(source, None, plain)
    net = build_model(name, num_classes=num_classes, in_channels=in_channels or 3, shortcut=shortcut)
    return net, name, None, None


def memory(model: nn.Module, input_size, batch_size: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Bytes, fp32: parameters and buffers; the forward activations of a batch (every leaf module's output,
    in-place ReLUs excepted: they write over their input); and a training estimate: weights, gradients and
    SGD momentum (3 x parameters), buffers, and the forward activations kept for the backward pass."""
    params = sum(p.numel() for p in model.parameters()) * 4
    buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point()) * 4
    acts = 0
    for name, module in model.named_modules():
        if list(module.children()) or name not in shapes or getattr(module, "inplace", False):
            continue
        n = 1
        for d in shapes[name]:
            n *= d
        acts += n * batch_size * 4
    return {"parameters": params, "buffers": buffers, "forward_activations": acts,
            "training_estimate": 3 * params + buffers + acts}


def cpu_memory_left() -> int | None:
    """Bytes this process may still take on the CPU: the kernel's MemAvailable, or less where a cgroup v2 limit
    (a container, a SLURM job) is nearer; None where neither can be read (not Linux)."""
    import re
    from pathlib import Path

    from . import gate
    from .errors import BadInput

    def read(path: str) -> str:
        try:
            return gate.read_file(path, gate.Limits(2**20, 5.0)).decode(errors="replace")
        except BadInput:
            return ""

    left = []
    if found := re.search(r"^MemAvailable:\s+(\d+) kB", read("/proc/meminfo"), re.M):
        left.append(int(found[1]) * 1024)
    for line in read("/proc/self/cgroup").splitlines():  # "0::/path" (v2), "4:memory:/path" (v1)
        _, controllers, own = line.split(":", 2) if line.count(":") >= 2 else ("", "-", "")
        if controllers not in ("", "memory"):
            continue
        top = Path("/sys/fs/cgroup/memory" if controllers else "/sys/fs/cgroup")
        files = ("memory.limit_in_bytes", "memory.usage_in_bytes") if controllers else ("memory.max", "memory.current")
        group = top / own.strip("/")
        for folder in (group, *group.parents):  # the job's limit may be set on a parent (SLURM's job, not step)
            cap, used = (read(str(folder / name)).strip() for name in files)
            if cap.isdigit() and used.isdigit():  # the page cache counts as used there, yet gives way: not counted
                cache = re.search(r"^(?:total_cache|file) (\d+)$", read(str(folder / "memory.stat")), re.M)
                left.append(int(cap) - int(used) + (int(cache[1]) if cache else 0))
            if folder == top:
                break
    return min(left) if left else None


def inference_floor(model: nn.Module, input_size, batch_size: int) -> int:
    """Bytes one fp32 forward pass of `model` at `batch_size` takes at the least: parameters and buffers, and
    the largest input and output one leaf module holds at once (both are alive while it runs; once where it
    works in place). Shapes come from one batch-1 pass of `model` itself: a pass on the meta device would
    import the compiler (1.8 s of an eval's start here)."""
    largest = 0

    def hook(module, inputs, out):
        nonlocal largest
        held = out.numel() if isinstance(out, torch.Tensor) else 0
        if not getattr(module, "inplace", False):
            held += sum(t.numel() for t in inputs if isinstance(t, torch.Tensor))
        largest = max(largest, held)

    _probe(model, input_size, [m for m in model.modules() if not list(m.children())], hook)
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return weights + largest * batch_size * 4


def cpu_shortfall(model: nn.Module, input_size, batch_size: int, inference: bool = False) -> str | None:
    """Why one training step of `model` at `batch_size` certainly cannot fit in the CPU memory left ("one
    training step at batch 99,999 needs about 151.1 GiB and 21.3 GiB are left"): `memory`'s training estimate,
    which leaves out the kernels' workspaces, is more than `cpu_memory_left`; `inference`: one forward pass,
    `inference_floor`. None when it may fit, or nothing says how much is left. The kernel would kill the
    process part-way instead (no exception on the CPU), and a training run with it; asked before, it is one
    line."""
    left = cpu_memory_left()
    if left is None:
        return None
    if inference:
        need, what = inference_floor(model, input_size, batch_size), "one forward pass"
    else:
        shapes = output_shapes(model, input_size)
        need, what = memory(model, input_size, batch_size, shapes)["training_estimate"], "one training step"
    if need <= left:
        return None
    return (f"{what} at batch {batch_size:,} and {size_text(input_size)} needs {'at least' if inference else 'about'} "
            f"{_amount(need)} and {_amount(max(left, 0))} are left")


def refuse_on_cpu(model: nn.Module | None, input_size, batch_size: int, setting: str, name: str,
                  inference: bool = False, advice: str = "use a smaller batch") -> None:
    """One line (BadInput) when a step of `model` at `batch_size` (what `setting`, "--batch-size 4096", comes
    to) certainly cannot fit in the CPU memory left (`cpu_shortfall`): train, gradflow, eval, predict. None: no
    model to take shapes from (an exported file naming a model this registry lacks), nothing to check."""
    from .errors import BadInput

    if model is not None and (short := cpu_shortfall(model, input_size, batch_size, inference)):
        raise BadInput(f"{setting}: {name}'s {short} on this machine; {advice}")


def _amount(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def measured_training_peak(model: nn.Module, input_size, batch_size: int, device) -> int:
    """Bytes a CUDA device's allocator held at its peak for one fp32 training step of a copy of `model` (forward,
    cross-entropy backward, SGD with momentum) at `batch_size`: weights, gradients, momentum, activations and the
    kernels' workspaces, above what was allocated before. The measured twin of `memory`'s training estimate."""
    import copy

    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    net = copy.deepcopy(model).to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch_size, net.in_channels, *hw(input_size), device=device)
    y = torch.zeros(batch_size, dtype=torch.long, device=device)
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del net, opt, x, y
    torch.cuda.empty_cache()
    return peak


def shortcut_of(net: nn.Module) -> str:
    """The shortcut option a built net has: "A", "B", "C", or "none" (plain nets, VGG)."""
    return getattr(net.spec, "shortcut", "none")


COUNTER_TOLERANCE = 1e-3  # the two counters count the same convolutions and matmuls: they must agree to 0.1%


def counters_agree(fvcore_macs: int, dispatcher_macs: int) -> bool:
    return abs(fvcore_macs - dispatcher_macs) <= COUNTER_TOLERANCE * max(fvcore_macs, 1)


def flops_rows(names: list[str], input_size, tolerance: float, num_classes: int | None = None,
               in_channels: int | None = None, timer=None, on_model=None, shortcut: str = "") -> list[dict[str, Any]]:
    """`resnet flops`: per model (a registry name, or a checkpoint), parameters and multiply-adds against the
    paper's Table 1 figure (at 224x224 with 1000 classes and RGB, where it gives one), `ok` within `tolerance`;
    `timer(net, input_size, macs=...)`, when given, adds the timed forward pass (bench.time_forward);
    `on_model(done, total)` before each model (its bar shows at once) and at the end. Each row is also checked
    against the best published figure for the model (models/references.py): `reference` (None where none
    applies: `checked` False), `reference_deviation`, `reference_ok`."""
    from .models import model_info
    from .models.references import SOURCES, reference_for

    rows = []
    for source in names:
        if on_model is not None:
            on_model(len(rows), len(names))
        net, name, path, trained_at = inspected_model(source, num_classes=num_classes, in_channels=in_channels,
                                                      shortcut=shortcut)
        info = model_info(name)
        size = input_size or trained_at or info.input_size
        c = count_macs(net, size)
        second = count_macs_dispatcher(net, size)
        built = shortcut_of(net)
        as_paper = hw(size) == (224, 224) and net.num_classes == 1000 and net.in_channels == 3 \
            and built == info.shortcut  # Table 1 counts the paper's own shortcuts (B)
        paper = info.paper_gmacs if as_paper else None
        dev_pct = (c.macs / 1e9 - paper) / paper if paper else None
        row = {"model": name, "shortcut": built, "input_size": size if isinstance(size, int) else list(size),
               "params": param_count(net), "gmacs": c.macs / 1e9,
               "gflops": 2 * c.macs / 1e9, "bn_gmacs": c.bn_macs / 1e9, "paper_gmacs": paper,
               "deviation": dev_pct, "paper_ok": None if dev_pct is None else abs(dev_pct) <= tolerance,
               "gmacs_second_counter": second / 1e9, "counters_agree": counters_agree(c.macs, second),
               "uncounted_ops": c.uncounted}
        ref = reference_for(name)
        if ref is not None and (as_paper if ref.quantity == "gmacs" else
                                net.num_classes == 10 and net.in_channels == 3 and built == info.shortcut):
            measured = c.macs / 1e9 if ref.quantity == "gmacs" else param_count(net)
            ref_dev = (measured - ref.value) / ref.value
            row.update(reference={"quantity": ref.quantity, "value": ref.value, "source": SOURCES[ref.source],
                                  "label": ref.label()},
                       reference_deviation=ref_dev, reference_ok=abs(ref_dev) <= tolerance, checked=True)
        else:
            if ref is None:
                why = "no published figure"
            elif built != info.shortcut:
                why = f"its published figure is of the paper's shortcuts ({info.shortcut}), not {built}"
            else:
                why = f"its published figure is {ref.conditions}"
            row.update(reference=None, reference_deviation=None, reference_ok=None, checked=False, unchecked=why)
        row["ok"] = row["counters_agree"] and row["reference_ok"] is not False
        if path is not None:
            row["checkpoint"] = path
        if timer is not None:
            row["timing"] = timer(net, size, macs=c.macs)
        rows.append(row)
    if on_model is not None:
        on_model(len(rows), len(names))
    return rows


def summarize(source: str, input_size=None, detail: bool = False, plain: bool = False,
              num_classes: int | None = None, in_channels: int | None = None, batch_size: int = 1,
              max_depth: int | None = None, device: str | None = None, shortcut: str = "") -> dict[str, Any]:
    """`resnet summary`: the paper's Table 1 rows for a model (a registry name, or a trained checkpoint), read
    off the real module; parameters (trainable and frozen), memory for `batch_size`, and with a CUDA `device`
    one training step's measured peak; every module with `detail` (down to `max_depth` levels)."""
    from .models import model_info

    dev = None
    if device is not None:
        from .device import device_name, resolve_device
        from .errors import BadInput

        if not (device.strip().lower().startswith("cuda") and torch.cuda.is_available()):
            raise BadInput(f"summary --device {device}: measuring a training step's peak memory needs a CUDA GPU "
                           f"({'none is available here' if not torch.cuda.is_available() else 'give cuda or cuda:N'}"
                           "; the CPU keeps no allocator statistics); without --device the estimate is shown")
        dev = resolve_device(device)

    net, name, path, trained_at = inspected_model(source, plain, num_classes, in_channels, shortcut)
    info = model_info(name)
    size = input_size or trained_at or info.input_size
    macs = count_macs(net, size)
    shapes = output_shapes(net, size)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    out = {"model": name, "checkpoint": path, "input_size": size if isinstance(size, int) else list(size),
           "batch_size": batch_size, "family": info.family, "depth": info.depth, "plain": info.plain,
           "shortcut": shortcut_of(net),
           "num_classes": net.num_classes, "in_channels": net.in_channels,
           "stages": [r.as_dict() for r in stage_rows(net, size, macs, shapes)],
           "total": {"params": param_count(net), "macs": macs.macs, "bn_macs": macs.bn_macs},
           "params": {"total": param_count(net), "trainable": trainable, "frozen": param_count(net) - trainable},
           "memory_bytes": memory(net, size, batch_size, shapes),
           "counted_ops": "conv + fc multiply-adds (BatchNorm in bn_macs)"}
    if dev is not None:
        out["memory_bytes"]["measured_training_peak"] = measured_training_peak(net, size, batch_size, dev)
        out["device"] = device_name(dev)
    if detail:
        out["modules"] = [r.as_dict() for r in module_rows(net, size, macs, shapes)
                          if max_depth is None or r.depth <= max_depth]
    return out
