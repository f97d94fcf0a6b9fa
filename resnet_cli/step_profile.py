"""`resnet bench --profile`: where a timed step's time goes, from torch.profiler.

On CUDA: the device's kernels over a few steps, run exactly as they were timed (compiled, replayed from the CUDA
graph where that ran): how much of the step the GPU was busy (the union of the kernels' intervals), the rest idle
(host gaps: launches, syncs, Python), the copies and the kernels that took the most time. The idle figure is the
timed step (CUDA events, unprofiled) less the busy time, so the profiler's own host overhead is not counted as a
gap. On CPU: the operators with the most time of their own.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from typing import Any, Callable

import torch


@contextlib.contextmanager
def _native_stderr_silenced():
    """The profiler's native start and stop lines (kineto writes them to file descriptor 2) kept off the user's
    terminal: only around the start and the stop, never around the steps, so no error of theirs is hidden."""
    import sys

    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)  # written to, never read
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def busy_us(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of [start, end) intervals (kernels on several streams overlap)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def profile_step(step: Callable[[], Any], device: torch.device, steps: int, ms_per_step: float,
                 top: int = 10) -> dict[str, Any]:
    """Profile `steps` calls of an already warmed-up `step`; `ms_per_step` is its unprofiled timing."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []))
    with _native_stderr_silenced():
        prof.start()
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
        wall_ms = (time.perf_counter() - t0) * 1000 / steps
    finally:
        with _native_stderr_silenced():
            prof.stop()
    names: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])  # name -> [calls, microseconds]
    out: dict[str, Any] = {"steps": steps, "ms_per_step": ms_per_step, "profiled_wall_ms_per_step": wall_ms}
    if cuda:
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
        for e in kernels:
            names[e.name][0] += 1
            names[e.name][1] += e.time_range.end - e.time_range.start
        busy = busy_us([(e.time_range.start, e.time_range.end) for e in kernels]) / 1000 / steps
        copies = sum(v[1] for k, v in names.items() if k.startswith("Memcpy")) / 1000 / steps
        out.update({"kind": "cuda kernels", "busy_ms_per_step": busy, "idle_ms_per_step": max(0.0, ms_per_step - busy),
                    "copy_ms_per_step": copies, "kernels_seen": bool(kernels)})
    else:
        for k in prof.key_averages():
            names[k.key] = [k.count, k.self_cpu_time_total]
    total_us = sum(v[1] for v in names.values())
    if not cuda:
        out.update({"kind": "cpu operators (self time)", "op_ms_per_step": total_us / 1000 / steps})
    ranked = sorted(names.items(), key=lambda kv: -kv[1][1])[:top]
    out["top"] = [{"name": name, "calls_per_step": calls / steps, "ms_per_step": us / 1000 / steps,
                   "share": us / total_us if total_us else 0.0} for name, (calls, us) in ranked]
    return out
