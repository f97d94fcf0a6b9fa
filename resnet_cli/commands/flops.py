"""`resnet flops`: count multiply-adds with fvcore and check them against the paper's Table 1."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._common import (TRAINED, InChannelsOpt, InputSizeOpt, JsonOpt, NumClassesOpt, PlainOpt, ShortcutOpt,
                      check_positive, console, fmt_m, one_of, parse_input_size, print_json, progress_bar)

DEFAULT_MODELS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
V15_NOTE = ("v1.5 (torchvision) strides the 3x3 conv instead of the first 1x1 conv in downsampling "
            "bottlenecks, so that 3x3 runs at 2x the resolution: about +0.23 GMACs, with the same weights.")


def flops(
    models: Annotated[Optional[list[str]], typer.Argument(
        help=f"Models to count: registry names, or {one_of(TRAINED)} (the trained model) \\[default: resnet18, "
        "34, 50, 101, 152].",
        show_default=False)] = None,
    depth: Annotated[Optional[list[int]], typer.Option(
        "--depth", "-d", help="Depths instead of names (repeatable).", show_default=False)] = None,
    plain: PlainOpt = False,
    v15: Annotated[bool, typer.Option("--v1.5", help="Add the v1.5 variants of the bottleneck nets.")] = False,
    input_size: InputSizeOpt = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Fail (exit 1) when a model is off its published "
                                        "figure by more than the tolerance, or has none to check.")] = True,
    allow_unchecked: Annotated[bool, typer.Option("--allow-unchecked", help="With --check: pass a model that has "
                                                  "no published figure to check (it is still named).")] = False,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Allowed relative deviation from the published "
                                             "figure.")] = 0.03,
    device: Annotated[Optional[str], typer.Option(
        "--device", help="Also time the forward pass here: cpu, cuda or cuda:N.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Batch size for --device timing.")] = 64,
    num_classes: NumClassesOpt = None,
    in_channels: InChannelsOpt = None,
    shortcut: ShortcutOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Count multiply-adds (the paper's "FLOPs") with fvcore and PyTorch's counter; check every model against its
    best published figure.

    GMACs counts conv + fc multiply-adds once each, as Table 1 does; GFLOPs is 2 x GMACs. BatchNorm is shown
    apart. The figures checked: the paper's Table 1 (ImageNet nets, v1), torchvision's published GFLOPS (v1.5),
    the paper's Table 6 parameter counts (CIFAR nets), its Figure 3 (VGG-19). A bare [bold]resnet flops[/bold]
    checks the five ImageNet depths at 224x224 and exits 1 if any is more than 3% off: a CI gate. A model with
    nothing to check against fails the check too, unless --allow-unchecked.

    Example: [bold]resnet flops --v1.5 --json[/bold]
    """
    from ..errors import BadInput, CheckFailed
    from ..models import model_info, name_for_depth, resolve_name

    size = parse_input_size(input_size)
    check_positive(batch_size, "--batch-size")
    check_positive(num_classes, "--num-classes")
    check_positive(in_channels, "--in-channels")
    if not 0 <= tolerance < 1:  # NaN fails it too
        raise BadInput(f"--tolerance must be in [0, 1), got {tolerance}")
    from ..checkpoint import names_weights

    names = [m if names_weights(m) else resolve_name(m, None, plain) for m in models or []]
    names += [name_for_depth(d, plain) for d in depth or []]
    if not names:
        names = [resolve_name(m, None, plain) for m in DEFAULT_MODELS]
    if v15:
        names += [f"{n}-v1.5" for n in list(names) if not names_weights(n) and model_info(n).block == "bottleneck"
                  and model_info(n).family == "imagenet" and not n.endswith("-v1.5")]
    names = list(dict.fromkeys(names))
    dev = None
    if device is not None:
        from ..device import resolve_device

        dev = resolve_device(device)

    from ..analysis import flops_rows

    timer = None
    if dev is not None:
        from functools import partial

        from ..bench import time_forward

        timer = partial(time_forward, batch_size=batch_size, device=dev)
    with progress_bar("counting", quiet=json_out) as on_model:
        rows = flops_rows(names, size, tolerance, num_classes, in_channels, timer, on_model,
                          shortcut.value if shortcut else "")

    from ..analysis import COUNTER_TOLERANCE

    failed = [r["model"] for r in rows if check and r["ok"] is False]
    unchecked = [r for r in rows if check and not r["checked"]]
    if json_out:
        print_json({"counted": "conv + fc multiply-adds (gmacs); gflops = 2 x gmacs; BatchNorm in bn_gmacs",
                    "second_counter": "torch.utils.flop_counter.FlopCounterMode on the meta device (FLOPs / 2)",
                    "tolerance": tolerance, "counter_tolerance": COUNTER_TOLERANCE, "check": check, "models": rows,
                    "failed": failed, "unchecked": [r["model"] for r in unchecked]})
    else:
        _print_table(rows, tolerance, check, dev)
    if unchecked and not allow_unchecked and not failed:
        names = "; ".join(f"{r['model']} ({r['unchecked']})" for r in unchecked)
        raise CheckFailed(f"not checked: {names}; a check that checks nothing fails: --allow-unchecked passes it, "
                          "--no-check counts without checking")
    if failed:
        why = []
        off_paper = [r["model"] for r in rows if r["reference_ok"] is False]
        split = [r["model"] for r in rows if not r["counters_agree"]]
        if off_paper:
            why.append(f"{', '.join(off_paper)} off the published figure by more than {tolerance:.0%}")
        if split:
            why.append(f"fvcore and FlopCounterMode disagree by more than {COUNTER_TOLERANCE:.1%} on {', '.join(split)}")
        raise CheckFailed("; ".join(why))


