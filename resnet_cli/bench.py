"""What `resnet bench` measures: training and inference speed of one model on one device.

Method: warm-up steps first (compilation, cuDNN autotuning, allocator growth),
then `repeats` timed runs of `iters` steps each; figures are the median with
the min-max spread (timing.py: CUDA events on GPU, wall clock on CPU).
Achieved TFLOP/s uses fvcore's forward count x 2 (a multiply-add is two
FLOPs); a training step counts as 3 x forward (forward, plus a backward that
costs about twice the forward). The hardware reference is measured in the same
run: a large bf16 matmul on a GPU (fp32 on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .timing import Timing, time_fn

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


@dataclass
class BenchConfig:
    mode: str  # train or infer
    batch_size: int
    input_size: int
    precision: str
    channels_last: bool
    compile: bool
    warmup: int = 5
    iters: int = 10
    repeats: int = 5


def _autocast(device: torch.device, precision: str):
    from .train.evaluate import autocast

    return autocast(device, precision if precision in ("bf16", "fp16") else "fp32")


def make_step(model: torch.nn.Module, cfg: BenchConfig, device: torch.device) -> Callable[[], Any]:
    """One training step (forward, backward, fused/foreach SGD) or one inference forward, on fixed data."""
    in_ch = model.conv1.in_channels
    x = torch.randn(cfg.batch_size, in_ch, cfg.input_size, cfg.input_size, device=device)
    y = torch.randint(0, model.fc.out_features, (cfg.batch_size,), device=device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if cfg.compile else model
    if cfg.mode == "infer":
        model.eval()

        def infer():
            with torch.inference_mode(), _autocast(device, cfg.precision):
                return forward(x)
        return infer
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                          **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")

    def train_step():
        with _autocast(device, cfg.precision):
            loss = F.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return train_step


def matmul_peak(device: torch.device, n: int | None = None) -> dict[str, Any]:
    """TFLOP/s of a large square matmul: bf16 on GPU (the tensor-core peak in practice), fp32 on CPU."""
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 1024)
    dtype = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = time_fn(lambda: a @ b, device, warmup=3, iters=10 if cuda else 2, repeats=5)
    return {"dtype": str(dtype).replace("torch.", ""), "n": n, "tflops": 2 * n**3 / (t.median_ms / 1000) / 1e12}


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def run_with_backoff(run: Callable[[int], Any], batch_size: int, on_retry: Callable[[int, int], None]) -> tuple[Any, int]:
    """Call run(batch); on out-of-memory halve the batch and retry (down to 1). Returns (result, batch)."""
    while True:
        try:
            return run(batch_size), batch_size
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
            if not is_oom(e) or batch_size == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            on_retry(batch_size, batch_size // 2)
            batch_size //= 2


def measure(model_name: str, cfg: BenchConfig, device: torch.device, fwd_macs: int) -> dict[str, Any]:
    """Build, warm up and time one mode; returns the reported figures."""
    from .registry import build_model, model_info

    info = model_info(model_name)
    model = build_model(model_name).to(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = cfg.precision == "tf32"
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    step = make_step(model, cfg, device)
    t: Timing = time_fn(step, device, warmup=cfg.warmup, iters=cfg.iters, repeats=cfg.repeats)
    secs = t.median_ms / 1000
    flops_per_image = 2 * fwd_macs * (3 if cfg.mode == "train" else 1)
    peak_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"model": model_name, "family": info.family, "mode": cfg.mode, "batch_size": cfg.batch_size,
            "input_size": cfg.input_size, "precision": cfg.precision, "channels_last": cfg.channels_last,
            "compile": cfg.compile, "ms_per_step": t.median_ms, "ms_min": t.min_ms, "ms_max": t.max_ms,
            "spread_pct": t.spread_pct(), "images_per_s": cfg.batch_size / secs,
            "tflops": flops_per_image * cfg.batch_size / secs / 1e12, "peak_memory_bytes": peak_mem,
            "repeats": t.repeats, "iters": t.iters}


def stage_times(model_name: str, cfg: BenchConfig, device: torch.device) -> dict[str, Any]:
    """One training step broken down: forward time per stage (stem, conv2_x.., head), backward, optimizer.

    Stage times come from forward hooks that synchronise around each stage, so they add a little
    overhead of their own; the step totals are timed separately without hooks.
    """
    import time

    from .registry import build_model

    model = build_model(model_name).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    x = torch.randn(cfg.batch_size, model.conv1.in_channels, cfg.input_size, cfg.input_size, device=device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.fc.out_features, (cfg.batch_size,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    parts = {"stem": ["conv1", "bn1", "relu", "maxpool"]}
    parts.update({f"conv{i + 2}_x": [f"layer{i + 1}"] for i in range(len(model.stages))})
    parts["head"] = ["avgpool", "fc"]
    starts: dict[str, float] = {}
    totals = {k: 0.0 for k in parts}
    handles = []
    for stage, names in parts.items():
        first, last = getattr(model, names[0]), getattr(model, names[-1])

        def pre(_m, _i, stage=stage):
            sync()
            starts.setdefault(stage, time.perf_counter())

        def post(_m, _i, _o, stage=stage):
            sync()
            totals[stage] += time.perf_counter() - starts.pop(stage)
        handles += [first.register_forward_pre_hook(pre), last.register_forward_hook(post)]
    phases = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    n = max(1, cfg.iters)
    try:
        for i in range(cfg.warmup + n):
            if i == cfg.warmup:
                totals = {k: 0.0 for k in parts}
                phases = {k: 0.0 for k in phases}
            with _autocast(device, cfg.precision):
                sync()
                t0 = time.perf_counter()
                loss = F.cross_entropy(model(x), y)
                sync()
                t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sync()
            t2 = time.perf_counter()
            opt.step()
            sync()
            t3 = time.perf_counter()
            phases["forward"] += t1 - t0
            phases["backward"] += t2 - t1
            phases["optimizer"] += t3 - t2
    finally:
        for h in handles:
            h.remove()
    return {"stages_ms": {k: 1000 * v / n for k, v in totals.items()},
            "phases_ms": {k: 1000 * v / n for k, v in phases.items()}}
