"""`resnet reproduce`: the paper's checkable tables and figures from one resumable command.

An experiment is a set of ordinary runs (`resnet train --preset cifar` with a model and a seed), each in its own
run folder under OUT/runs, named `<model>-s<seed>`; runs shared by two experiments (resnet20 seed 0 is in Table 6
and Figure 6) are trained once. Every run is a `resnet train` process with `run.resume=auto`, so running the same
command again skips the finished runs (their last.pt says so) and resumes the interrupted ones where they
stopped. `parallel` runs several at once: one GPU each where several are visible (CUDA_VISIBLE_DEVICES), else
side by side on the one device (CPU threads divided between them).

The recipe is the paper's (section 4.2, the `cifar` preset): batch 128, SGD 0.1 divided by 10 at 32k and 48k of
64k iterations, 45k/5k train/validation split, best.pt selected on the 5k validation images, the test set only
reported. `scale` (or `steps`) shortens every run and its milestones alike, and every title then says so.

Experiments:
  table1   multiply-adds of the five ImageNet depths (v1 and v1.5) from two counters, against the paper
  table3   ResNet-34 with shortcut options A, B and C (and plain-34): parameters and multiply-adds, beside the
           paper's ImageNet errors (quoted: these are ImageNet runs, not trained here)
  figure3  VGG-19, plain-34 and ResNet-34: layers, parameters, multiply-adds, each as a share of VGG-19's
  table6   CIFAR-10 test error of ResNet-20/32/44/56/110 over `seeds` seeds (mean +- std), beside the paper's
           figures and akamaster/pytorch_resnet_cifar10's (trained on all 50k, best epoch chosen on the test set)
  figure6  plain and residual nets of depth 20/32/44/56 (and 110): training (dashed) and test (bold) error
  figure1  plain-20 against plain-56: the degradation problem
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TextIO

from .errors import BadInput
from .files import ensure_writable_dir, open_own_file

EXPERIMENTS = ("table1", "table3", "figure3", "table6", "figure6", "figure1")
COUNTED = ("table1", "table3", "figure3")  # read off the built models (paper_counts.py); nothing to train
CHOICES = (*EXPERIMENTS, "all")
DATASETS = ("cifar10", "fashion-mnist", "synthetic")  # fashion-mnist: a labelled proxy; synthetic: a smoke test
PAPER_STEPS, PAPER_MILESTONES = 64000, (32000, 48000)  # the `cifar` preset: iterations, lr / 10 at these
TABLE6_DEPTHS = (20, 32, 44, 56, 110)
FIGURE6_DEPTHS = (20, 32, 44, 56)
# Test error (%) on CIFAR-10. The paper's Table 6 (110: best of 5 runs; their mean 6.61 +- 0.16).
PAPER_TABLE6 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}
# akamaster/pytorch_resnet_cifar10's README: trained on all 50k images, the best epoch picked on the test set.
AKAMASTER_TABLE6 = {20: 8.27, 32: 7.37, 44: 6.90, 56: 6.61, 110: 6.32}


@dataclass(frozen=True)
class RunSpec:
    """One training run of a reproduction: a model, a seed, the experiments it serves."""

    model: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.model}-s{self.seed}"

    @property
    def depth(self) -> int:
        """The model's layers (the registry's): a run's cost, since every run has the same steps and batch."""
        from .models.registry import model_info

        return model_info(self.model).depth


@dataclass
class Options:
    experiment: str
    out: Path
    dataset: str = "cifar10"
    data_dir: str | None = None
    seeds: int = 1
    scale: float = 1.0  # of the paper's 64k iterations (and its milestones)
    parallel: int = 1
    device: str = "auto"
    with_110: bool = False  # figure6: also plain-110 and resnet-110
    sets: list[str] = field(default_factory=list)  # KEY=VALUE for every run (`train --set`)
    depths: tuple[int, ...] = ()  # table6/figure6: only these depths (empty: all of the experiment's)

    @property
    def steps(self) -> int:
        return max(1, round(PAPER_STEPS * self.scale))

    @property
    def paper_length(self) -> bool:
        return self.scale == 1.0

    def scale_note(self) -> str:
        """What every title says when the runs are not the paper's."""
        notes = []
        if not self.paper_length:
            notes.append(f"{self.steps:,} iterations per run, not the paper's 64,000")
        if self.dataset == "synthetic":
            notes.append("on synthetic images: a smoke test, not evidence")
        elif self.dataset != "cifar10":
            notes.append(f"on {self.dataset}, a proxy for CIFAR-10")
        return "; ".join(notes)

    def experiments(self) -> list[str]:
        return list(EXPERIMENTS) if self.experiment == "all" else [self.experiment]


