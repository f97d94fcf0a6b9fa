"""The commands README and docs/ show, run. tests/test_readme.py runs them:

- README.md: every `resnet` command, literally and in order, in one folder (the quickstart's run folder and
  sample images are made by README's own commands), so a pasted sequence that fails a reader fails the suite.
  Fashion-MNIST comes from $RESNET_CLI_DATA, as README says it may.
- docs/*.md and CONTRIBUTING.md: every `resnet` command has a plan in PLANS: how the test runs it (at small
  settings where the real one takes long; in a folder holding a small `runs/fashion` and `samples/`, as the
  quickstart leaves them), or why it is not run.

Each command's output must have the "shape" of the sample shown under it: every word of four letters or more
in the sample appears in the real output (titles, column names, messages), so a renamed column or a line the
tool no longer prints is caught, while the numbers may move. This script rewrites the samples of the cheap,
exact ones from a real run, so that the pages cannot drift from the tool:

    python benchmarks/doc_examples.py            # rewrite the samples marked `regenerate`
    python benchmarks/doc_examples.py --check    # only list the samples that differ (exit 1 if any)
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
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "CONTRIBUTING.md"]  # commands run by their plans
WIDTH = "100"  # COLUMNS for the samples: README's tables are drawn at this width


@dataclass
class Example:
    command: str  # as the page shows it, without "$ ", comments and line continuations
    sample: list[str]  # the output lines the page shows under it ([] for a bare command)
    line: int  # where the page shows it (1-based)


@dataclass
class Plan:
    small: str = ""  # the command as the test runs it ("" = as the page shows it); {fashion} = the data folder
    needs: tuple[str, ...] = ()  # "fashion" (the real data), "run" (the quickstart run), else a module to import
    setup: tuple[str, ...] = ()  # commands run before it (in the same folder)
    regenerate: bool = False  # cheap and exact: this script rewrites the sample from a real run
    skip: str = ""  # why the test does not run it
    vary: tuple[str, ...] = ()  # words of the sample that are results, not shape (a small model predicts others)
    env: tuple[tuple[str, str], ...] = ()  # environment the page names beside the command (WANDB_MODE=offline)


# README's quickstart, as docs/ pages' plans find it: a small `runs/fashion` and the six `samples/`.
QUICKSTART_SMALL = ("resnet train --preset fashion-mnist --data-dir {fashion} --name fashion --epochs 1 "
                    "--set data.train_limit=512 --set data.test_limit=256",
                    "resnet data images fashion-mnist samples --data-dir {fashion}")

# README: what is shown but not run (install lines are not `resnet` commands and are not parsed), and the words
# of a sample that are results rather than shape (another run predicts other classes).
README_VARY: dict[str, tuple[str, ...]] = {
    "resnet predict runs/fashion samples --topk 3": ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                                     "Shirt", "Sneaker", "Ankle", "boot"),
    "resnet predict fashion.onnx samples/test4-shirt.png --topk 2": ("T-shirt", "Trouser", "Pullover", "Dress",
                                                                      "Coat", "Sandal", "Sneaker", "Ankle", "boot"),
}
README_VARY["resnet train --preset smoke --name smoke-mlflow --logger mlflow"] = ("dfdee",)  # the run id's letters
README_REGENERATE = ("resnet summary --depth 50",)  # cheap and exact: rewritten by this script

CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Ankle", "boot")
PLANS: dict[str, Plan] = {
    "resnet data imagenet ~/Downloads/ilsvrc2012 /data/imagenet": Plan(
        skip="needs ImageNet's archives; tests/test_imagenet_archives.py prepares miniatures of the same names "
             "and layout"),
    "resnet train --preset imagenet --data-dir /data/imagenet": Plan(
        skip="an ImageNet run; tests/test_imagenet_archives.py reads the folders it prepares as image folders"),
    "resnet data convert /data/imagenet /data/imagenet-wds --max-size 320": Plan(
        skip="needs an ImageNet folder; tests/test_shards.py converts generated folders"),
    "resnet train --preset imagenet --data-dir /data/imagenet-wds": Plan(
        skip="an ImageNet run; tests/test_shards.py trains the imagenet preset on small shards"),
    "resnet data bench /data/imagenet --preset torchvision --workers 8 --target-img-s 5500": Plan(
        skip="needs an ImageNet folder; tests/test_data_bench.py runs data bench on generated JPEGs"),
    "resnet data images fashion-mnist bags --split train --count 4 --classes bag,sneaker": Plan(
        small="resnet data images fashion-mnist bags --split train --count 4 --classes bag,sneaker "
              "--data-dir {fashion}", needs=("fashion",)),
    "resnet flops": Plan(regenerate=True),
    "resnet list --pretrained 'resnet50*'": Plan(regenerate=True),
    "resnet presets": Plan(regenerate=True, vary=("work", "main")),  # its title names the checkout's folder
    "resnet export runs/fashion -o fashion.pt2 --format export": Plan(needs=("fashion", "run"),
                                                                      small="resnet export runs/fashion -o "
                                                                            "fashion.pt2 --format export --force"),
    "resnet predict fashion.pt2 samples --topk 2 --csv": Plan(
        needs=("fashion", "run"), setup=("resnet export runs/fashion -o fashion.pt2 --format export --force",),
        vary=CLASSES),
    "confusion matrix (rows: true class, columns: predicted)": Plan(
        small="resnet eval runs/fashion --confusion --data-dir {fashion}", needs=("fashion", "run")),
    "resnet train --preset finetune --init torchvision:resnet18 --data-dir flowers --freeze conv1,conv2_x": Plan(
        skip="downloads torchvision's weights; tests/test_first_hour.py and tests/test_finetune.py run it against a "
             "loopback server"),
    ("resnet data images fashion-mnist shoes --image-folder --classes sandal,sneaker,ankle-boot --count 300 "
     "--val-count 200"): Plan(
        small="resnet data images fashion-mnist shoes --image-folder --classes sandal,sneaker,ankle-boot "
              "--count 300 --val-count 200 --data-dir {fashion}", needs=("fashion",)),
    ("resnet train --preset finetune --model resnet20 --init runs/fashion --data-dir shoes --set data.image_size=28 "
     "--batch-size 64 --epochs 5 --lr 0.05 --name shoes"): Plan(  # as shown: 14 s, beside a small runs/fashion
        needs=("fashion", "run"),
        setup=("resnet data images fashion-mnist shoes --image-folder --classes sandal,sneaker,ankle-boot "
               "--count 300 --val-count 200 --data-dir {fashion} --force",)),
    "resnet eval runs/shoes --scales 28,32,40,48": Plan(  # training.md's shoes run, for one epoch, named apart:
        # the folder is shared with training.md's own `--name shoes`, which would otherwise become shoes-2
        small="resnet eval runs/shoes-scales --scales 28,32,40,48", needs=("fashion", "run"),
        setup=("resnet data images fashion-mnist shoes --image-folder --classes sandal,sneaker,ankle-boot "
               "--count 300 --val-count 200 --data-dir {fashion} --force",
               "resnet train --preset finetune --model resnet20 --init runs/fashion --data-dir shoes --set "
               "data.image_size=28 --batch-size 64 --epochs 1 --lr 0.05 --name shoes-scales")),
    "resnet export runs/fashion --format hub -o fashion-hub": Plan(
        small="resnet export runs/fashion --format hub -o fashion-hub --force", needs=("fashion", "run")),
    ("resnet train --preset finetune --model resnet20 --init fashion-hub --data-dir shoes --set data.image_size=28 "
     "--epochs 1 --name shoes-from-hub"): Plan(
        needs=("fashion", "run"), setup=("resnet export runs/fashion --format hub -o fashion-hub --force",
                                         "resnet data images fashion-mnist shoes --image-folder --classes "
                                         "sandal,sneaker,ankle-boot --count 300 --val-count 200 --data-dir {fashion} "
                                         "--force")),
    "resnet train --preset smoke --name smoke-tracked --logger jsonl --logger wandb": Plan(
        env=(("WANDB_MODE", "offline"),), vary=("edwjqv",), needs=("wandb",)),  # the W&B run id's letters
    "resnet train --resume runs/resnet20-synthetic --epochs 3": Plan(  # the page shows its first two lines
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


def page_examples() -> list[tuple[Path, Example]]:
    """Every command the docs/ pages and CONTRIBUTING.md show, with its page."""
    return [(page, e) for page in PAGES for e in examples(page.read_text())]


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


def run(command: str, cwd: Path, fashion: str = "", timeout: int = 600,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A command of the pages in `cwd`, as a user would type it (`resnet` is this checkout's), at their width."""
    command = command.format(fashion=fashion, root=ROOT)
    argv = shlex.split(command)
    if argv[0] == "resnet":
        argv = [sys.executable, "-m", "resnet_cli", *argv[1:]]
    elif argv[0] == "python":
        argv[0] = sys.executable
    env = {**os.environ, "COLUMNS": WIDTH, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", **(env or {})}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def regenerate(check: bool) -> int:
    changed = []
    for page in [README, *PAGES]:
        status = _regenerate_page(page, check, changed)
        if status:
            return status
    if check:
        for c in changed:
            print(f"the sample of `{c}` differs from the tool's output")
        return 1 if changed else 0
    print(f"rewrote {len(changed)} sample(s): {', '.join(changed) or 'none'}")
    return 0


def _regenerate_page(page: Path, check: bool, changed: list[str]) -> int:
    import tempfile

    text = page.read_text()
    before = len(changed)
    for ex in reversed(examples(text)):  # from the end, so that a rewritten sample moves no line still to come
        plan = PLANS.get(ex.command) if page != README else Plan(regenerate=ex.command in README_REGENERATE)
        if plan is None or not plan.regenerate or not ex.sample:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            for step in plan.setup:
                run(step, Path(tmp)).check_returncode()
            done = run(ex.command, Path(tmp))
        if done.returncode != 0:
            print(f"{page.name} line {ex.line}: `{ex.command}` failed: {done.stderr.strip()[-300:]}")
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
    if not check and len(changed) > before:
        page.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(regenerate(check="--check" in sys.argv[1:]))
