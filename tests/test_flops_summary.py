"""`flops` and `summary`: the paper's figures, output sizes read off the model, JSON fields."""

from __future__ import annotations

import pytest
import torch

from resnet_cli import build_model
from resnet_cli.analysis import count_macs, output_shapes, stage_rows
from conftest import last_json

PAPER = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}


@pytest.mark.slow  # traces the five ImageNet nets (fvcore)
def test_bare_flops_checks_the_five_paper_figures(cli):
    result = cli("flops", "--json")
    assert result.exit_code == 0, result.output
    out = last_json(result.stdout)
    rows = {r["model"]: r for r in out["models"]}
    assert set(rows) == set(PAPER)
    for name, paper in PAPER.items():
        r = rows[name]
        assert r["paper_gmacs"] == paper
        assert abs(r["gmacs"] - paper) / paper <= 0.03, (name, r["gmacs"])
        assert r["gflops"] == pytest.approx(2 * r["gmacs"])
        assert r["ok"] is True
        assert 0 < r["bn_gmacs"] < 0.05 * r["gmacs"]
        assert "aten::max_pool2d" in r["uncounted_ops"]
    assert out["failed"] == []


@pytest.mark.slow  # 2.6 s on 2026-12-06's machine: the quick loop keeps under 90 s
def test_flops_check_fails_with_exit_1_when_off(cli):
    result = cli("flops", "resnet50", "--tolerance", "0.001")
    assert result.exit_code == 1
    assert "resnet50 off the published figure" in result.stderr
    assert cli("flops", "resnet50", "--tolerance", "0.001", "--no-check").exit_code == 0


@pytest.mark.slow  # resnet1202 and resnet50 traced by two counters
def test_flops_check_checks_every_model_against_its_published_figure(cli):
    """The CIFAR nets against Table 6's parameter counts, v1.5 against torchvision's GFLOPS: something is checked
    (#37: `--check resnet20 resnet1202` and `--check resnet50-v1.5` used to pass with every column `-`)."""
    out = cli.json("flops", "--check", "resnet20", "resnet1202", "plain20")
    rows = {r["model"]: r for r in out["models"]}
    assert [rows[m]["reference"]["value"] for m in ("resnet20", "resnet1202", "plain20")] == [0.27e6, 19.4e6, 0.27e6]
    assert all(r["checked"] and r["reference_ok"] and r["reference"]["quantity"] == "params" for r in rows.values())
    assert rows["resnet20"]["reference_deviation"] == pytest.approx(269_722 / 270_000 - 1)
    assert "Table 6" in rows["resnet20"]["reference"]["source"]
    v15 = cli.json("flops", "--check", "resnet50-v1.5")["models"][0]
    assert v15["checked"] and v15["reference"]["value"] == 4.09 and "torchvision" in v15["reference"]["source"]
    assert abs(v15["reference_deviation"]) < 0.01
    off = cli("flops", "--check", "resnet20", "--tolerance", "0.0001")  # 269,722 is 0.1% under 0.27M
    assert off.exit_code == 1 and "resnet20 off the published figure by more than 0%" in off.stderr
    text = cli("flops", "resnet20")
    assert "checked against published figures" in text.stdout and "T6: the paper's Table 6" in text.stdout


def test_a_cifar_net_is_checked_and_one_with_nothing_to_check_against_fails():
    """Quick: the CIFAR nets count in milliseconds (the ImageNet cases are the slow test below)."""
    from typer.testing import CliRunner

    from resnet_cli.cli import app

    ok = CliRunner().invoke(app, ["flops", "--check", "resnet56", "--json"])
    row = last_json(ok.stdout)["models"][0]
    assert ok.exit_code == 0 and row["checked"] and row["reference"]["value"] == 0.85e6
    other = CliRunner().invoke(app, ["flops", "resnet56", "--in-channels", "1"])
    assert other.exit_code == 1 and "not checked: resnet56 (its published figure is with 10 classes, RGB)" \
        in other.stderr


