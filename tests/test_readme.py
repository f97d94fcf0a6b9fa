"""README and docs/ are run (benchmarks/doc_examples.py): README's commands literally, in order, in one folder, as
a reader pastes them; every command of the docs/ pages and CONTRIBUTING.md by its plan. Each output must still
have the shape of the sample shown under it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import doc_examples as dx  # noqa: E402

README_EXAMPLES = dx.examples(dx.README.read_text())
PAGE_EXAMPLES = dx.page_examples()
FASHION = next((d for d in (ROOT.parent / "shared" / "data" / "fashion-mnist",
                            Path("/usr/share/datasets/fashion-mnist")) if d.is_dir()), None)


def test_every_page_command_has_a_plan():
    unknown = [f"{page.name} line {e.line}: {e.command}" for page, e in PAGE_EXAMPLES if e.command not in dx.PLANS]
    assert not unknown, "commands with no plan in benchmarks/doc_examples.py: " + "; ".join(unknown)
    stale = set(dx.PLANS) - {e.command for _, e in PAGE_EXAMPLES}
    assert not stale, f"plans for commands no page shows any longer: {stale}"
    shown = {e.command for e in README_EXAMPLES}  # README's run literally (a plan of the same text is a page's)
    assert set(dx.README_VARY) <= shown and set(dx.README_REGENERATE) <= shown


def test_readme_is_a_front_door():
    """Under about 300 lines, install for CPU and GPU, a check, the quickstart and links to every docs/ page."""
    text = dx.README.read_text()
    assert len(text.splitlines()) <= 300
    assert "download.pytorch.org/whl/cpu" in text and "GPU" in text
    for page in (ROOT / "docs").glob("*.md"):
        assert f"](docs/{page.name})" in text, f"README does not link docs/{page.name}"
    assert "](CONTRIBUTING.md)" in text
    # the quickstart's run folder is the one every later README command uses
    runs = {m for e in README_EXAMPLES for m in re.findall(r"runs/[\w.-]+", e.command)}
    assert runs == {"runs/fashion"}, runs


def test_the_python_api_example_runs():
    code = re.search(r"```python\n(from resnet_cli import.*?)```", dx.README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["model"].fc.out_features == 100 and scope["gray"].conv1.in_channels == 1


@pytest.mark.slow
def test_readme_runs_top_to_bottom_in_one_folder(tmp_path):
    """README's commands exactly as shown, in order, in one folder: the quickstart trains runs/fashion (one real
    Fashion-MNIST epoch, about 1.5 minutes on 2 cores) and makes samples/, which the commands after it use.
    Fashion-MNIST comes from $RESNET_CLI_DATA (a folder holding fashion-mnist/), as README says it may."""
    if FASHION is None:
        pytest.skip("real Fashion-MNIST not found")
    for extra in ("onnxscript", "onnxruntime", "safetensors", "mlflow"):  # README shows them: CI installs them
        pytest.importorskip(extra)
    data = tmp_path / "data"
    data.mkdir()
    (data / "fashion-mnist").symlink_to(FASHION)
    work = tmp_path / "work"
    work.mkdir()
    for example in README_EXAMPLES:
        done = dx.run(example.command, work, env={"RESNET_CLI_DATA": str(data)})
        assert done.returncode == 0, f"README line {example.line}: `{example.command}`: {done.stderr[-2000:]}"
        lost = dx.missing_words(example.sample, done.stdout + done.stderr, dx.README_VARY.get(example.command, ()))
        assert not lost, f"README line {example.line}: the output of `{example.command}` no longer has {sorted(lost)}"
    assert (work / "runs" / "fashion" / "best.pt").is_file() and len(list((work / "samples").glob("*.png"))) == 6


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder holding what README's quickstart leaves (small): runs/fashion and six PNG images in samples/."""
    folder = tmp_path_factory.mktemp("docs")
    if FASHION is not None:
        for step in dx.QUICKSTART_SMALL:
            made = dx.run(step, folder, str(FASHION))
            assert made.returncode == 0, (step, made.stderr)
    return folder


@pytest.mark.slow
def test_the_load_model_example_runs_in_the_quickstarts_folder(workdir, monkeypatch):
    """docs/after-training.md's Python: load_model on README's run, its transform and predict, in the folder
    README's quickstart leaves."""
    if FASHION is None:
        pytest.skip("real Fashion-MNIST not found")
    page = (ROOT / "docs" / "after-training.md").read_text()
    code = re.search(r"```python\n(from PIL import Image\nfrom resnet_cli import load_model.*?)```", page, re.S).group(1)
    monkeypatch.chdir(workdir)
    scope: dict = {}
    exec(compile(code, "after-training.md", "exec"), scope)
    assert scope["x"].shape == (1, 28, 28) and scope["clf"].classes[6] == "Shirt"


@pytest.mark.slow
@pytest.mark.parametrize("page,example", PAGE_EXAMPLES,
                         ids=[f"{p.stem}-{re.sub(r'[^A-Za-z0-9]+', '-', e.command)[:50]}" for p, e in PAGE_EXAMPLES])
def test_page_example_runs_and_has_the_shape_shown(page, example, workdir, tmp_path):
    plan = dx.PLANS[example.command]
    if plan.skip:
        pytest.skip(plan.skip)
    if "fashion" in plan.needs and FASHION is None:
        pytest.skip("real Fashion-MNIST not found")
    for extra in set(plan.needs) - {"fashion", "run"}:  # an optional package: CONTRIBUTING's install lacks some
        pytest.importorskip(extra)
    here = workdir if "run" in plan.needs else tmp_path
    for step in plan.setup:
        done = dx.run(step, here, str(FASHION))
        assert done.returncode == 0, (step, done.stderr)
    done = dx.run(plan.small or example.command, here, str(FASHION), env=dict(plan.env))
    assert done.returncode == 0, done.stderr
    lost = dx.missing_words(example.sample, done.stdout + done.stderr, plan.vary)
    assert not lost, f"{page.name} line {example.line}: the output no longer has {sorted(lost)}"
