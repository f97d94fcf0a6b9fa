"""Which speed switches help on this machine: each against fp32 NCHW eager, interleaved in one process.

    python benchmarks/cpu_switches.py [--model resnet20] [--shape 3x32] [--shape 1x28] [--batch-size 128]
                                      [--rounds 8] [--iters 4] [--switches channels_last,bf16,compile]
                                      [--device cpu]

Separate `resnet bench` runs are a weak test of a 10-20% effect on a shared 2-core VM: the speed of the
machine drifts between runs, and the first run in a process pays allocator warm-up the second does not.
So this script builds every variant up front (through `resnet_cli.bench.make_step`, the same step
`resnet bench` times), warms each up, then times them in rounds, rotating the order every round, and
reports each variant's median over rounds, its warm-up time (compilation included) and its ratio to the baseline from the same rounds, with the
fraction of rounds in which the variant won. The result decides the `auto` defaults in
`resnet_cli/config.py` (`train.channels_last`, `train.precision`, `train.compile`) for CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BASELINE = "fp32 NCHW eager"
SWITCHES = ("channels_last", "bf16", "compile")


def variant(name: str) -> tuple[str, bool, bool]:
    """'compile+channels_last' -> (precision, channels_last, compile)."""
    parts = set() if name == BASELINE else set(name.split("+"))
    unknown = parts - set(SWITCHES)
    if unknown:
        raise ValueError(f"unknown switch {sorted(unknown)[0]!r}; choose from {', '.join(SWITCHES)}, joined by +")
    return ("bf16" if "bf16" in parts else "fp32"), "channels_last" in parts, "compile" in parts


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads; torch {torch.__version__}; "
            f"Python {platform.python_version()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--shape", action="append", help="CxS input: channels x size (repeatable; default 3x32 and 1x28)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--iters", type=int, default=4, help="steps per variant per round")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--switches", default="channels_last,bf16,compile,compile+channels_last",
                   help="comma list of variants: channels_last, bf16, compile, or several joined by +")
    p.add_argument("--modes", default="train,infer")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    import torch

    from resnet_cli import build_model
    from resnet_cli.bench import BenchConfig, make_step
    from resnet_cli.speed import Speed

    device = torch.device(args.device)
    names = [BASELINE] + [s.strip() for s in args.switches.split(",") if s.strip()]
    try:
        variants = {n: variant(n) for n in names}
    except ValueError as e:
        p.error(str(e))
    print(f"device: {machine()}")
    print(f"{args.model}, batch {args.batch_size}, {args.rounds} rounds x {args.iters} steps per variant, "
          f"order rotated each round; medians over rounds")
    for shape in args.shape or ["3x32", "1x28"]:
        channels, size = (int(v) for v in shape.split("x"))
        for mode in args.modes.split(","):
            steps, warm_s = {}, {}
            for name in names:
                precision, channels_last, compile_ = variants[name]
                torch.manual_seed(0)
                model = build_model(args.model, in_channels=channels).to(device)
                cfg = BenchConfig(mode=mode, batch_size=args.batch_size, input_size=size,
                                  speed=Speed(precision, channels_last, compile_))
                steps[name] = make_step(model, cfg, device)
                t0 = time.perf_counter()
                for _ in range(args.warmup):
                    steps[name]()
                warm_s[name] = time.perf_counter() - t0
            times: dict[str, list[float]] = {n: [] for n in names}
            for r in range(args.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                    for _ in range(args.iters):
                        steps[name]()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    times[name].append((time.perf_counter() - t0) / args.iters)
            base = times[BASELINE]
            print(f"\n{mode}, {channels}x{size}x{size}:")
            for name in names:
                med = statistics.median(times[name])
                ratio = statistics.median(b / t for b, t in zip(base, times[name]))
                wins = sum(t < b for b, t in zip(base, times[name]))
                line = f"  {name:24s} {args.batch_size / med:6.0f} img/s   warm-up {warm_s[name]:5.1f} s"
                if name != BASELINE:
                    line += f"   x{ratio:.2f} vs baseline (per-round median), faster in {wins}/{args.rounds} rounds"
                print(line, flush=True)


if __name__ == "__main__":
    main()
