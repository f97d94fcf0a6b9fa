"""`plot` and `gradflow`, and per-stage gradient norms in metrics.csv."""

from __future__ import annotations

import csv
import math
import sys

import pytest
from conftest import last_json



def fake_run(folder, model, epochs=5, worse=0.0):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"model:\n  name: {model}\n")
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "step", "lr", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5",
                    "seconds", "img_per_s"])
        for e in range(1, epochs + 1):
            acc = 0.5 + 0.08 * e - worse
            w.writerow([e, 100 * e, 0.1, 1.5 / e, acc, 1.6 / e, acc - 0.03, 0.99, 10.0, 500.0])
    return folder


def test_plot_writes_a_png_and_a_text_view(cli, tmp_path):
    pytest.importorskip("matplotlib")
    a = fake_run(tmp_path / "a", "plain20")
    b = fake_run(tmp_path / "b", "plain56", worse=0.1)
    out = tmp_path / "fig.png"
    result = cli("plot", a, b, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert "plain20" in result.stdout and "plain56" in result.stdout
    data = cli.json("plot", a, b, "-o", out, "--force", "--metric", "error", "--x", "step")  # the same file again
    runs = {r["model"]: r for r in data["runs"]}
    assert runs["plain56"]["train_error"] == pytest.approx(100 - 100 * (0.5 + 0.4 - 0.1))
    assert runs["plain20"]["best_test_error"] == pytest.approx(100 - 100 * (0.9 - 0.03))
    assert set(data) == {"png", "metric", "x", "runs"}


def test_plot_without_matplotlib_says_how_to_install(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = cli("plot", fake_run(tmp_path / "a", "resnet20"), "-o", tmp_path / "x.png")
    assert result.exit_code == 2
    assert 'pip install "resnet-cli[plot]"' in result.stderr


def test_gradflow_one_finite_norm_per_conv_and_ratio(cli):
    data = cli.json("gradflow", "plain20", "resnet20", "--batch-size", "32")
    assert set(data) == {"data", "batch_size", "seed", "device", "models", "png"}
    for r in data["models"]:
        assert set(r) == {"model", "loss", "first_norm", "last_norm", "first_over_last", "layers"}
        assert len(r["layers"]) == 19  # 6n+1 main-path convs for n = 3 (the 20th layer is the fc)
        assert [layer["index"] for layer in r["layers"]] == list(range(1, 20))
        assert all(math.isfinite(layer["norm"]) and layer["norm"] > 0 for layer in r["layers"])
        assert r["first_over_last"] == pytest.approx(r["first_norm"] / r["last_norm"])
        assert r["layers"][0]["name"] == "conv1" and r["layers"][0]["stage"] == "stem"
    text = cli("gradflow", "--depth", "20", "--plain", "--batch-size", "16")
    assert text.exit_code == 0 and "first conv / last conv gradient norm" in text.stdout


def test_gradflow_leaves_the_model_untouched():
    import torch

    from resnet_cli import build_model
    from resnet_cli.gradflow import conv_grad_norms

    model = build_model("resnet20").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    conv_grad_norms(model, torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow  # 3.5 s on 2026-12-06's machine: the quick loop keeps under 90 s
def test_train_logs_per_stage_gradient_norms(cli, tmp_path):
    result = cli("train", "--preset", "smoke", "--device", "cpu", "--epochs", "1", "--set", "train.log_grad_norms=true",
                 "--run-dir", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    with open(last_json(result.stdout)["run_dir"] + "/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for col in ("grad_norm_stem", "grad_norm_conv2_x", "grad_norm_conv3_x", "grad_norm_conv4_x", "grad_norm_fc"):
        assert float(rows[0][col]) > 0