@pytest.mark.slow  # ImageNet nets traced by two counters, three times each
def test_a_model_with_nothing_to_check_against_fails_the_check_unless_allowed(cli):
    for args, why in ((["plain50"], "plain50 (no published figure)"),
                      (["resnet34", "--shortcut", "C"], "resnet34 (its published figure is of the paper's shortcuts "
                                                        "(B), not C)"),
                      (["resnet50", "--input-size", "160"], "resnet50 (its published figure is at 224x224, 1000 "
                                                            "classes, RGB)"),
                      (["resnet20", "--num-classes", "100"], "resnet20 (its published figure is with 10 classes, "
                                                             "RGB)")):
        result = cli("flops", *args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.strip() == (f"error: not checked: {why}; a check that checks nothing fails: "
                                         "--allow-unchecked passes it, --no-check counts without checking")
        assert cli("flops", *args, "--allow-unchecked").exit_code == 0
        assert cli("flops", *args, "--no-check").exit_code == 0


@pytest.mark.slow  # traces the five ImageNet nets (fvcore)
def test_flops_v15_figures(cli):
    out = cli.json("flops", "resnet50", "--v1.5", "--no-check")
    rows = {r["model"]: r for r in out["models"]}
    assert rows["resnet50-v1.5"]["gmacs"] == pytest.approx(4.09, abs=0.02)
    assert rows["resnet50-v1.5"]["paper_gmacs"] is None
    text = cli("flops", "--depth", "101", "--v1.5")
    assert text.exit_code == 0
    assert "v1.5 (torchvision) strides the 3x3 conv" in text.stdout
    assert "resnet101-v1.5" in text.stdout


def test_flops_cpu_timing(cli):
    out = cli.json("flops", "resnet20", "--device", "cpu", "--batch-size", "4")
    t = out["models"][0]["timing"]
    assert t["batch_size"] == 4 and t["images_per_s"] > 0 and t["tflops"] > 0
    assert t["min_ms"] <= t["median_ms"] <= t["max_ms"]


def test_macs_exclude_batchnorm_and_match_hand_count():
    # resnet20 at 32x32: every 3x3 conv is H*W*Cin*Cout*9 multiply-adds, plus the fc.
    convs = 32 * 32 * 3 * 16 * 9 + 6 * 32 * 32 * 16 * 16 * 9
    convs += 16 * 16 * 16 * 32 * 9 + 5 * 16 * 16 * 32 * 32 * 9 + 8 * 8 * 32 * 64 * 9 + 5 * 8 * 8 * 64 * 64 * 9
    c = count_macs(build_model("resnet20"), 32)
    assert c.macs == convs + 64 * 10
    assert c.bn_macs > 0


def test_summary_resnet50_output_sizes(cli):
    out = cli.json("summary", "--depth", "50")
    sizes = {s["layer"]: s["output_size"][0] for s in out["stages"]}
    assert [sizes[k] for k in ("conv1", "pool", "conv2_x", "conv3_x", "conv4_x", "conv5_x")] == [112, 56, 56, 28, 14, 7]
    assert [s["layer"] for s in out["stages"]] == ["conv1", "pool", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "fc"]
    stage = {s["layer"]: s for s in out["stages"]}
    assert stage["conv2_x"]["block"] == "[1x1, 64 / 3x3, 64 / 1x1, 256] x 3"
    assert stage["conv1"]["block"] == "7x7, 64, stride 2"
    assert out["total"]["params"] == 25_557_032
    assert sum(s["params"] for s in out["stages"]) == out["total"]["params"]
    assert sum(s["macs"] for s in out["stages"]) == out["total"]["macs"]


@pytest.mark.slow  # four summaries, 2-3 s: the quick loop keeps under 90 s
def test_summary_in_80_columns_stacks_each_stage_as_table_1_does(cli):
    """Wide (a log, a pipe), a stage's block is one line; in a terminal of 80 columns, where that line would wrap
    mid-phrase, its convolutions are stacked as in the paper's Table 1, and nothing wraps or passes column 80."""
    wide = cli("summary", "--depth", "50").stdout
    assert "│ [1x1, 64 / 3x3, 64 / 1x1, 256] x 3    │" in wide and "│ 3x3 max pool, stride 2  " in wide
    for model, cells in (("resnet50", ["│ [1x1, 64 ]      ", "│ [3x3, 64 ] x 3  ", "│ [1x1, 256]      ",
                                       "│ [1x1, 256 ]     ", "│ [3x3, 256 ] x 6 ", "│ [1x1, 1024]     ",
                                       "│ 3x3 max pool,   ", "│ stride 2        ", "│ global average pool, │"]),
                         ("resnet110", ["│ [3x3, 16] x 18 ", "│ [3x3, 16]      ", "│ 3x3, 16        "]),
                         ("vgg19", ["│ [3x3, 512] x 4 ", "│ 2x2 max pool   "])):
        narrow = cli("summary", model, env={"COLUMNS": "80"}).stdout
        table = narrow[:narrow.index("Multiply-adds")]
        assert max(map(len, narrow.splitlines())) <= 80 and all(cell in table for cell in cells), (model, narrow)


def test_summary_cifar_sizes_follow_input_size(cli):
    out = cli.json("summary", "resnet20")
    assert [s["output_size"][0] for s in out["stages"] if s["layer"].startswith("conv")] == [32, 32, 16, 8]
    assert [s["layer"] for s in out["stages"]] == ["conv1", "conv2_x", "conv3_x", "conv4_x", "fc"]
    out = cli.json("summary", "resnet20", "--input-size", "224")
    first = out["stages"][1]
    assert (first["output_size"], first["channels"]) == ([224, 224], 16)


def test_summary_table_and_detail(cli):
    result = cli("summary", "resnet20", "--detail")
    assert result.exit_code == 0
    assert "[3x3, 16 / 3x3, 16] x 3" in result.stdout
    # a CIFAR net's multiply-adds in millions (in G its stages read 0.013), ImageNet's in G as in Table 1
    assert "MMACs" in result.stdout and "│ 40.55 │" in result.stdout and "BatchNorm would add 0.4 M." in result.stdout
    big = cli("summary", "resnet50").stdout
    assert "GMACs" in big and "│ 3.858 │" in big and "BatchNorm would add 0.02 G." in big
    assert "layer3.2.conv2" in result.stdout
    out = cli.json("summary", "plain20", "--detail")
    mods = {m["name"]: m for m in out["modules"]}
    assert mods["layer2.0.conv1"]["output_shape"] == [32, 16, 16]
    assert mods["fc"]["params"] == 650


def test_summary_leaves_mode_device_and_stats_alone():
    model = build_model("resnet20").train()
    model.layer1[0].bn1.eval()  # a mixed-mode model must come back mixed
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stage_rows(model, 32)
    output_shapes(model, 40)
    assert model.training and not model.layer1[0].bn1.training and model.layer1[0].bn2.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"


def closed_form_macs(model, size: int) -> int:
    """Conv + fc multiply-adds from the layer shapes alone: Cout x Hout x Wout x Cin/groups x kh x kw per conv."""
    import torch

    total, shapes = 0, {}
    hooks = [m.register_forward_hook(lambda m, i, o, shapes=shapes: shapes.__setitem__(m, o.shape))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, model.conv1.in_channels, size, size))
    for h in hooks:
        h.remove()
    for conv, (_, cout, h, w) in shapes.items():
        kh, kw = conv.kernel_size
        total += cout * h * w * (conv.in_channels // conv.groups) * kh * kw
    return total + model.fc.in_features * model.fc.out_features


@pytest.mark.slow  # traces ten ImageNet nets (fvcore) and runs them once for the closed form
def test_two_counters_and_the_closed_form_agree_on_every_depth_and_stride_placement():
    from resnet_cli.analysis import count_macs, count_macs_dispatcher
    from resnet_cli.models import build_model

    for depth in (18, 34, 50, 101, 152):
        for suffix in ("", "-v1.5") if depth >= 50 else ("",):
            net = build_model(f"resnet{depth}{suffix}")
            fv, second, exact = count_macs(net, 224).macs, count_macs_dispatcher(net, 224), closed_form_macs(net, 224)
            assert fv == second == exact, (depth, suffix, fv, second, exact)
    v1, v15 = (count_macs_dispatcher(build_model(n), 224) for n in ("resnet50", "resnet50-v1.5"))
    assert 0.2e9 < v15 - v1 < 0.26e9  # v1.5's stride on the 3x3 conv: about +0.23 GMACs


def test_cifar_counts_agree_and_a_disagreeing_counter_fails_the_check(cli, monkeypatch):
    from resnet_cli import analysis
    from resnet_cli.models import build_model

    net = build_model("resnet20")
    assert analysis.count_macs(net, 32).macs == analysis.count_macs_dispatcher(net, 32) == closed_form_macs(net, 32)
    out = cli.json("flops", "resnet20")
    assert out["models"][0]["counters_agree"] is True and out["failed"] == []
    real = analysis.count_macs_dispatcher
    monkeypatch.setattr(analysis, "count_macs_dispatcher", lambda m, s: int(real(m, s) * 1.01))
    result = cli("flops", "resnet20")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: fvcore and FlopCounterMode disagree by more than 0.1% on resnet20"


@pytest.mark.slow  # a training and four commands: the quick loop keeps under 90 s
def test_every_command_that_times_or_evaluates_sets_the_backends_it_reports(cli, tmp_path, monkeypatch, smoke_args):
    """#34 item 4: `flops --device` (fp32: no TF32, cuDNN autotuned), `eval`, `predict` and `bench` resolve the
    process-wide kernel choices (Speed.configure_backends) for their device, as train does, so that a figure does
    not depend on what ran before it in the process. Here: each call is seen, with its device and precision."""
    from PIL import Image

    from resnet_cli.speed import Speed

    seen = []
    real = Speed.configure_backends

    def spy(self, device):
        seen.append((self.precision, device.type))
        return real(self, device)

    assert cli("train", *smoke_args(), "--epochs", "1", "--run-dir", tmp_path, "--name", "r").exit_code == 0
    monkeypatch.setattr(Speed, "configure_backends", spy)
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    for args in (("flops", "resnet20", "--device", "cpu", "--batch-size", "2"), ("eval", tmp_path / "r"),
                 ("predict", tmp_path / "r", tmp_path / "x.png"),
                 ("bench", "resnet20", "--mode", "infer", "--batch-size", "2", "--repeats", "1")):
        seen.clear()
        out = cli(*args)
        assert out.exit_code == 0, out.output
        assert seen and seen[0] == ("fp32", "cpu"), (args, seen)
