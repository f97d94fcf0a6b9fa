"""CLI conventions: fast import, list/build, checkpoints, and bad input as one line with exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from resnet_cli import build_model
from resnet_cli.cli import app


@pytest.mark.slow
def test_cli_import_does_not_import_torch():
    code = "import sys, resnet_cli.cli; assert 'torch' not in sys.modules and 'fvcore' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "resnet_cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("resnet-cli ")


def test_help_has_examples(cli):
    for cmd in ("list", "build", "summary", "flops"):
        result = cli(cmd, "--help")
        assert result.exit_code == 0
        assert "Example" in result.stdout


def test_list_json_and_table(cli):
    rows = cli.json("list", "resnet*")
    assert {r["name"] for r in rows} >= {"resnet18", "resnet1202", "resnet152-v1.5"}
    r56 = next(r for r in rows if r["name"] == "resnet56")
    assert (r56["family"], r56["block"], r56["depth"], r56["params"], r56["input_size"]) == \
        ("cifar", "basic", 56, 853_018, 32)
    table = cli("list", "plain*")
    assert table.exit_code == 0 and "plain1202" in table.stdout and "resnet18 " not in table.stdout


def test_build_checkpoint_rebuilds_the_model(cli, tmp_path, monkeypatch):
    umask = os.umask(0)
    os.umask(umask)

    def setting_the_umask(mask):  # reading it means setting it: every file another thread makes meanwhile gets 0666
        raise AssertionError("the umask was changed")

    monkeypatch.setattr(os, "umask", setting_the_umask)
    path = tmp_path / "m.pt"
    out = cli.json("build", "--depth", "32", "--plain", "--num-classes", "100", "--in-channels", "1", "-o", path)
    assert out["params"] == sum(p.numel() for p in build_model("plain32", num_classes=100, in_channels=1).parameters())
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) >= {"model", "config", "version"}
    model = build_model(**ckpt["config"]["model"])
    model.load_state_dict(ckpt["model"], strict=True)
    assert ckpt["config"]["model"] == {"name": "plain32", "num_classes": 100, "in_channels": 1,
                                       "zero_init_residual": False, "shortcut": "", "drop_path": 0.0}
    assert not list(tmp_path.glob(".*tmp*")), "temp files left behind"
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("export", marks=pytest.mark.slow)])  # export: 1.6 s
def test_build_other_formats_compute_the_same(cli, tmp_path, fmt):
    path = tmp_path / ("m.ts" if fmt == "torchscript" else "m.pt2")
    result = cli("build", "resnet20", "-o", path, "--format", fmt, "--seed", "3")
    assert result.exit_code == 0, result.output
    torch.manual_seed(3)
    ref = build_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    from resnet_cli.export import run_file

    with torch.no_grad():
        assert torch.allclose(run_file(path, fmt, x), ref(x), atol=1e-5)


def test_cuda_without_gpu_says_so(cli):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = cli("flops", "resnet20", "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA GPU is available" in result.stderr


def test_debug_shows_the_traceback(cli):
    result = cli("--debug", "summary", "resnt50")
    assert isinstance(result.exception, Exception) and "resnt50" in str(result.exception)


def test_help_texts_are_shown_whole(cli):
    """Rich must not swallow '[default: ...]' as markup: every option's help text reaches the screen."""
    import typer.main

    group = typer.main.get_command(app)
    checked = 0
    for name, command in group.commands.items():
        shown = " ".join(cli(name, "--help", env={"COLUMNS": "400"}).stdout.split()).replace("- ", "-")
        for param in command.params:  # (a line may break after a hyphen: zero-padding)
            text = " ".join((getattr(param, "help", None) or "").replace("\\[", "[").split()).replace("- ", "-")
            if "[" in text:
                assert text in shown, (name, param.name)
                checked += 1
    assert checked >= 8


def test_printed_data_is_not_read_as_markup(cli):
    result = cli("list", "nomatch[ab]")
    assert "nomatch[ab]" in result.stdout


def test_help_reads_at_80_columns_for_every_command(cli):
    """#37: no option name or choice cut (…), no metavar on a flag, arguments in capitals, no line past 80."""
    import re

    import typer.main

    group = typer.main.get_command(app)
    commands = [[name] for name in group.commands if name != "data"] + [["data", n] for n in
                                                                         group.commands["data"].commands]
    flags = 0
    for path in [[], *commands]:
        out = cli(*path, "--help", env={"COLUMNS": "80"}).stdout
        assert "…" not in out and max(map(len, out.splitlines())) <= 80, (path, out)
        assert "<bool>" not in out and "[bold]" not in out and "\\[" not in out, path
        usage = out.splitlines()[0]
        assert "{" not in usage and not re.search(r" [a-z_]+(\.\.\.)?( |$)", usage.split("[OPTIONS]")[-1]), usage
        flags += len(re.findall(r"^  --(plain|json|force|ten-crop|confusion)\s{2,}\S", out, re.M))
    assert flags >= 10  # flags are listed bare: the name, then its help
    assert cli("eval", "--help").stdout.startswith("Usage: resnet eval [OPTIONS] SOURCE\n")
    assert "Usage: resnet predict [OPTIONS] SOURCE IMAGES..." in cli("predict", "--help").stdout


def test_under_json_stdout_holds_the_json_alone_whatever_a_dependency_prints(cli, monkeypatch):
    """A program reads stdout under --json: what a dependency prints there (onnxscript 0.6's ONNX exporter prints
    "Applied 60 of general pattern rewrite rules." during `resnet export`) goes to stderr instead, for a result and
    for an error alike, and stdout is the command's own again afterwards."""
    import json

    from resnet_cli import analysis
    from resnet_cli.errors import BadInput

    chatter = "Applied 60 of general pattern rewrite rules."
    real = analysis.summarize

    def chatty(*args, **kwargs):
        print(chatter)
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis, "summarize", chatty)
    before = sys.stdout
    done = cli("summary", "resnet20", "--json")
    assert done.exit_code == 0 and json.loads(done.stdout)["params"]["total"] == 269_722  # all of stdout parses
    assert chatter in done.stderr and sys.stdout is before
    plain = cli("summary", "resnet20")  # without --json, stdout is everyone's, as before
    assert chatter in plain.stdout

    def failing(*args, **kwargs):
        print(chatter)
        raise BadInput("no such thing")

    monkeypatch.setattr(analysis, "summarize", failing)
    failed = cli("summary", "resnet20", "--json")
    assert failed.exit_code == 2 and json.loads(failed.stdout) == {"error": "no such thing", "exit_code": 2}
    assert failed.stderr.splitlines() == [chatter, "error: no such thing"]


def test_progress_is_plain_lines_in_a_log_and_none_for_a_short_command(monkeypatch, capsys):
    """Where stderr is not a terminal (a log, CI, a SLURM job) a long command says how far it is, at most every
    PLAIN_EVERY seconds, with an ETA from the rate since its first update; a short one says nothing."""
    import time

    from resnet_cli.commands import _common

    clock = iter([100.0, 120.0, 131.0, 140.0, 170.0, 200.0])  # one reading an update
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    with _common.progress_bar("converting") as update:  # stderr is captured here: not a terminal
        for done in (0, 10, 40, 50, 90, 100):
            update(done, 100)
    assert capsys.readouterr().err.splitlines() == ["converting: 40/100 (40%), eta 0:46",
                                                    "converting: 90/100 (90%), eta 0:08"]
    with _common.progress_bar("converting", quiet=True) as update:
        assert update is None
