"""`resnet bench`: how fast a model trains and infers on this device, and how far from the hardware peak."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional, get_args

import typer

from .. import config
from ._common import (DepthOpt, DeviceOpt, InputSizeOpt, JsonOpt, ModelOrExportedArg, PlainOpt, TrustExportedOpt,
                      check_positive, choices, console, parse_input_size, print_json)


class Mode(str, Enum):
    train = "train"
    infer = "infer"
    both = "both"


Precision = choices("Precision", [p for p in get_args(config.Precision) if p != "auto"])
CompileMode = choices("CompileMode", get_args(config.CompileMode))


def bench(
    model: ModelOrExportedArg = None,
    depth: DepthOpt = None,
    plain: PlainOpt = False,
    mode: Annotated[Mode, typer.Option("--mode", help="Time training steps, inference, or both.")] = Mode.both,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Batch size (halved on out-of-memory).")]
    = 64,
    input_size: InputSizeOpt = None,
    precision: Annotated[Optional[Precision], typer.Option(
        "--precision", help="fp32, tf32, bf16 or fp16 autocast \\[default: bf16 on CUDA, fp32 on CPU].",
        show_default=False)] = None,
    channels_last: Annotated[Optional[bool], typer.Option(
        "--channels-last/--no-channels-last", help="NHWC memory format \\[default: on for CUDA and oneDNN CPUs].",
        show_default=False)] = None,
    compile_: Annotated[Optional[bool], typer.Option(
        "--compile/--no-compile", help="torch.compile the model \\[default: as `train`: only runs of >= "
        f"train.compile_min_steps steps ({config.COMPILE_MIN_STEPS['cpu']:,} on CPU, "
        f"{config.COMPILE_MIN_STEPS['cuda']:,} on CUDA) compile, so off for a bench; --compile measures what a "
        "long run trains at].", show_default=False)] = None,
    compile_mode: Annotated[CompileMode, typer.Option(
        "--compile-mode", metavar="MODE", help="torch.compile mode: " + ", ".join(m.value for m in CompileMode)
        + "; reduce-overhead adds CUDA graphs (CUDA only).")]
    = CompileMode("default"),
    cuda_graphs: Annotated[Optional[bool], typer.Option(
        "--cuda-graphs/--no-cuda-graphs", help="Replay the training step from one CUDA graph \\[default: as "
        "`train`: on for CUDA where it applies].", show_default=False)] = None,
    device: DeviceOpt = "auto",
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps first.")] = 5,
    iters: Annotated[int, typer.Option("--iters", help="Steps per timed repeat.")] = 10,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed repeats (median and spread).")] = 5,
    detail: Annotated[bool, typer.Option("--detail", help="Break a training step into stages and phases.")] = False,
    profile: Annotated[bool, typer.Option("--profile", help="Profile --iters more steps, as timed: GPU busy and "
                                          "idle time, copies, and the kernels (on CPU, the operators) that take "
                                          "the longest.")] = False,
    trust_exported: TrustExportedOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Measure images/s, ms per step, peak memory and achieved TFLOP/s (vs a matmul peak measured now).

    TFLOP/s = 2 x fvcore multiply-adds x images / time; a training step counts 3 x the forward.

    Example: [bold]resnet bench resnet50-v1.5 --batch-size 256 --precision bf16 --compile[/bold]
    """
    from ..errors import BadInput
    from ..exported import is_exported
    from ..models import resolve_name

    if model is not None and is_exported(model):  # an exported file: inference in its own runtime
        if mode is Mode.train:
            raise BadInput(f"{model} is an exported model: it only infers (--mode infer)")
        from ..bench import run_exported_bench
        from ..device import resolve_device

        out = run_exported_bench(model, batch_size, resolve_device(device), warmup, iters, repeats,
                                 trust_exported)
        if json_out:
            print_json(out)
        else:
            _print_exported(out)
        return
    name = resolve_name(model, depth, plain)
    size = parse_input_size(input_size)
    for value, what in ((batch_size, "--batch-size"), (iters, "--iters"), (repeats, "--repeats")):
        check_positive(value, what)
    if warmup < 0:
        raise BadInput(f"--warmup must not be negative, got {warmup}")
    from ..bench import run_bench
    from ..device import resolve_device
    from ..speed import Speed
    from ..train import graphs

    dev = resolve_device(device)
    on_off = {None: "auto", True: "on", False: "off"}
    # train's rule, with this benchmark's own length as the run length
    speed = Speed.resolve(dev, precision.value if precision else "auto", on_off[channels_last], on_off[compile_],
                          compile_mode.value, planned_steps=warmup + iters * repeats)
    speed.cuda_graphs = graphs.resolve(on_off[cuda_graphs], dev, precision=speed.precision, torchrun=False, accum_steps=1,
                                       skip_nonfinite=0, compile_mode=speed.compile_mode, compile=speed.compile)
    modes = ["train", "infer"] if mode is Mode.both else [mode.value]
    out = run_bench(name, modes, batch_size, size, speed, dev, warmup, iters, repeats, detail, profile)
    if json_out:
        print_json(out)
        return
    _print(out)


