"""Timing shared by `bench` and `flops --device`: warm-up, then repeated timed runs.

On CUDA each repeat is timed with CUDA events (GPU time, no host clock skew);
on CPU with `time.perf_counter`. Figures are the median over repeats, with the
min and max as the spread.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Timing:
    """Milliseconds per call of the timed function."""

    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    iters: int  # calls per repeat
    warmup_s: float = 0.0  # wall time of the untimed warm-up calls (compilation, autotuning, allocator growth)

    def spread_pct(self) -> float:
        return 100.0 * (self.max_ms - self.min_ms) / self.median_ms if self.median_ms else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "min_ms": self.min_ms, "max_ms": self.max_ms,
                "repeats": self.repeats, "iters": self.iters, "warmup_s": self.warmup_s}


def time_fn(fn: Callable[[], Any], device, warmup: int = 3, iters: int = 5, repeats: int = 5) -> Timing:
    """Time `fn()`; each repeat runs it `iters` times and counts their mean. On CUDA, `device` is made the
    current device first: events record on the current device's stream, and cuda:1's work is not on cuda:0's."""
    import torch

    if warmup < 0 or iters < 1 or repeats < 1:
        raise ValueError("warmup >= 0, iters >= 1 and repeats >= 1 are required")
    if getattr(device, "type", str(device)) == "cuda":
        with torch.cuda.device(device):
            return _time(fn, device, True, warmup, iters, repeats)
    return _time(fn, device, False, warmup, iters, repeats)


def _time(fn: Callable[[], Any], device, cuda: bool, warmup: int, iters: int, repeats: int) -> Timing:
    import torch

    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    warmup_s = time.perf_counter() - t0
    samples = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / iters)
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            samples.append((time.perf_counter() - t0) * 1000.0 / iters)
    return Timing(statistics.median(samples), min(samples), max(samples), repeats, iters, warmup_s)
