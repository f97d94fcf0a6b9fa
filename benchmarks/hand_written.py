"""The best hand-written ResNet step: the reference `resnet bench` is held to (issue 35: ours >= 1.10x).

    python benchmarks/hand_written.py [--model resnet50-v1.5] [--batch-size 256] [--mode both]
                                      [--device auto] [--compile auto|on|off] [--json]

What a skilled user writes without resnet-cli's training code, the recipe of the H100 anchor of 2026-11-23
(../shared/measurements/h100-2026-11-23/gpu_anchor.py, 5,660 img/s training ResNet-50 at batch 256): the model from
`build_model` (for resnet50-v1.5 that is torchvision's ResNet-50, parameter for parameter, without needing
torchvision), channels_last, bf16 autocast on CUDA (fp32 on CPU), torch.compile of the model (on CUDA; on CPU
with --compile on), cuDNN autotuning, SGD with momentum and weight decay, fused on CUDA (foreach on CPU), one
random batch resident on the device, no host sync in the step. Inference is the compiled forward under
inference_mode. No CUDA graph: a hand-written loop seldom captures one.

Timed the way `resnet bench` times (resnet_cli.timing: warm-up, then CUDA events, the median of the repeats), so
that the two figures differ only by the step. One line per mode; with --json, one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F


def tuned(model_name: str, num_classes: int | None, device: torch.device, compile_model: bool):
    """The hand-tuned model, its forward (compiled or not) and its optimizer: the one recipe of a skilled user,
    shared with vs_reference.py's "tuned by hand" loop."""
    from resnet_cli import build_model

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    model = build_model(model_name, **kwargs).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4,
                          **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    return model, torch.compile(model) if compile_model else model, opt


def autocast(device: torch.device):
    """bf16 on CUDA; fp32 (autocast off) on CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def train_step(forward, opt, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> torch.Tensor:
    with autocast(device):
        loss = F.cross_entropy(forward(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def measure(mode: str, a: argparse.Namespace, device: torch.device, compile_model: bool) -> dict:
    from resnet_cli.timing import time_fn

    model, forward, opt = tuned(a.model, None, device, compile_model)
    size = a.input_size or (224 if model.num_classes == 1000 else 32)
    x = torch.randn(a.batch_size, model.in_channels, size, size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.num_classes, (a.batch_size,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if mode == "train":
        model.train()

        def step():
            return train_step(forward, opt, x, y, device)
    else:
        model.eval()

        def step():
            with torch.inference_mode(), autocast(device):
                return forward(x)
    t = time_fn(step, device, warmup=a.warmup, iters=a.iters, repeats=a.repeats)
    return {"hand_written": mode, "model": a.model, "batch_size": a.batch_size, "input_size": size,
            "precision": "bf16" if device.type == "cuda" else "fp32", "channels_last": True, "compile": compile_model,
            "warmup_s": t.warmup_s, "ms_per_step": t.median_ms, "spread_pct": t.spread_pct(),
            "images_per_s": a.batch_size / (t.median_ms / 1000), "repeats": t.repeats, "iters": t.iters,
            "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50-v1.5")
    p.add_argument("-b", "--batch-size", type=int, default=256)
    p.add_argument("-s", "--input-size", type=int, default=0, help="0: the model's native size, 224 or 32")
    p.add_argument("--mode", choices=["train", "infer", "both"], default="both")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="auto: on CUDA only")
    p.add_argument("--warmup", type=int, default=15, help="untimed steps first (compilation, autotuning)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    modes = ["train", "infer"] if a.mode == "both" else [a.mode]

    from resnet_cli.device import device_name, resolve_device

    device = resolve_device(a.device)
    compile_model = a.compile == "on" or (a.compile == "auto" and device.type == "cuda")
    if not a.json:
        print(f"device: {device_name(device)}; torch {torch.__version__}"
              + (f", CUDA {torch.version.cuda}" if device.type == "cuda" else "")
              + f"; Python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC")
    for mode in modes:
        r = measure(mode, a, device, compile_model)
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"hand-written {mode}: {r['model']}, batch {r['batch_size']}, {r['input_size']} px, "
                  f"{r['precision']}, channels_last, compile={compile_model}: {r['images_per_s']:,.0f} img/s "
                  f"({r['ms_per_step']:.2f} ms/step, spread {r['spread_pct']:.1f}%, warm-up {r['warmup_s']:.1f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