def _print_exported(out: dict) -> None:
    from rich.table import Table

    c = console()
    table = Table(title=f"{out['file']} ({out['model']}) on {out['device']}, inference")
    for col in ("runtime", "batch", "img/s", "ms/step", "spread", "TFLOP/s"):
        table.add_column(col, justify="left" if col == "runtime" else "right", no_wrap=True)
    for r in out["results"]:
        table.add_row(r["runtime"], str(r["batch_size"]), f"{r['images_per_s']:,.0f}", f"{r['ms_per_step']:.2f}",
                      f"±{r['spread_pct'] / 2:.1f}%", f"{r['tflops']:.3f}")
    c.print(table)
    c.print(f"{out['runtime']} at {out['vs_pytorch']:.2f}x the PyTorch model it came from (fp32, eager), timed in "
            "this run. Median of repeats; spread is half the min-max range." + (f" {out['note']}." if out["note"]
                                                                                  else ""))


def _print(out: dict) -> None:
    from rich.table import Table

    c = console()
    table = Table(title=f"{out['model']} on {out['device']} (torch {out['torch']}"
                        + (f", CUDA {out['cuda']})" if out["cuda"] else ")"))
    # Every column on a wide terminal; on a narrow one (80 columns) the figures, with the settings in a line below
    wide = c.width >= 140
    columns = (["mode", "batch", "input", "precision", "NHWC", "compile", "warm-up s", "img/s", "ms/step", "spread",
                "peak mem", "TFLOP/s", "% peak"] if wide else
               ["mode", "batch", "img/s", "ms/step", "peak mem", "% peak"])
    for col in columns:
        table.add_column(col, justify="left" if col in ("mode", "precision", "compile") else "right", no_wrap=True)
    for r in out["results"]:
        mem = "-" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**30:.2f} GiB"
        size = r["input_size"]
        cells = {"mode": r["mode"], "batch": str(r["batch_size"]),
                 "input": str(size) if isinstance(size, int) else "x".join(map(str, size)),
                 "precision": r["precision"], "NHWC": "yes" if r["channels_last"] else "no",
                 "compile": (r["compile_mode"] if r["compile"] else "no") + ("+graph" if r["cuda_graphs"] else ""),
                 "warm-up s": f"{r['warmup_s']:.1f}", "img/s": f"{r['images_per_s']:,.0f}",
                 "ms/step": f"{r['ms_per_step']:.2f}", "spread": f"±{r['spread_pct'] / 2:.1f}%", "peak mem": mem,
                 "TFLOP/s": f"{r['tflops']:.3f}", "% peak": f"{r['pct_of_matmul_peak']:.1f}%"}
        table.add_row(*(cells[col] for col in columns))
    c.print(table)
    if not wide:
        for r in out["results"]:
            comp = (r["compile_mode"] if r["compile"] else "off") + (", CUDA graph" if r["cuda_graphs"] else "")
            c.print(f"{r['mode']}: {r['precision']}, channels_last {'on' if r['channels_last'] else 'off'}, compile "
                    f"{comp}, warm-up {r['warmup_s']:.1f} s, spread ±{r['spread_pct'] / 2:.1f}%, "
                    f"{r['tflops']:.3f} TFLOP/s")
    p = out["matmul_peak"]
    c.print(f"Peak reference: {p['n']}x{p['n']} {p['dtype']} matmul at {p['tflops']:.2f} TFLOP/s, measured now. "
            f"{out['flops_rule']}. Median of repeats; spread is half the min-max range. Warm-up s: the untimed "
            "first steps, compilation included.")
    for note in out["notes"]:
        c.print(note)
    for r in out["results"]:
        if "profile" in r:
            _print_profile(r["mode"], r["profile"])
    if "detail" in out:
        d = out["detail"]
        t = Table(title="one training step, by stage (forward) and phase")
        t.add_column("part")
        t.add_column("ms", justify="right")
        for k, v in d["stages_ms"].items():
            t.add_row(f"forward {k}", f"{v:.2f}")
        for k, v in d["phases_ms"].items():
            t.add_row(k, f"{v:.2f}")
        c.print(t)


def _print_profile(mode: str, prof: dict) -> None:
    from rich.table import Table

    c = console()
    cuda = prof["kind"] == "cuda kernels"
    t = Table(title=f"where a {mode} step's time goes ({prof['steps']} steps profiled)")
    t.add_column("kernel" if cuda else "operator", no_wrap=True, overflow="ellipsis", max_width=48)
    for col in ("calls", "ms/step", "share"):
        t.add_column(col, justify="right", no_wrap=True)
    for k in prof["top"]:
        t.add_row(k["name"], f"{k['calls_per_step']:g}", f"{k['ms_per_step']:.3f}", f"{k['share']:.1%}")
    c.print(t)
    step = prof["ms_per_step"]
    if not cuda:
        c.print(f"{mode}: operators' own time {prof['op_ms_per_step']:.2f} ms of a profiled step's "
                f"{prof['profiled_wall_ms_per_step']:.2f} ms (unprofiled: {step:.2f} ms).")
    elif not prof["kernels_seen"]:
        c.print(f"{mode}: the profiler saw no kernel (a CUDA graph's may be hidden from it); try --no-cuda-graphs.")
    else:
        c.print(f"{mode}: the GPU was busy {prof['busy_ms_per_step']:.2f} ms of a {step:.2f} ms step "
                f"({prof['busy_ms_per_step'] / step:.0%}); idle {prof['idle_ms_per_step']:.2f} ms (host gaps: "
                f"launches, syncs, Python); copies {prof['copy_ms_per_step']:.2f} ms.")