def check_options(o: Options) -> None:
    if o.experiment not in CHOICES:
        raise BadInput(f"unknown experiment {o.experiment!r}; choose from {', '.join(CHOICES)}")
    if o.dataset not in DATASETS:
        raise BadInput(f"--dataset must be one of {', '.join(DATASETS)}, got {o.dataset!r}")
    if not (math.isfinite(o.scale) and 0 < o.scale <= 1):
        raise BadInput(f"--scale must be in (0, 1], got {o.scale}")
    if o.seeds < 1 or o.parallel < 1:
        raise BadInput("--seeds and --parallel must be at least 1")
    if o.depths:
        if not {"table6", "figure6"} & set(o.experiments()):
            raise BadInput("--depths selects runs of table6 and figure6; figure1 has fixed models, and table1, "
                           "table3 and figure3 train none")
        unknown = sorted(set(o.depths) - set(TABLE6_DEPTHS))
        if unknown:
            raise BadInput(f"--depths: {', '.join(map(str, unknown))} not in the paper's CIFAR depths "
                           f"({', '.join(map(str, TABLE6_DEPTHS))})")


def parse_depths(text: str | None) -> tuple[int, ...]:
    """`--depths 20,56` -> (20, 56); None -> () (every depth of the experiment)."""
    if text is None:
        return ()
    try:
        depths = tuple(dict.fromkeys(int(part) for part in text.split(",")))
    except ValueError:
        raise BadInput(f"--depths takes depths separated by commas, e.g. 20,56; got {text!r}") from None
    if not depths:
        raise BadInput("--depths is empty")
    return depths


