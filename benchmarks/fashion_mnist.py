"""Fashion-MNIST benchmarks for the `fashion-mnist` preset (resnet20), on whatever machine runs them.

    python benchmarks/fashion_mnist.py train    [--data-dir DIR] [--run-dir DIR]
        The full preset (15 epochs, 60k images) through `resnet train`; prints test top-1 per epoch,
        seconds per epoch and images/s from the run's metrics.csv, and keeps the run's output in
        stdout.txt in the run folder.

    python benchmarks/fashion_mnist.py overhead [--data-dir DIR] [--steps 40] [--repeats 5]
        The training loop's images/s against a bare forward/backward/step on the same batches
        (already augmented and on the device), alternated and repeated; prints the ratio.

    python benchmarks/fashion_mnist.py switch [--base KEY=VALUE ...] --set KEY=VALUE [--set ...] [--steps 40]
        Two training loops in one process, alternating epochs of `--steps` steps: the preset (plus the
        --base overrides) against the same with the --set overrides; prints each one's images/s and the ratio.

    python benchmarks/fashion_mnist.py recipe [--epochs 3] [--base KEY=VALUE ...] [--set KEY=VALUE ...]
        The preset against the preset with a held-out validation split, EMA and mixup (data.val_split=5000,
        train.ema=0.999, data.mixup=0.2, or --set overrides), same epochs, one after the other; prints both
        runs' test top-1 per epoch, and the test top-1 of the epoch each run selects (best.pt).

Results go in BENCHMARKS.md with the machine and versions this prints.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion-mnist"


def machine() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")


def run_train(args) -> None:
    cmd = [sys.executable, "-m", "resnet_cli", "train", "--preset", "fashion-mnist", "--data-dir", str(args.data_dir),
           "--run-dir", str(args.run_dir), "--name", "fashion-resnet20"]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - t0
    run = next(line.split("run folder: ", 1)[1].strip() for line in out.splitlines() if "run folder: " in line)
    (Path(run) / "stdout.txt").write_text(out)  # the plain progress lines, for quoting
    from resnet_cli.train.rundir import read_metrics

    rows = read_metrics(Path(run) / "metrics.csv")
    print(f"machine: {machine()}\nrun: {run}\n")
    print("| epoch | test top-1 | train loss | seconds | img/s |\n| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['epoch']} | {r['test_top1']:.2%} | {r['train_loss']:.4f} | {r['seconds']:.1f} | "
              f"{r['img_per_s']:.0f} |")
    print(f"\nfinal test top-1 {rows[-1]['test_top1']:.2%}, best {max(r['test_top1'] for r in rows):.2%}; "
          f"median {statistics.median(r['seconds'] for r in rows):.1f} s/epoch; wall {wall:.0f} s")


RECIPE = ["data.val_split=5000", "train.ema=0.999", "data.mixup=0.2"]


def run_recipe(args) -> None:
    from resnet_cli.train.rundir import read_metrics

    sets = args.set or RECIPE
    runs = {}
    for label, extra in (("preset", []), ("recipe", sets)):
        cmd = [sys.executable, "-m", "resnet_cli", "train", "--preset", "fashion-mnist", "--data-dir",
               str(args.data_dir), "--run-dir", str(args.run_dir), "--name", f"fashion-{label}", "--epochs",
               str(args.epochs), *(a for s in [*args.base, *extra] for a in ("--set", s))]
        print("$", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        run = next(line.split("run folder: ", 1)[1].strip() for line in out.splitlines() if "run folder: " in line)
        (Path(run) / "stdout.txt").write_text(out)
        runs[label] = (read_metrics(Path(run) / "metrics.csv"), time.perf_counter() - t0, run)
        print(f"  {label}: {runs[label][1]:.0f} s, {run}", flush=True)
    print(f"\nmachine: {machine()}\nrecipe: {' '.join(sets)}\n")
    rows_p, rows_r = runs["preset"][0], runs["recipe"][0]
    ema = "ema_test_top1" in rows_r[0]
    sel = ("ema_" if ema else "") + ("val_top1" if "val_top1" in rows_r[0] else "test_top1")
    print("| epoch | preset test top-1 | recipe test top-1 | recipe EMA test top-1 | recipe val top-1 | "
          "recipe EMA val top-1 |\n| ---: | ---: | ---: | ---: | ---: | ---: |")
    for p, r in zip(rows_p, rows_r):
        cells = [f"{r.get(k, float('nan')):.2%}" for k in ("test_top1", "ema_test_top1", "val_top1", "ema_val_top1")]
        print(f"| {p['epoch']} | {p['test_top1']:.2%} | {' | '.join(cells)} |")
    best_p = max(rows_p, key=lambda r: r["test_top1"])
    best_r = max(rows_r, key=lambda r: r[sel])
    print(f"\nselected (best.pt): preset epoch {best_p['epoch']} by test top-1 -> test {best_p['test_top1']:.2%}; "
          f"recipe epoch {best_r['epoch']} by {sel} -> test {best_r['ema_test_top1' if ema else 'test_top1']:.2%}")
    print(f"wall: preset {runs['preset'][1]:.0f} s, recipe {runs['recipe'][1]:.0f} s")


BATCH = 128  # the preset's


def short_trainer(args, sets: list[str] = ()):
    """A silent Trainer for the preset whose epochs are `args.steps` steps, with `sets` overrides."""
    from resnet_cli import config as C
    from resnet_cli.train.loop import Trainer

    flags = {"data.data_dir": str(args.data_dir), "data.train_limit": BATCH * args.steps, "data.test_limit": 1000,
             "train.log_interval": 50}
    return Trainer.for_config(C.resolve("fashion-mnist", flags=flags, sets=list(sets)))


def run_overhead(args) -> None:
    bs = BATCH
    trainer = short_trainer(args)
    batches = list(trainer.run.train_loader.batches(1))  # augmented, normalised, on the device
    loop_s, bare_s = [], []
    trainer.train_epoch()  # warm-up both paths
    for x, y in batches[:5]:
        trainer.run.step(x, y)
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        trainer.train_epoch()
        loop_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for x, y in batches:
            loss = trainer.run.step(x, y).loss
        loss.item()
        bare_s.append(time.perf_counter() - t0)
    n = bs * len(batches)
    loop, bare = n / statistics.median(loop_s), n / statistics.median(bare_s)
    print(f"machine: {machine()}")
    print(f"resnet20, fashion-mnist preset, batch {bs}, {len(batches)} steps x {args.repeats} repeats (medians)")
    print(f"training loop: {loop:,.0f} img/s (runs {', '.join(f'{n / s:,.0f}' for s in loop_s)})")
    print(f"bare step:     {bare:,.0f} img/s (runs {', '.join(f'{n / s:,.0f}' for s in bare_s)})")
    print(f"loop / bare:   {loop / bare:.3f} (medians); {statistics.median(b / a for a, b in zip(loop_s, bare_s)):.3f} "
          f"(median of back-to-back pairs); {min(bare_s) / min(loop_s):.3f} (best of each)")


def run_switch(args) -> None:
    if not args.set:
        raise SystemExit("switch needs at least one --set KEY=VALUE")
    bs = BATCH
    over = dict(kv.split("=", 1) for kv in args.set)
    label = "preset" + "".join(f" {kv}" for kv in args.base)
    trainers = {label: short_trainer(args, args.base),
                "with " + " ".join(args.set): short_trainer(args, args.base + args.set)}
    secs: dict[str, list[float]] = {name: [] for name in trainers}
    for t in trainers.values():
        t.train_epoch()  # warm-up
    for r in range(args.repeats):
        for name in (list(trainers) if r % 2 == 0 else list(trainers)[::-1]):
            t0 = time.perf_counter()
            trainers[name].train_epoch()
            secs[name].append(time.perf_counter() - t0)
    n = bs * args.steps
    print(f"machine: {machine()}")
    print(f"resnet20, fashion-mnist preset, batch {bs}, {args.steps} steps per epoch, {args.repeats} alternating "
          f"epochs each (medians); overrides {over}")
    speed = {}
    for name, s in secs.items():
        speed[name] = n / statistics.median(s)
        print(f"{name:40s} {speed[name]:,.0f} img/s (epochs {', '.join(f'{n / x:,.0f}' for x in s)})")
    a, b = speed.values()
    print(f"ratio with / without: {b / a:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["train", "overhead", "switch", "recipe"])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--run-dir", type=Path, default=ROOT / "bench_runs")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=3, help="recipe: epochs of each run")
    p.add_argument("--base", action="append", default=[], help="KEY=VALUE override for both sides (switch, recipe)")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE override for the second side (switch, recipe)")
    args = p.parse_args()
    {"train": run_train, "overhead": run_overhead, "switch": run_switch, "recipe": run_recipe}[args.what](args)


if __name__ == "__main__":
    main()
