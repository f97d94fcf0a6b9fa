"""README's examples, run. Every `resnet` command README shows (with its output after `$ `, or alone in a block)
has a plan here: how tests/test_readme.py runs it at small settings and checks that its output has the shape
README shows, or why it is not run. This script rewrites the samples of the cheap ones from a real run, so that
README cannot drift from the tool:

    python benchmarks/readme_examples.py            # rewrite the samples marked `regenerate` in README.md
    python benchmarks/readme_examples.py --check    # only list the samples that differ (exit 1 if any)

"Shape": every word of four letters or more in README's sample appears in the real output (titles, column
names, messages), so a renamed column or a line the tool no longer prints is caught, while the numbers may move.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
WIDTH = "100"  # COLUMNS for the samples: README's tables are drawn at this width


@dataclass
class Example:
    command: str  # as README shows it, without "$ ", comments and line continuations
    sample: list[str]  # the output lines README shows under it ([] for a bare command)
    line: int  # where README shows it (1-based)


@dataclass
class Plan:
    small: str = ""  # the command as the test runs it ("" = as README shows it); {fashion} = the data folder
    needs: tuple[str, ...] = ()  # "fashion" (the real data), "onnx" (the export extra), "run" (the quickstart run)
    setup: tuple[str, ...] = ()  # commands run before it (in the same folder)
    regenerate: bool = False  # cheap and exact: this script rewrites README's sample from a real run
    skip: str = ""  # why the test does not run it
    vary: tuple[str, ...] = ()  # words of the sample that are results, not shape (a small model predicts others)


FASHION_TRAIN = ("resnet train --preset fashion-mnist --data-dir ../shared/data/fashion-mnist --run-dir bench_runs "
                 "--name fashion-resnet20")
SMALL = "--set data.train_limit=512 --set data.test_limit=256 --epochs 1"
PLANS: dict[str, Plan] = {
    "resnet summary --depth 50": Plan(regenerate=True),
    "resnet data convert /data/imagenet /data/imagenet-wds --max-size 320": Plan(
        skip="needs an ImageNet folder; tests/test_shards.py converts generated folders"),
    "resnet train --preset imagenet --data-dir /data/imagenet-wds": Plan(
        skip="an ImageNet run; tests/test_shards.py trains the imagenet preset on small shards"),
    "resnet data bench /data/imagenet --preset torchvision --workers 8 --target-img-s 5500": Plan(
        skip="needs an ImageNet folder; tests/test_data_bench.py runs data bench on generated JPEGs"),
    "resnet flops": Plan(regenerate=True),
    "resnet presets": Plan(regenerate=True, vary=("work", "main")),  # its title names the checkout's folder
    FASHION_TRAIN: Plan(small=FASHION_TRAIN.replace("../shared/data/fashion-mnist", "{fashion}") + " " + SMALL,
                        needs=("fashion",), vary=("epochs",)),  # the small run trains 1 epoch
    "resnet eval bench_runs/fashion-resnet20": Plan(needs=("fashion", "run")),
    "resnet export runs/fashion-default -o fashion.onnx": Plan(needs=("fashion", "run", "onnx")),
    "resnet predict runs/fashion-default samples --topk 3": Plan(
        needs=("fashion", "run"), vary=("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                         "Sneaker", "Ankle", "boot")),
    "confusion matrix (rows: true class, columns: predicted)": Plan(
        small="resnet eval runs/fashion-default --confusion", needs=("fashion", "run")),
    "resnet train --preset finetune --init torchvision:resnet18 --data-dir flowers --freeze conv1,conv2_x": Plan(
        skip="downloads torchvision's weights; tests/test_first_hour.py and tests/test_finetune.py run it against a "
             "loopback server"),
    ("resnet train --preset finetune --model resnet20 --init bench_runs/fashion-preset --data-dir shoes "
     "--set data.image_size=28 --set data.workers=2 --batch-size 64 --epochs 5 --lr 0.05 --name shoes"): Plan(
        small="resnet train --preset finetune --model resnet20 --init bench_runs/fashion-preset --data-dir shoes "
              "--set data.image_size=28 --set data.workers=0 --batch-size 16 --epochs 1 --lr 0.05 --name shoes",
        needs=("fashion", "run"), setup=("python {root}/benchmarks/fashion_folder.py shoes --data-dir {fashion} "
                                         "--train 16 --val 8",), vary=("epochs",)),  # the small run: 1 epoch
    "resnet train --resume runs/resnet20-synthetic --epochs 3": Plan(  # README shows its first two lines
        setup=("resnet train --preset smoke --epochs 2",)),
    "final error %": Plan(skip="the output of benchmarks/degradation.sh: four trainings, about 15 minutes"),
    ("resnet gradflow plain56 resnet56 --dataset fashion-mnist --data-dir ../shared/data/fashion-mnist "
     "-o docs/gradflow.png"): Plan(small="resnet gradflow plain56 resnet56 --dataset fashion-mnist --data-dir "
                                         "{fashion} -o docs/gradflow.png", needs=("fashion",), setup=("mkdir docs",)),
    "resnet reproduce table6 --seeds 3 --out repro": Plan(
        skip="15 runs of 64k iterations; tests/test_reproduce.py runs table6 at a tiny scale"),
    "resnet reproduce figure6 --out repro --parallel 4": Plan(
        skip="8 runs of 64k iterations; tests/test_reproduce.py runs figure6 at a tiny scale"),
    "resnet reproduce figure1 --dataset fashion-mnist --steps 1600": Plan(
        small="resnet reproduce figure1 --dataset fashion-mnist --data-dir {fashion} --steps 2", needs=("fashion",)),
    "resnet reproduce table1": Plan(),
    "resnet reproduce table3": Plan(regenerate=True),
    "resnet reproduce figure3": Plan(regenerate=True),
    "resnet reproduce table6 --depths 20,56 --out repro": Plan(
        small="resnet reproduce table6 --depths 20,56 --out repro --dataset fashion-mnist --data-dir {fashion} "
              "--steps 2", needs=("fashion",)),
    "resnet train --preset fashion-mnist ...": Plan(
        skip="an elided command (its point is the interruption); tests/test_preemption.py sends the signals"),
}


def examples(text: str) -> list[Example]:
    """Every `resnet` command README shows: after `$ ` in a block (with the output under it), alone at the start
    of a line in a block, or an output-only block (keyed by its first line)."""
    out: list[Example] = []
    for block in re.finditer(r"```(\w*)\n(.*?)```", text, re.S):
        lang, body = block.groups()
        if lang not in ("text", "bash"):
            continue
        first = text[:block.start()].count("\n") + 2
        lines = body.splitlines()
        if lang == "text" and not any(ln.startswith("$ ") for ln in lines) and not lines[0].startswith("resnet "):
            out.append(Example(" ".join(lines[0].split()), lines, first))  # output only: the plan names its command
            continue
        i = 0
        while i < len(lines):
            ln = lines[i]
            shown = ln[2:] if ln.startswith("$ ") else ln
            if not shown.startswith("resnet "):
                i += 1
                continue
            start = i
            while shown.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                shown = shown.rstrip()[:-1] + " " + lines[i].strip()
            command = " ".join(shown.split("  #")[0].split("# ")[0].split())
            i += 1
            sample = []
            if ln.startswith("$ "):
                while i < len(lines) and not lines[i].startswith("$ "):
                    sample.append(lines[i])
                    i += 1
            out.append(Example(command, sample, first + start))
    return out


def words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z][A-Za-z_-]{3,}", text))


def missing_words(sample: list[str], output: str, vary: tuple[str, ...] = ()) -> set[str]:
    """The words of README's sample that the real output lacks (empty: the shapes agree), results excepted."""
    return words("\n".join(sample)) - words(output) - set(vary)