def plan(o: Options) -> dict[str, list[RunSpec]]:
    """The runs of each experiment (the counted ones have none); shared runs appear in each, and are trained
    once."""
    runs: dict[str, list[RunSpec]] = {}

    def chosen(depths: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(d for d in depths if d in o.depths) if o.depths else depths

    for exp in o.experiments():
        if exp == "table6":
            runs[exp] = [RunSpec(f"resnet{d}", s) for d in chosen(TABLE6_DEPTHS) for s in range(o.seeds)]
        elif exp == "figure6":
            depths = (*FIGURE6_DEPTHS, 110) if o.with_110 or 110 in o.depths else FIGURE6_DEPTHS
            runs[exp] = [RunSpec(f"{kind}{d}", 0) for kind in ("plain", "resnet") for d in chosen(depths)]
        elif exp == "figure1":
            runs[exp] = [RunSpec("plain20", 0), RunSpec("plain56", 0)]
        else:
            runs[exp] = []
    return runs


def unique_runs(runs: dict[str, list[RunSpec]]) -> list[RunSpec]:
    return list(dict.fromkeys(r for specs in runs.values() for r in specs))


def run_flags(o: Options, spec: RunSpec) -> dict[str, Any]:
    """The config keys of one run, on top of the `cifar` preset."""
    flags: dict[str, Any] = {"model.name": spec.model, "run.seed": spec.seed, "run.name": spec.name,
                             "run.run_dir": str(o.out / "runs"), "run.resume": "auto", "run.device": o.device,
                             "data.dataset": o.dataset}
    if o.data_dir is not None:
        flags["data.data_dir"] = o.data_dir
    if o.dataset == "synthetic":  # a smoke test of 512 images: the cifar preset's 5,000 held out would be all
        flags["data.val_split"] = 64
    if not o.paper_length:
        flags["train.steps"] = o.steps
        flags["train.milestones"] = [max(1, round(m * o.scale)) for m in PAPER_MILESTONES]
    return flags


def train_command(o: Options, spec: RunSpec) -> list[str]:
    """The `resnet train` process of one run (what a user would type to run it alone)."""
    from . import config as C

    cmd = [sys.executable, "-m", "resnet_cli", "train", "--preset", "cifar", "--json"]
    for key, value in run_flags(o, spec).items():
        cmd += ["--set", C.set_arg(key, value)]
    for item in o.sets:
        cmd += ["--set", item]
    return cmd


def check_data(o: Options, runs: list[RunSpec]) -> None:
    """The data every run needs, found (or downloaded) once before any run starts; a missing dataset offline is
    one line here instead of one per run."""
    if not runs:
        return
    from . import config as C
    from .data import load_data

    cfg = C.resolve("cifar", flags=run_flags(o, runs[0]), sets=o.sets)
    load_data(cfg.data)


# ------------------------------------------------------------------ running
@dataclass
class RunStatus:
    spec: RunSpec
    state: str = "waiting"  # waiting, running, done, finished earlier, failed
    epoch: int = 0
    step: int = 0  # global step, as far as the progress events tell
    total: int = 0  # the run's planned steps
    started: float = 0.0
    error: str = ""
    resumed: bool = False

    def eta(self) -> str:
        """Time left at this process's rate so far (train.progress.eta); "-" unless it is running."""
        from .train.progress import eta

        return eta(time.monotonic() - self.started, self.step, self.total) if self.state == "running" else "-"


def finished_earlier(run_dir: Path) -> bool:
    """A run folder whose last.pt says the run is finished (read without building anything)."""
    from .checkpoint import load_checkpoint

    last = run_dir / "last.pt"
    if not last.is_file():
        return False
    try:
        return bool(load_checkpoint(last).get("finished"))
    except BadInput:  # unreadable: let `resnet train` say what is wrong with it
        return False


def visible_gpus(o: Options) -> int:
    import torch

    return torch.cuda.device_count() if o.device in ("auto", "cuda") else 0


def slot_env(slot: int, gpus: int, sharing: int) -> dict[str, str]:
    """The environment of a run started in `slot`: its own GPU where several are visible; otherwise the CPU's
    threads divided between the `sharing` runs that will run beside it (fewer than the slots near the end: the
    last runs get the cores the finished ones left)."""
    if gpus > 1:
        return {"CUDA_VISIBLE_DEVICES": str(slot % gpus)}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // max(1, sharing)))}


def launch_order(o: Options, waiting: list[RunStatus]) -> list[RunStatus]:
    """Alone, the paper's order (the short runs report first); side by side, the deepest first, so that no slot
    sits idle at the end while the longest run, started last, trains alone (BENCHMARKS.md, `reproduce
    --parallel`)."""
    return sorted(waiting, key=lambda st: -st.spec.depth) if o.parallel > 1 else waiting


def run_all(o: Options, specs: list[RunSpec], on_change: Callable[[list[RunStatus]], None]) -> list[RunStatus]:
    """Train every run not finished yet, `parallel` at a time; `on_change(statuses)` after each event."""
    statuses = [RunStatus(s, total=o.steps) for s in specs]
    for st in statuses:
        if finished_earlier(o.out / "runs" / st.spec.name):
            st.state = "finished earlier"
    ensure_writable_dir(o.out / "logs")
    gpus = visible_gpus(o)
    free = list(range(o.parallel))
    active: dict[int, tuple[subprocess.Popen, threading.Thread, RunStatus]] = {}
    lock = threading.Lock()
    waiting = launch_order(o, [st for st in statuses if st.state == "waiting"])
    on_change(statuses)
    try:
        while waiting or active:
            while waiting and free:
                st, slot = waiting.pop(0), free.pop(0)
                log = open_own_file(o.out / "logs" / f"{st.spec.name}.log", "log", append=True)  # before the run
                env = slot_env(slot, gpus, sharing=min(o.parallel, len(active) + 1 + len(waiting)))
                proc = subprocess.Popen(train_command(o, st.spec), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
                st.state, st.started = "running", time.monotonic()
                reader = threading.Thread(target=_follow, args=(proc, st, log, lock, lambda: on_change(statuses)), daemon=True)
                reader.start()
                active[slot] = (proc, reader, st)
            time.sleep(0.2)
            for slot, (proc, reader, st) in list(active.items()):
                if proc.poll() is None:
                    continue
                reader.join()
                with lock:
                    if proc.returncode == 0:
                        st.state = "done"
                    else:
                        st.state = "failed"
                        st.error = st.error or f"exit {proc.returncode}"
                del active[slot]
                free.append(slot)
                on_change(statuses)
    except KeyboardInterrupt:
        for proc, _, _ in active.values():  # each run saves a checkpoint at its current step, then exits
            if proc.poll() is None:
                proc.terminate()
        for proc, reader, _ in active.values():
            proc.wait()
            reader.join()
        raise
    return statuses


def _follow(proc: subprocess.Popen, st: RunStatus, log: TextIO, lock: threading.Lock,
            changed: Callable[[], None]) -> None:
    """Read a run's JSON Lines (progress, epoch, message, result) into its status; keep every line in its log.
    The reader owns the run's pipe: closed here at its end, as the log is."""
    with log as f, proc.stdout as lines:
        for line in lines:
            f.write(line)
            f.flush()
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = event.get("event")
            with lock:
                if kind == "progress":
                    st.epoch = event.get("epoch", st.epoch)
                    per_epoch = event.get("steps") or 1
                    st.step = (st.epoch - 1) * per_epoch + event.get("step_in_epoch", 0)
                elif kind == "epoch":
                    st.epoch, st.step = event["epoch"], event["step"]
                elif kind == "message" and event.get("text", "").startswith("resuming"):
                    st.resumed = True
                elif "error" in event:
                    st.error = str(event["error"])
            changed()


# ------------------------------------------------------------------ results
def run_result(run_dir: Path) -> dict[str, Any]:
    """A finished run's figures: the epoch selected on validation (test error there), the last epoch, wall time."""
    from . import config as C
    from .checkpoint import load_checkpoint
    from .train.evaluations import selection_metric
    from .train.rundir import read_metrics
    from .train.state import best_row

    rows = read_metrics(run_dir / "metrics.csv")
    cfg = C.from_dict(C.read_yaml(run_dir / "config.yaml", "run config"), f"{run_dir}/config.yaml")
    metric = selection_metric(cfg)
    best = best_row(rows, metric)
    wall = None
    try:
        wall = float(load_checkpoint(run_dir / "last.pt").get("wall_seconds", 0))
    except (BadInput, TypeError, ValueError):  # the figures stand without it
        pass
    return {"run_dir": str(run_dir), "model": cfg.model.name, "seed": cfg.run.seed, "steps": rows[-1]["step"],
            "selected_by": metric, "selected_epoch": best["epoch"], "test_error": 100 * (1 - best["test_top1"]),
            "final_test_error": 100 * (1 - rows[-1]["test_top1"]),
            "final_train_error": 100 * (1 - rows[-1]["train_top1"]), "wall_seconds": wall}


def table6_rows(results: dict[str, dict], seeds: int) -> list[dict[str, Any]]:
    rows = []
    for d in TABLE6_DEPTHS:
        found = [results[name] for name in (RunSpec(f"resnet{d}", s).name for s in range(seeds)) if name in results]
        if not found:
            continue
        errs = [r["test_error"] for r in found]
        walls = [r["wall_seconds"] for r in found if r.get("wall_seconds")]
        rows.append({"model": f"resnet{d}", "runs": len(errs), "error_mean": statistics.fmean(errs),
                     "error_std": statistics.stdev(errs) if len(errs) > 1 else None, "errors": errs,
                     "paper": PAPER_TABLE6[d], "akamaster": AKAMASTER_TABLE6[d],
                     "wall_seconds_per_run": statistics.fmean(walls) if walls else None})
    return rows


def duration(seconds: float | None) -> str:
    """A run's training time as the report shows it: `4 min 12 s`, `38 s`, or `-` when not recorded."""
    if not seconds:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def environment(device: str) -> dict[str, str]:
    import torch

    from . import __version__
    from .device import device_name, resolve_device

    return {"resnet_cli": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": device_name(resolve_device(device)), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}


def figures(o: Options, runs: dict[str, list[RunSpec]], results: dict[str, dict]) -> dict[str, dict]:
    """figure6.png and figure1.png in OUT, drawn from the runs' metrics (error against iterations)."""
    from .curves import draw, load_runs

    out = {}
    note = o.scale_note()
    for exp in ("figure6", "figure1"):
        specs = [s for s in runs.get(exp, []) if s.name in results]
        if not specs:
            continue
        folders = {s.name: o.out / "runs" / s.name for s in specs}
        if exp == "figure6":
            panels = [(title, load_runs([folders[s.name] for s in specs if s.model.startswith(kind)]))
                      for kind, title in (("plain", "plain nets"), ("resnet", "ResNets"))]
            title = "Figure 6: plain (left) and residual (right) nets; dashed: training, bold: test"
        else:
            panels = [("plain-20 and plain-56", load_runs([folders[s.name] for s in specs]))]
            title = "Figure 1: plain-20 and plain-56; dashed: training, bold: test"
        path = o.out / f"{exp}.png"
        draw(panels, path, "error", "step", title + (f" ({note})" if note else ""))
        wall = sum(results[s.name]["wall_seconds"] or 0 for s in specs)
        out[exp] = {"png": str(path), "runs": [s.name for s in specs], "wall_seconds": wall,
                    "final_test_error": {s.model: results[s.name]["final_test_error"] for s in specs},
                    "final_train_error": {s.model: results[s.name]["final_train_error"] for s in specs}}
    return out


def write_report(o: Options, report: dict[str, Any], command: str) -> None:
    """OUT/report.md (tables, figures, with their command, device, versions and wall time) and OUT/results.json."""
    from .files import atomic_write_text

    env, note = report["environment"], o.scale_note()
    lines = [f"# Reproduction: {', '.join(o.experiments())}" + (f" ({note})" if note else ""), "",
             f"Command: `{command}`  ", f"Device: {env['device']}; torch {env['torch']}, Python {env['python']}, "
             f"resnet-cli {env['resnet_cli']}; {env['date']}.", ""]
    if "table1" in report:
        lines += ["## Table 1: multiply-adds (GMACs) at 224x224", "",
                  "| model | fvcore | FlopCounterMode | paper | deviation |", "| --- | ---: | ---: | ---: | ---: |"]
        for r in report["table1"]:
            paper = "-" if r["paper_gmacs"] is None else f"{r['paper_gmacs']:.1f}"
            dev = "-" if r["deviation"] is None else f"{r['deviation']:+.1%}"
            lines.append(f"| {r['model']} | {r['gmacs']:.3f} | {r['gmacs_second_counter']:.3f} | {paper} | {dev} |")
        lines += ["", "Both counters count conv + fc multiply-adds; pooling, additions and BatchNorm are left out. "
                  "The paper gives figures for v1 only.", ""]
    if "table3" in report:
        lines += ["## Table 3: shortcut options of the 34-layer net (ImageNet)", "",
                  "| model | shortcut | params | GMACs (fvcore) | FlopCounterMode | paper top-1 err. | paper top-5 err. |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in report["table3"]:
            lines.append(f"| {r['model']} | {r['shortcut']} | {r['params']:,} | {r['gmacs']:.3f} | "
                         f"{r['gmacs_second_counter']:.3f} | {r['paper_top1_error']:.2f} | "
                         f"{r['paper_top5_error']:.2f} |")
        lines += ["", "Parameters and multiply-adds are counted on the built models (224x224, 1000 classes). The "
                  "errors are the paper's ImageNet results (10-crop testing), quoted: this command does not train "
                  "on ImageNet. A: zero-padding shortcuts where dimensions increase (no parameters); B: projections "
                  "there; C: projections on every shortcut.", ""]
    if "figure3" in report:
        lines += ["## Figure 3: VGG-19 beside the 34-layer nets", "",
                  "| model | layers | params | GMACs (fvcore) | FlopCounterMode | paper | share of VGG-19 | paper |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in report["figure3"]:
            lines.append(f"| {r['model']} | {r['layers']} | {r['params']:,} | {r['gmacs']:.3f} | "
                         f"{r['gmacs_second_counter']:.3f} | {r['paper_gmacs']:.1f} | {r['share_of_vgg19']:.1%} | "
                         f"{r['paper_share_of_vgg19']:.1%} |")
        lines += ["", "The paper: \"Our 34-layer baseline has 3.6 billion FLOPs (multiply-adds), which is only 18% "
                  "of VGG-19 (19.6 billion FLOPs).\"", ""]
    if "table6" in report:
        title = "## Table 6: CIFAR-10 test error (%)" + (f" ({note})" if note else "")
        lines += [title, "", "| model | runs | ours: mean +- std | paper | akamaster | training time per run |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in report["table6"]:
            std = "" if r["error_std"] is None else f" +- {r['error_std']:.2f}"
            lines.append(f"| {r['model']} | {r['runs']} | {r['error_mean']:.2f}{std} | {r['paper']:.2f} | "
                         f"{r['akamaster']:.2f} | {duration(r['wall_seconds_per_run'])} |")
        lines += ["", "Ours: trained on 45k images, the epoch selected on the 5k validation images, its test error "
                  "reported. Paper: the same split for its analysis; ResNet-110 is its best of 5 runs (mean 6.61). "
                  "akamaster/pytorch_resnet_cifar10: trained on all 50k images, the best epoch chosen on the test "
                  "set (an optimistic selection).", ""]
    for exp in ("figure6", "figure1"):
        if exp in report:
            f = report[exp]
            lines += [f"## {'Figure 6' if exp == 'figure6' else 'Figure 1'}" + (f" ({note})" if note else ""), "",
                      f"![{exp}]({Path(f['png']).name})", "",
                      f"Runs: {', '.join(f['runs'])}; training time of the runs together: {f['wall_seconds']:.0f} s. "
                      "Final test error: " + ", ".join(f"{m} {e:.2f}%" for m, e in f["final_test_error"].items())
                      + "; final training error: "
                      + ", ".join(f"{m} {e:.2f}%" for m, e in f["final_train_error"].items()) + ".", ""]
    atomic_write_text(o.out / "report.md", "\n".join(lines))
    atomic_write_text(o.out / "results.json", json.dumps(report, indent=2, default=str) + "\n")


def reproduce(o: Options, command: str, on_change: Callable[[list[RunStatus]], None]) -> dict[str, Any]:
    """Train what is missing, then the report: the domain function of `resnet reproduce`."""
    check_options(o)
    runs = plan(o)
    specs = unique_runs(runs)
    ensure_writable_dir(o.out)
    check_data(o, specs)
    statuses = run_all(o, specs, on_change)
    failed = [st for st in statuses if st.state == "failed"]
    results = {st.spec.name: run_result(o.out / "runs" / st.spec.name) for st in statuses if st.state != "failed"}
    report: dict[str, Any] = {"experiments": o.experiments(), "dataset": o.dataset, "steps_per_run": o.steps,
                              "paper_length": o.paper_length, "note": o.scale_note(), "environment": environment(o.device),
                              "runs": results,
                              "failed": [{"run": st.spec.name, "error": st.error,
                                          "log": str(o.out / "logs" / f"{st.spec.name}.log")} for st in failed]}
    from . import paper_counts

    for exp in COUNTED:
        if exp in runs:
            report[exp] = getattr(paper_counts, f"{exp}_rows")()
    if "table6" in runs:
        report["table6"] = table6_rows(results, o.seeds)
    report.update(figures(o, runs, results))
    write_report(o, report, command)
    return report
