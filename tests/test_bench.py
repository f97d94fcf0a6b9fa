"""`bench` on CPU, out-of-memory back-off, and the fast-path switches leaving results unchanged."""

from __future__ import annotations

import pytest
import torch

from resnet_cli import config as C
from resnet_cli.bench import BenchConfig, make_step, run_with_backoff
from resnet_cli.models.resnet import ArchSpec, ResNet
from resnet_cli.train.loop import Trainer
from resnet_cli.train.progress import Progress

FIELDS = {"model", "family", "mode", "batch_size", "input_size", "precision", "channels_last", "compile",
          "ms_per_step", "ms_min", "ms_max", "spread_pct", "images_per_s", "tflops", "peak_memory_bytes",
          "repeats", "iters", "pct_of_matmul_peak"}


def test_bench_cpu_figures_and_json_fields(cli):
    out = cli.json("bench", "resnet20", "-b", "8", "--warmup", "1", "--iters", "1", "--repeats", "2", "--detail")
    assert set(out) == {"model", "device", "torch", "cuda", "fwd_gmacs", "matmul_peak", "results", "notes",
                        "flops_rule", "detail"}
    assert [r["mode"] for r in out["results"]] == ["train", "infer"]
    for r in out["results"]:
        assert set(r) == FIELDS
        assert r["images_per_s"] > 0 and r["ms_per_step"] > 0 and r["tflops"] > 0
        assert r["ms_min"] <= r["ms_per_step"] <= r["ms_max"]
        assert r["images_per_s"] == pytest.approx(r["batch_size"] / (r["ms_per_step"] / 1000))
    train, infer = out["results"]
    # training counts 3 x the forward FLOPs
    assert train["tflops"] == pytest.approx(6 * out["fwd_gmacs"] * 1e9 * train["images_per_s"] / 1e12)
    assert out["matmul_peak"]["tflops"] > 0
    assert set(out["detail"]["stages_ms"]) == {"stem", "conv2_x", "conv3_x", "conv4_x", "head"}
    assert set(out["detail"]["phases_ms"]) == {"forward", "backward", "optimizer"}


def test_bench_table_and_bad_precision(cli):
    result = cli("bench", "--depth", "20", "--mode", "infer", "-b", "4", "--warmup", "0", "--iters", "1",
                 "--repeats", "1")
    assert result.exit_code == 0 and "Peak reference" in result.stdout and "img/s" in result.stdout
    if not torch.cuda.is_available():
        bad = cli("bench", "resnet20", "--precision", "fp16")
        assert bad.exit_code == 2 and "needs a CUDA device" in bad.stderr


def test_out_of_memory_halves_the_batch_and_says_so():
    tried, notes = [], []

    def run(bs):
        tried.append(bs)
        if bs > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"batch": bs}

    result, used = run_with_backoff(run, 256, lambda old, new: notes.append((old, new)))
    assert result == {"batch": 64} and used == 64 and tried == [256, 128, 64]
    assert notes == [(256, 128), (128, 64)]
    with pytest.raises(RuntimeError, match="not memory"):
        run_with_backoff(lambda bs: (_ for _ in ()).throw(RuntimeError("not memory")), 8, lambda *a: None)


def _tiny_trainer(tmp_path, progress: Progress | None = None, **sets) -> Trainer:
    flags = {"data.synthetic_train": 64, "data.synthetic_test": 16, "train.batch_size": 16, "train.epochs": 1,
             "run.run_dir": str(tmp_path), **sets}
    return Trainer(C.resolve("smoke", flags=flags), progress or Progress(enabled=False))


def _one_epoch(tmp_path, **sets) -> dict[str, torch.Tensor]:
    trainer = _tiny_trainer(tmp_path, **sets)
    trainer.train_epoch()
    return {k: v.float() for k, v in trainer.model.state_dict().items()}


def _rel_diff(a, b) -> float:
    """Relative L2 distance between two whole parameter sets (BatchNorm statistics included)."""
    va = torch.cat([a[k].flatten() for k in a])
    vb = torch.cat([b[k].flatten() for k in a])
    return ((va - vb).norm() / vb.norm()).item()


