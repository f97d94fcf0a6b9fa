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

from .speed import Speed
from .timing import Timing, time_fn
from .train import graphs


@dataclass
class BenchConfig:
    mode: str  # train or infer
    batch_size: int
    input_size: int | tuple[int, int]
    speed: Speed
    warmup: int = 5
    iters: int = 10
    repeats: int = 5
    profile: bool = False  # then profile `iters` more steps (step_profile.py)


def synthetic_batch(model: torch.nn.Module, batch_size: int, input_size, speed: Speed,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random batch in the model's input shape (S or (H, W)) and the speed's memory format."""
    from .analysis import hw

    x = torch.randn(batch_size, model.in_channels, *hw(input_size), device=device)
    y = torch.randint(0, model.num_classes, (batch_size,), device=device)
    return x.contiguous(memory_format=speed.memory_format()), y


def make_step(model: torch.nn.Module, cfg: BenchConfig, device: torch.device) -> Callable[[], Any]:
    """One training step (train's own `TrainStep`, with train's default SGD) or one inference forward."""
    from .config import TrainConfig
    from .train.step import TrainStep, make_optimizer

    speed = cfg.speed
    model.to(device, memory_format=speed.memory_format())
    x, y = synthetic_batch(model, cfg.batch_size, cfg.input_size, speed, device)
    if cfg.mode == "infer":
        model.eval()
        forward = speed.forward(model)

        def infer():
            with torch.inference_mode(), speed.autocast(device):
                return forward(x)
        return infer
    model.train()
    failed: list[BaseException] = []
    step = TrainStep(model, make_optimizer(model, TrainConfig(), device), speed, device,
                     on_graph_fallback=failed.append)

    def train():
        return step(x, y)
    train.train_step, train.graph_failures = step, failed  # what ran: measure() reports it
    return train


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
    """Build, warm up and time one mode; returns the reported figures. On the CPU, a step (or a forward pass)
    that cannot fit is out of memory before it is tried (the kernel would kill the process, not raise)."""
    from .analysis import cpu_shortfall
    from .models import build_model, model_info

    info = model_info(model_name)
    model = build_model(model_name)
    if device.type == "cpu" and (short := cpu_shortfall(model, cfg.input_size, cfg.batch_size,
                                                         inference=cfg.mode == "infer")):
        raise RuntimeError(f"out of memory on the CPU, before trying: {short}")  # run_with_backoff halves the batch
    model = model.to(device)
    cfg.speed.configure_backends(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = make_step(model, cfg, device)
    graphed = cfg.mode == "train" and cfg.speed.cuda_graphs
    warmup = max(cfg.warmup, graphs.WARMUP + 1) if graphed else cfg.warmup  # the capture is never timed
    t: Timing = time_fn(step, device, warmup=warmup, iters=cfg.iters, repeats=cfg.repeats)
    graph = getattr(getattr(step, "train_step", None), "graph", None)
    replayed = bool(graphed and graph is not None and graph.graph is not None)  # a failed capture leaves none
    secs = t.median_ms / 1000
    flops_per_image = 2 * fwd_macs * (3 if cfg.mode == "train" else 1)
    peak_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    profile = None
    if cfg.profile:
        from .step_profile import profile_step

        profile = profile_step(step, device, cfg.iters, t.median_ms)
    return {"model": model_name, "family": info.family, "mode": cfg.mode, "batch_size": cfg.batch_size,
            "input_size": cfg.input_size, "precision": cfg.speed.precision,
            "channels_last": cfg.speed.channels_last, "compile": cfg.speed.compile,
            "compile_mode": cfg.speed.compile_mode if cfg.speed.compile else None,
            "cuda_graphs": replayed,  # what was timed: False when the capture fell back to the plain step
            "cuda_graphs_fell_back": bool(graphed and not replayed),
            "cuda_graph_pool_bytes": graph.pool_bytes if replayed else None,  # what a plain step would need beside
            "cuda_graphs_note": graphs.fallback_message(step.graph_failures[0])
            if graphed and getattr(step, "graph_failures", None) else None,
            "warmup_s": t.warmup_s, "ms_per_step": t.median_ms, "ms_min": t.min_ms, "ms_max": t.max_ms,
            "spread_pct": t.spread_pct(), "images_per_s": cfg.batch_size / secs,
            "tflops": flops_per_image * cfg.batch_size / secs / 1e12, "peak_memory_bytes": peak_mem,
            "repeats": t.repeats, "iters": t.iters, **({"profile": profile} if profile else {})}


def stage_times(model_name: str, cfg: BenchConfig, device: torch.device) -> dict[str, Any]:
    """One training step broken down: forward time per stage (stem, conv2_x.., head) and the step's three
    phases (forward with the loss, backward, optimizer), timed on train's own `TrainStep`, eager.

    Stage times come from forward hooks that synchronise around each stage, so they add a little
    overhead of their own; the step totals are timed separately without hooks.
    """
    import dataclasses
    import time

    from .config import TrainConfig
    from .models import build_model
    from .train.step import TrainStep, make_optimizer

    speed = dataclasses.replace(cfg.speed, compile=False, cuda_graphs=False)  # phases need the eager step
    model = build_model(model_name).to(device, memory_format=speed.memory_format())
    model.train()
    x, y = synthetic_batch(model, cfg.batch_size, cfg.input_size, speed, device)
    step = TrainStep(model, make_optimizer(model, TrainConfig(), device), speed, device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    parts = {"stem": [model.conv1, model.maxpool]}
    parts.update({name: [stage] for name, stage in model.named_stages()})
    parts["head"] = [model.avgpool, model.fc]
    starts: dict[str, float] = {}
    totals = {k: 0.0 for k in parts}
    handles = []
    for stage, (first, *rest) in parts.items():
        last = rest[-1] if rest else first

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
            sync()
            t0 = time.perf_counter()
            loss, _ = step.forward_loss(x, y)
            sync()
            t1 = time.perf_counter()
            step.backward(loss)
            sync()
            t2 = time.perf_counter()
            step.update()
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


def time_forward(net: torch.nn.Module, size: int, batch_size: int, device: torch.device, macs: int) -> dict[str, Any]:
    """`flops --device`: the plain fp32 forward (NCHW, eager) timed at `batch_size`."""
    from .device import device_name

    speed = Speed.resolve(device, precision="fp32", channels_last="off", compile="off")
    speed.configure_backends(device)  # fp32 means no TF32 convolutions; cuDNN autotuned, as bench and train run
    step = make_step(net, BenchConfig("infer", batch_size, size, speed), device)
    t = time_fn(step, device, warmup=2, iters=1 if device.type == "cpu" else 10, repeats=5)
    secs = t.median_ms / 1000
    return {"device": device_name(device), "batch_size": batch_size, "precision": "fp32", **t.as_dict(),
            "images_per_s": batch_size / secs, "tflops": 2 * macs * batch_size / secs / 1e12}


def run_bench(name: str, modes: list[str], batch_size: int, input_size: int | None, speed: Speed,
              device: torch.device, warmup: int = 5, iters: int = 10, repeats: int = 5,
              detail: bool = False, profile: bool = False) -> dict[str, Any]:
    """`resnet bench`: each mode timed (halving the batch on out-of-memory), against a matmul peak measured
    in the same run; with `detail`, one training step split by stage and phase; with `profile`, where each
    mode's step spends its time."""
    from .analysis import count_macs
    from .device import device_name
    from .models import build_model, model_info

    size = input_size or model_info(name).input_size
    macs = count_macs(build_model(name), size).macs
    notes: list[str] = []
    results = []
    for m in modes:
        def run(bs: int, m=m):
            return measure(name, BenchConfig(m, bs, size, speed, warmup, iters, repeats, profile), device, macs)

        res, _ = run_with_backoff(run, batch_size, lambda old, new, m=m: notes.append(
            f"{m}: out of memory at batch {old}; retried at {new}"))
        results.append(res)
        if res.get("cuda_graphs_note"):
            notes.append(f"{m}: {res['cuda_graphs_note']} The figures are the plain step's.")
    peak = matmul_peak(device)
    for r in results:
        r["pct_of_matmul_peak"] = 100 * r["tflops"] / peak["tflops"]
    out = {"model": name, "device": device_name(device), "torch": torch.__version__,
           "cuda": torch.version.cuda if device.type == "cuda" else None, "fwd_gmacs": macs / 1e9,
           "matmul_peak": peak, "results": results, "notes": notes,
           "flops_rule": "TFLOP/s = 2 x forward MACs x images / s; training counts 3 x forward"}
    if detail:
        out["detail"] = stage_times(name, BenchConfig("train", results[0]["batch_size"], size, speed,
                                                      min(warmup, 2), min(iters, 5), 1), device)
    return out


def run_exported_bench(path, batch_size: int, device: torch.device, warmup: int = 5, iters: int = 10,
                       repeats: int = 5, trust: bool = False) -> dict[str, Any]:
    """`resnet bench FILE.onnx|FILE.pt2 --mode infer`: the exported file timed in its own runtime (onnxruntime on
    the CPU, torch.export on the device it was traced on), beside the PyTorch model it was exported from (the
    registry model its metadata names, fp32, eager) on the same device in the same run; a file traced for one
    batch size runs at that one."""
    from .analysis import count_macs, refuse_on_cpu
    from .device import device_name
    from .exported import load_exported

    net = load_exported(path, trust)
    size = tuple(net.spec.image_size)
    bs = net.forward_batch(batch_size)
    torch_net = net.twin()
    if net.device.type == "cpu":  # onnxruntime's activations are at least the model's
        refuse_on_cpu(torch_net, size, bs, f"--batch-size {batch_size}", net.name, inference=True)
    macs = count_macs(torch_net, size).macs
    x = torch.randn(bs, net.spec.channels, *size)
    results = []
    for runtime, fn, dev in ((net.runtime, net, net.device), ("pytorch (fp32, eager)", torch_net.to(net.device),
                                                                net.device)):
        xd = x.to(dev)

        def step(fn=fn, xd=xd):
            with torch.inference_mode():
                return fn(xd)

        t = time_fn(step, dev, warmup=warmup, iters=iters, repeats=repeats)
        secs = t.median_ms / 1000
        results.append({"runtime": runtime, "mode": "infer", "batch_size": bs, "input_size": list(size),
                        "ms_per_step": t.median_ms, "spread_pct": t.spread_pct(), "images_per_s": bs / secs,
                        "tflops": 2 * macs * bs / secs / 1e12, "warmup_s": t.warmup_s})
    ratio = results[0]["images_per_s"] / results[1]["images_per_s"]
    return {"file": str(path), "model": net.name, "runtime": net.runtime, "device": device_name(net.device),
            "torch": torch.__version__, "fwd_gmacs": macs / 1e9, "results": results, "vs_pytorch": ratio,
            "note": f"{net.runtime} runs where the file says (device {net.device}); --device does not move it"
            if device != net.device else ""}
