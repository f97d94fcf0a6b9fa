"""The device's RandAugment (data/augment.py) on one training batch, against the ResNet-50 step it feeds (#34 item 7).

    python benchmarks/randaugment.py [--device cuda] [--batch-size 256] [--size 224] [--repeats 5] [--json]

Times, per batch of uint8 images (smooth colour fields with noise), median of --repeats after a warm-up, with the
device synchronised around each: `auto_augment` as the imagenet recipes use it (RandAugment 2,9 and
TrivialAugment), timm's RandAugment as the timm presets use it (`timm_rand_augment`, rand-m9-mstd0.5-inc1),
equalize alone on the whole batch (the heaviest op), and, with --step (default on CUDA), one ResNet-50 v1.5
training step (bf16, channels_last, eager) on the same batch: the augmentation's share of it.
Also the device memory the augmentation allocated at its peak (CUDA). Any commit that has `auto_augment` runs it,
so the same command times the code before and after a change.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median milliseconds of `fn()` over `repeats` calls after one warm-up call."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def images(n: int, size: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    low = torch.randint(0, 256, (n, 3, 8, 8), generator=g).float()
    smooth = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    noisy = smooth + torch.randn(n, 3, size, size, generator=g) * 12
    return noisy.clamp(0, 255).to(torch.uint8).to(device)


def step_ms(x: torch.Tensor, device: torch.device, repeats: int) -> float:
    from resnet_cli.models import build_model

    model = build_model("resnet50-v1.5").to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    y = torch.randint(0, 1000, (len(x),), device=device)
    xf = x.float().div(255).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast(device.type, torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(xf), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(step, device, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--step", action=argparse.BooleanOptionalAction, default=None,
                   help="time a ResNet-50 step on the batch too (default: on CUDA)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    from resnet_cli.data import augment as A

    device = torch.device(a.device)
    x = images(a.batch_size, a.size, device)

    def seeded(seed: int = 1) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(seed)

    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "batch": list(x.shape),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    out["randaugment_2_9_ms"] = timed(lambda: A.auto_augment(x, "rand", 2, 9, seeded()), device, a.repeats)
    if device.type == "cuda":
        out["randaugment_peak_mb"] = round((torch.cuda.max_memory_allocated(device) - base) / 2**20)
    out["trivialaugment_ms"] = timed(lambda: A.auto_augment(x, "trivial", 1, 0, seeded()), device, a.repeats)
    if hasattr(A, "timm_rand_augment"):  # commits from 2026-12-07 on: timm's rand-m9-mstd0.5-inc1
        fill = torch.tensor([124.0, 116.0, 104.0], device=device)
        out["timm_rand_m9_mstd05_inc1_ms"] = timed(
            lambda: A.timm_rand_augment(x, 2, 9.0, 0.5, 10.0, True, 0.5, seeded(), fill), device, a.repeats)
    xf = x.float()
    out["equalize_whole_batch_ms"] = timed(lambda: A._equalize(xf), device, a.repeats)
    if a.step if a.step is not None else device.type == "cuda":
        out["resnet50_step_ms"] = step_ms(x, device, a.repeats)
        out["randaugment_share_of_step"] = round(out["randaugment_2_9_ms"] / out["resnet50_step_ms"], 4)
    for k, v in out.items():
        if isinstance(v, float):
            out[k] = round(v, 2)
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:<28} {v}")


if __name__ == "__main__":
    main()