def run(command: str, cwd: Path, fashion: str = "", timeout: int = 600) -> subprocess.CompletedProcess:
    """A README command in `cwd`, as a user would type it (`resnet` is this checkout's), at README's width."""
    command = command.format(fashion=fashion, root=ROOT)
    argv = shlex.split(command)
    if argv[0] == "resnet":
        argv = [sys.executable, "-m", "resnet_cli", *argv[1:]]
    elif argv[0] == "python":
        argv[0] = sys.executable
    env = {**os.environ, "COLUMNS": WIDTH, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def regenerate(check: bool) -> int:
    import tempfile

    text = README.read_text()
    changed = []
    for ex in reversed(examples(text)):  # from the end, so that a rewritten sample moves no line still to come
        plan = PLANS.get(ex.command)
        if plan is None or not plan.regenerate or not ex.sample:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            for step in plan.setup:
                run(step, Path(tmp)).check_returncode()
            done = run(ex.command, Path(tmp))
        if done.returncode != 0:
            print(f"README line {ex.line}: `{ex.command}` failed: {done.stderr.strip()[-300:]}")
            return 1
        new = [ln.rstrip() for ln in done.stdout.rstrip("\n").splitlines()]
        old = [ln.rstrip() for ln in ex.sample]
        if new != old:
            changed.append(ex.command)
            lines = text.split("\n")
            start = ex.line  # the sample's first line (0-based: the line after the command's)
            while not lines[start - 1].startswith("$ "):  # a command continued over several lines
                start += 1
            lines[start:start + len(ex.sample)] = new
            text = "\n".join(lines)
    if check:
        for c in changed:
            print(f"README's sample of `{c}` differs from the tool's output")
        return 1 if changed else 0
    README.write_text(text)
    print(f"rewrote {len(changed)} sample(s): {', '.join(changed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(regenerate(check="--check" in sys.argv[1:]))
