"""Our training path against the loop a typical user writes, in one process, on one device.

    python benchmarks/vs_reference.py [--model resnet20] [--batch-size 128] [--images 5120]
                                      [--input-size 32] [--workers 2] [--repeats 3] [--device auto]

Reference: eager mode, NCHW, fp32 (fp16 autocast + GradScaler on CUDA), a DataLoader over a
Dataset whose __getitem__ pads, crops, flips and normalises one image at a time, and a
`loss.item()` per step for the running loss. Ours: `resnet_cli.train.loop.Trainer` with the
device's defaults for a long run (data on the device, batched augmentation; channels_last, bf16, compile
and CUDA graphs on CUDA; channels_last and compile on CPU: train.compile_min_steps=0 compiles as `auto`
does a run of 20,000 steps, 2,000 on CPU). The first epoch of each is an untimed warm-up
(compilation, DataLoader workers).
Both train the same model on the same synthetic CIFAR-size data; epochs alternate, and the
medians are compared. Prints img/s for each and the ratio ours / reference.

A third loop is "tuned": what a skilled user writes by hand (hand_written.py's recipe, the H100 anchor's of
../shared/measurements/h100-2026-11-23/gpu_anchor.py, on our build_model): the data normalised once and
kept on the device, a random flip per batch, channels_last, bf16 autocast on CUDA, torch.compile (on
CUDA; on CPU with --tuned-compile), fused SGD on CUDA (foreach on CPU), no per-step `.item()`.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F
import hand_written  # the skilled user's recipe, one owner (benchmarks/ is on sys.path)


class PerSampleCifar(torch.utils.data.Dataset):
    """The torchvision-style pipeline: one image at a time, in Python."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.x, self.y, self.mean, self.std = x, y, mean.view(-1, 1, 1), std.view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        img = self.x[i].float().div(255)
        img = F.pad(img, (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2,)).tolist()
        h, w = self.x.shape[-2:]
        img = img[:, dy:dy + h, dx:dx + w]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return (img - self.mean) / self.std, self.y[i]


def reference_epoch(model, loader, opt, scaler, device, amp: bool) -> float:
    model.train()
    running = 0.0
    t0 = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        running += loss.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def tuned_epoch(forward, model, x: torch.Tensor, y: torch.Tensor, opt, batch_size: int, device,
                generator: torch.Generator) -> float:
    """The hand-tuned loop: resident, normalised data; a permutation and a flip per batch; no host syncs."""
    model.train()
    t0 = time.perf_counter()
    perm = torch.randperm(len(x), device=device, generator=generator)
    for i in range(len(x) // batch_size):
        sel = perm[i * batch_size:(i + 1) * batch_size]
        xb = x[sel]
        flip = torch.rand(len(sel), device=device, generator=generator) < 0.5
        xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb).contiguous(memory_format=torch.channels_last)
        hand_written.train_step(forward, opt, xb, y[sel], device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=5120)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--tuned-compile", choices=["auto", "on", "off"], default="auto",
                   help="torch.compile in the tuned loop (auto: on CUDA only)")
    args = p.parse_args()

    from resnet_cli import build_model
    from resnet_cli import config as C
    from resnet_cli.device import device_name, resolve_device
    from resnet_cli.train.loop import Trainer

    device = resolve_device(args.device)
    cfg = C.resolve(flags={"model.name": args.model, "data.dataset": "synthetic", "data.synthetic_train": args.images,
                           "data.synthetic_test": 256, "data.image_size": args.input_size,
                           "train.batch_size": args.batch_size, "train.epochs": 100, "train.log_interval": 50,
                           "train.compile_min_steps": 0, "run.device": args.device})
    ours = Trainer.for_config(cfg)
    data = ours.run.data
    mean, std = data.input.normalizer("cpu")
    torch.manual_seed(0)
    model = build_model(args.model, num_classes=data.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loader = torch.utils.data.DataLoader(PerSampleCifar(data.train_x, data.train_y, mean, std),
                                         batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, pin_memory=amp,
                                         persistent_workers=args.workers > 0)
    n = len(loader) * args.batch_size
    compile_tuned = args.tuned_compile == "on" or (args.tuned_compile == "auto" and device.type == "cuda")
    tuned_model, tuned_forward, tuned_opt = hand_written.tuned(args.model, data.num_classes, device, compile_tuned)
    tx = ((data.train_x.to(device).float() / 255 - mean.to(device).view(1, -1, 1, 1))
          / std.to(device).view(1, -1, 1, 1))
    ty = data.train_y.to(device)
    tg = torch.Generator(device=device).manual_seed(0)
    reference_epoch(model, loader, opt, scaler, device, amp)  # warm-up (and worker start-up)
    ours.train_epoch()
    tuned_epoch(tuned_forward, tuned_model, tx, ty, tuned_opt, args.batch_size, device, tg)  # warm-up, compile
    ref_s, our_s, tuned_s = [], [], []
    for _ in range(args.repeats):
        ref_s.append(reference_epoch(model, loader, opt, scaler, device, amp))
        t0 = time.perf_counter()
        ours.train_epoch()
        our_s.append(time.perf_counter() - t0)
        tuned_s.append(tuned_epoch(tuned_forward, tuned_model, tx, ty, tuned_opt, args.batch_size, device, tg))
    ref, our = n / statistics.median(ref_s), n / statistics.median(our_s)
    tuned = (len(tx) // args.batch_size) * args.batch_size / statistics.median(tuned_s)
    print(f"device: {device_name(device)}; torch {torch.__version__}"
          + (f", CUDA {torch.version.cuda}" if device.type == "cuda" else "") + f"; Python {platform.python_version()}")
    print(f"{args.model}, {args.input_size}x{args.input_size}, batch {args.batch_size}, {n} images per epoch, "
          f"{args.repeats} alternating epochs each (medians)")
    print(f"reference (eager NCHW {'fp16 AMP' if amp else 'fp32'}, DataLoader x{args.workers} workers): "
          f"{ref:,.0f} img/s  (epochs: {', '.join(f'{n / s:,.0f}' for s in ref_s)})")
    print(f"resnet-cli ({ours.run.speed.precision}, channels_last={ours.run.speed.channels_last}, "
          f"compile={ours.run.speed.compile}, cuda_graphs={ours.run.speed.cuda_graphs}, data on device): "
          f"{our:,.0f} img/s  "
          f"(epochs: {', '.join(f'{n / s:,.0f}' for s in our_s)})")
    print(f"tuned by hand ({'bf16' if device.type == 'cuda' else 'fp32'}, channels_last, compile={compile_tuned}, "
          f"data on device, no input pipeline work but a flip): {tuned:,.0f} img/s  "
          f"(epochs: {', '.join(f'{n / s:,.0f}' for s in tuned_s)})")
    print(f"ratio ours / reference: {our / ref:.2f}x; ours / tuned by hand: {our / tuned:.2f}x")


if __name__ == "__main__":
    main()
