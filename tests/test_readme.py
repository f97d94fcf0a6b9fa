"""README's examples are run (benchmarks/readme_examples.py holds the plan for each): every `resnet` command
README shows runs at small settings and its output has the shape README shows, or the plan says why not."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import readme_examples as rx  # noqa: E402

EXAMPLES = rx.examples(rx.README.read_text())


def test_every_readme_command_has_a_plan():
    unknown = [f"line {e.line}: {e.command}" for e in EXAMPLES if e.command not in rx.PLANS]
    assert not unknown, "README shows commands with no plan in benchmarks/readme_examples.py: " + "; ".join(unknown)
    stale = set(rx.PLANS) - {e.command for e in EXAMPLES}
    assert not stale, f"plans for commands README no longer shows: {stale}"


def test_the_python_api_example_runs():
    code = re.search(r"```python\n(from resnet_cli import.*?)```", rx.README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["model"].fc.out_features == 100 and scope["gray"].conv1.in_channels == 1


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with what README's commands expect around them: the quickstart's run (small), under the names
    README uses for it (bench_runs/fashion-resnet20, runs/fashion-default, bench_runs/fashion-preset), and six
    Fashion-MNIST test images as PNG in samples/."""
    folder = tmp_path_factory.mktemp("readme")
    fashion = next((d for d in (ROOT.parent / "shared" / "data" / "fashion-mnist",
                                Path("/usr/share/datasets/fashion-mnist")) if d.is_dir()), None)
    if fashion is not None:
        made = rx.run(rx.PLANS[rx.FASHION_TRAIN].small, folder, str(fashion))
        assert made.returncode == 0, made.stderr
        for name in ("runs/fashion-default", "bench_runs/fashion-preset"):  # README's other names for that run
            shutil.copytree(folder / "bench_runs" / "fashion-resnet20", folder / name)
        from PIL import Image

        from resnet_cli.data import idx

        *_, test_x, test_y, classes = idx.load("fashion-mnist", fashion, False)
        (folder / "samples").mkdir()
        for i in range(6):  # named as README's: test0-ankle-boot.png
            slug = classes[int(test_y[i])].lower().replace("/", "-").replace(" ", "-")
            Image.fromarray(test_x[i, 0].numpy()).save(folder / "samples" / f"test{i}-{slug}.png")
    return folder, fashion


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[re.sub(r"\W+", "-", e.command)[:60] for e in EXAMPLES])
def test_readme_example_runs_and_has_the_shape_shown(example, workdir, tmp_path):
    plan = rx.PLANS[example.command]
    if plan.skip:
        pytest.skip(plan.skip)
    folder, fashion = workdir
    if "fashion" in plan.needs and fashion is None:
        pytest.skip("real Fashion-MNIST not found")
    if "onnx" in plan.needs:
        pytest.importorskip("onnxscript")
        pytest.importorskip("onnxruntime")
    here = folder if "run" in plan.needs else tmp_path
    for step in plan.setup:
        done = rx.run(step, here, str(fashion))
        assert done.returncode == 0, (step, done.stderr)
    done = rx.run(plan.small or example.command, here, str(fashion))
    assert done.returncode == 0, done.stderr
    lost = rx.missing_words(example.sample, done.stdout + done.stderr, plan.vary)
    assert not lost, f"README line {example.line}: the output no longer has {sorted(lost)}"