def _print_table(rows: list[dict], tolerance: float, check: bool, dev) -> None:
    from rich.table import Table

    table = Table(title="Multiply-adds per image (fvcore), checked against published figures")
    # No cell is ever cut: names and numbers do not wrap; params abbreviated (exact under --json); GFLOPs (2 x
    # GMACs) only where the terminal has room for it.
    wide = console().width >= 100 or dev is not None
    for col in ["model", "input", "params", "GMACs", *(["GFLOPs"] if wide else []), "BN GMACs", "published",
                "dev.", "check"]:
        table.add_column(col, justify="left" if col in ("model", "check") else "right", no_wrap=True)
    if dev is not None:
        for col in ["ms/batch", "img/s", "TFLOP/s"]:
            table.add_column(col, justify="right")
    for r in rows:
        if not r["ok"]:
            mark = "FAIL" if check else "off"
        elif not r["checked"]:
            mark = "none" if check else "-"
        else:
            mark = "ok"
        size = r["input_size"]
        cells = [r["model"], str(size) if isinstance(size, int) else "x".join(map(str, size)), fmt_m(r["params"]),
                 f"{r['gmacs']:.3f}", *([f"{r['gflops']:.3f}"] if wide else []),
                 f"{r['bn_gmacs']:.3f}", r["reference"]["label"] if r["reference"] else "-",
                 "-" if r["reference_deviation"] is None else f"{r['reference_deviation']:+.1%}", mark]
        if dev is not None:
            t = r["timing"]
            cells += [f"{t['median_ms']:.1f}", f"{t['images_per_s']:,.0f}", f"{t['tflops']:.2f}"]
        table.add_row(*cells)
    out = console()
    out.print(table)
    uncounted = sorted({op for r in rows for op in r["uncounted_ops"]})
    out.print("Counted: conv + fc multiply-adds, one per multiply-add (the paper's \"FLOPs\"); GFLOPs = 2 x GMACs. "
              "BatchNorm is shown apart and not in GMACs. dev.: deviation from the published figure.")
    from ..models.references import SOURCES

    used = sorted({r["reference"]["label"].split()[-1] for r in rows if r["reference"]})
    if used:
        out.print("Published: " + "; ".join(f"{key}: {SOURCES[key]}" for key in used) + ".")
    for r in rows:
        if not r["checked"]:
            out.print(f"{r['model']}: nothing to check against ({r['unchecked']}).")
    if uncounted:
        out.print(f"Not counted (no fvcore formula): {', '.join(uncounted)}; ReLU is ignored by fvcore. "
                  "Global average pooling is counted by fvcore but left out, as in the paper.")
    if any(r["model"].endswith("-v1.5") for r in rows):
        out.print(V15_NOTE)
    split = [r for r in rows if not r["counters_agree"]]
    agree = "agrees on every model" if not split else "DISAGREES on " + ", ".join(
        f"{r['model']} ({r['gmacs_second_counter']:.3f})" for r in split)
    out.print(f"Second counter (torch.utils.flop_counter.FlopCounterMode, on the meta device): {agree} (within "
              "0.1%). Neither counts pooling or the residual additions; FlopCounterMode has no BatchNorm formula; "
              "both count each convolution at its real output size, so both see the v1.5 stride placement.")
    if check and any(r["checked"] for r in rows):
        out.print(f"Check: within {tolerance:.0%} of the published figure, and the two counters within 0.1%.")
    if dev is not None:
        out.print(f"Timing: forward only, fp32, batch {rows[0]['timing']['batch_size']}, on "
                  f"{rows[0]['timing']['device']}; median of 5 repeats; TFLOP/s = 2 x MACs / time.")