def test_channels_last_and_precision_switches_keep_results(tmp_path):
    base = _one_epoch(tmp_path, **{"train.channels_last": "off"})
    nhwc = _one_epoch(tmp_path, **{"train.channels_last": "on"})
    assert _rel_diff(nhwc, base) < 1e-3  # the same arithmetic, float sums reordered
    bf16 = _one_epoch(tmp_path, **{"train.precision": "bf16"})
    assert 1e-6 < _rel_diff(bf16, base) < 5e-2  # bf16 keeps 8 mantissa bits; it really ran in bf16


def test_compile_matches_eager_on_a_tiny_net():
    spec = ArchSpec("basic", (1,), (8,), "cifar", "A")
    torch.manual_seed(0)
    eager = ResNet(spec, num_classes=4)
    compiled = ResNet(spec, num_classes=4)
    compiled.load_state_dict(eager.state_dict())
    cfg = dict(mode="train", batch_size=8, input_size=8, precision="fp32", channels_last=False)
    torch.manual_seed(1)
    step_e = make_step(eager, BenchConfig(compile=False, **cfg), torch.device("cpu"))
    torch.manual_seed(1)
    step_c = make_step(compiled, BenchConfig(compile=True, **cfg), torch.device("cpu"))
    for _ in range(2):
        step_e()
        step_c()
    for (k, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), k


def test_training_loop_compile_switch_keeps_results(tmp_path, monkeypatch):
    """The trainer's compiled path gives eager's weights. Inductor's C++ build would take ~40 s here, so
    torch.compile runs with the aot_eager backend: the same graph capture and autograd, eager kernels."""
    calls = []
    real_compile = torch.compile

    def compile_aot_eager(fn, **kwargs):
        calls.append(kwargs)
        return real_compile(fn, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    base = _one_epoch(tmp_path, **{"train.compile": "off"})
    assert calls == []
    compiled = _one_epoch(tmp_path, **{"train.compile": "on", "train.compile_mode": "max-autotune"})
    assert calls == [{"mode": "max-autotune"}]
    assert _rel_diff(compiled, base) < 1e-4


def test_cpu_auto_switches_follow_the_measurements(monkeypatch):
    import resnet_cli.train.loop as loop
    from resnet_cli.errors import BadInput

    cpu = torch.device("cpu")
    speed = loop.Speed.resolve(C.resolve("smoke"), cpu, planned_steps=loop.CPU_COMPILE_MIN_STEPS - 1)
    assert (speed.precision, speed.compile) == ("fp32", False)
    assert speed.channels_last == torch.backends.mkldnn.is_available()
    monkeypatch.setattr(loop, "cpp_compiler", lambda: "g++")
    assert loop.Speed.resolve(C.resolve("smoke"), cpu, planned_steps=loop.CPU_COMPILE_MIN_STEPS).compile
    monkeypatch.setattr(loop, "cpp_compiler", lambda: None)
    assert not loop.Speed.resolve(C.resolve("smoke"), cpu, planned_steps=10 ** 6).compile
    with pytest.raises(BadInput, match="needs a C\\+\\+ compiler"):
        loop.Speed.resolve(C.resolve("smoke", sets=["train.compile=on"]), cpu, planned_steps=10)
    off = loop.Speed.resolve(C.resolve("smoke", sets=["train.channels_last=off"]), cpu, planned_steps=10)
    assert off.channels_last is False


def test_auto_compile_falls_back_to_eager_when_compiling_fails(tmp_path, monkeypatch, capsys):
    """`train.compile: auto` must not kill a run when Inductor cannot build (no headers, broken toolchain)."""
    import resnet_cli.train.loop as loop

    torch._dynamo.reset()
    monkeypatch.setattr(loop, "CPU_COMPILE_MIN_STEPS", 0)
    monkeypatch.setattr(loop, "cpp_compiler", lambda: "g++")
    real_compile = torch.compile

    def broken_backend(gm, example_inputs):
        raise RuntimeError("simulated: C++ compile failed")

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: real_compile(fn, backend=broken_backend))
    eager = _one_epoch(tmp_path, **{"train.compile": "off"})
    trainer = _tiny_trainer(tmp_path, Progress(enabled=True, force_plain=True))
    assert trainer.speed.compile
    trainer.train_epoch()
    assert not trainer.speed.compile
    assert "torch.compile failed (RuntimeError: simulated: C++ compile failed)" in capsys.readouterr().out
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v.float(), eager[k]), k  # the failed attempt changed nothing
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed):  # asked for explicitly: an error
        _one_epoch(tmp_path, **{"train.compile": "on"})
    torch._dynamo.reset()
