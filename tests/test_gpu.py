"""What only runs on a GPU: the CUDA defaults of `train` (bf16, channels_last, compiled as a long run is, CUDA
graphs) through evaluations, a SIGTERM checkpoint and a resume; the recipe keys, --freeze and --init under them;
eval, export and predict of a CUDA-trained run; `bench --detail` and `--profile`, `flops --device`; one-process NCCL runs under
torchrun (eager and compiled); accumulation under CUDA graphs; evaluation without host syncs. Skipped without CUDA;
`benchmarks/gpu_check.sh` runs them on a GPU machine."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import torch
from conftest import last_json

pytestmark = pytest.mark.cuda  # skipped without a CUDA device (conftest)


@pytest.fixture
def gpu_smoke(smoke_args) -> list[str]:
    """A smoke run on CUDA that takes the path of a long run: compiled (train.compile_min_steps=1; `auto` leaves
    runs under 20,000 steps eager on CUDA) and replayed from a CUDA graph."""
    return smoke_args("cuda", 512, 256, "train.log_interval=4", "train.compile_min_steps=1")


def test_cuda_defaults_train_evaluate_and_resume(cli, tmp_path, gpu_smoke, ckpts):
    part = cli("train", *gpu_smoke, "--epochs", "3", "--run-dir", tmp_path, "--name", "g",
               "--set", "run.stop_after_epochs=2")
    assert part.exit_code == 0, part.output
    assert "cuda: bf16, channels_last on, compile on" in part.stdout  # the CUDA defaults, resolved
    assert "torch.compile failed" not in part.stdout
    assert [r["epoch"] for r in ckpts.rows(tmp_path / "g")] == ["1", "2"]
    resumed = cli("train", "--resume", tmp_path / "g", "--set", "run.stop_after_epochs=0", "--json")
    assert resumed.exit_code == 0, resumed.output
    out = last_json(resumed.stdout)
    assert out["device"].startswith("cuda") and out["precision"] == "bf16" and out["compile"] is True
    assert out["epochs"] == 3 and [r["epoch"] for r in ckpts.rows(tmp_path / "g")] == ["1", "2", "3"]
    assert out["final"]["test_top1"] > 0.3  # learnable synthetic classes: far above chance (0.1)
    ev = cli("eval", tmp_path / "g", "--device", "cuda", "--json")
    assert ev.exit_code == 0, ev.output
    got = last_json(ev.stdout)
    assert got["device"].startswith("cuda") and got["count"] == 256
    assert got["top1"] == pytest.approx(out["best"]["test_top1"], abs=0.02)  # bf16: eager vs compiled kernels


def test_a_cpu_adamw_run_resumes_on_cuda_with_its_steps_on_the_gpu(cli, tmp_path, smoke_args, gpu_smoke):
    """#34 item 2: one epoch with AdamW on the CPU (foreach: `step` on the host), resumed on CUDA for one more
    (fused, graphed): it finishes without falling back from the graph, and Adam counted every step (a fused kernel
    given host `step` tensors fails, and a capture with them too)."""
    import torch

    part = cli("train", *smoke_args("cpu", 512, 256), "--opt", "adamw", "--epochs", "2", "--run-dir", tmp_path,
               "--name", "a", "--set", "run.stop_after_epochs=1")
    assert part.exit_code == 0, part.output
    resumed = cli("train", "--resume", tmp_path / "a", "--device", "cuda", "--set", "run.stop_after_epochs=0")
    assert resumed.exit_code == 0, resumed.output
    assert "capture failed" not in resumed.stdout
    ckpt = torch.load(tmp_path / "a" / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["optimizer"]["state"]
    assert all(s["step"].item() == ckpt["step"] for s in ckpt["optimizer"]["state"].values())


def test_cuda_recipe_keys_train_under_the_defaults(cli, tmp_path, gpu_smoke):
    """The recipe pieces on the GPU path (bf16, channels_last, compile): batched augmentations with device
    generators, soft targets, EMA updates and evaluation, accumulation, AdamW (fused), the validation split."""
    keys = ["train.ema=0.99", "data.val_split=128", "data.mixup=0.2", "data.cutmix=1.0", "data.random_erasing=0.25",
            "data.randaugment=2,9", "train.accum_steps=2", "train.optimizer=adamw", "train.freeze=[conv1]"]
    run = cli("train", *gpu_smoke, "--epochs", "3", "--run-dir", tmp_path, "--name", "r", "--json",
              *(a for k in keys for a in ("--set", k)))
    assert run.exit_code == 0, run.output
    out = last_json(run.stdout)
    assert out["selected_by"] == "ema_val_top1" and out["compile"] is True
    assert out["best"]["ema_val_top1"] > 0.3  # far above chance (0.1)
    ev = last_json(cli("eval", tmp_path / "r", "--device", "cuda", "--split", "val", "--json").stdout)
    assert ev["weights"] == "ema" and ev["top1"] == pytest.approx(out["best"]["ema_val_top1"], abs=0.02)


def test_cuda_resume_is_exact_in_fp32_eager(cli, tmp_path, gpu_smoke):
    """With bf16 and compile off and deterministic kernels, a resumed CUDA run matches an uninterrupted one. (Without
    train.deterministic two uninterrupted CUDA runs already differ: cuDNN's autotuner and atomics.)"""
    fp32 = ["--set", "train.precision=fp32", "--set", "train.compile=off", "--set", "train.deterministic=true",
            "--set", "train.cuda_graphs=off"]
    full = cli("train", *gpu_smoke, *fp32, "--epochs", "2", "--run-dir", tmp_path, "--name", "full")
    part = cli("train", *gpu_smoke, *fp32, "--epochs", "2", "--run-dir", tmp_path, "--name", "part",
               "--set", "run.stop_after_epochs=1")
    assert full.exit_code == 0 and part.exit_code == 0, full.output + part.output
    resumed = cli("train", "--resume", tmp_path / "part", "--set", "run.stop_after_epochs=0")
    assert resumed.exit_code == 0, resumed.output
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-4), k


def test_bench_on_cuda_reports_memory_and_compile_time(cli):
    out = cli.json("bench", "resnet20", "--device", "cuda", "-b", "256", "--warmup", "3", "--iters", "5",
                   "--repeats", "3", "--detail", "--compile")  # a bench is too short for auto to compile
    assert "cuda" not in out["device"].lower() or out["cuda"]
    for r in out["results"]:
        assert r["precision"] == "bf16" and r["channels_last"] is True and r["compile"] is True
        assert r["peak_memory_bytes"] > 0 and r["images_per_s"] > 0 and r["warmup_s"] > 0
    assert out["matmul_peak"]["dtype"] == "bfloat16" and out["matmul_peak"]["tflops"] > 10
    assert set(out["detail"]["phases_ms"]) == {"forward", "backward", "optimizer"}


@pytest.mark.parametrize("graphs", ["--no-cuda-graphs", "--cuda-graphs"])
def test_bench_profile_on_cuda_splits_the_step_into_busy_and_idle(cli, graphs):
    """`bench --profile`: the kernels of the step as timed (eager, or replayed from the CUDA graph), the GPU's
    busy time within the timed step, the rest idle; the profile leaves the graph replaying."""
    out = cli.json("bench", "resnet20", "--device", "cuda", "-b", "256", "--warmup", "3", "--iters", "5",
                   "--repeats", "2", "--mode", "train", "--profile", graphs)
    r = out["results"][0]
    p = r["profile"]
    assert r["cuda_graphs"] is (graphs == "--cuda-graphs") and p["kind"] == "cuda kernels" and p["steps"] == 5
    if graphs == "--no-cuda-graphs":
        assert p["kernels_seen"], p  # a graph's kernels may be hidden from the profiler; eager ones never
    if p["kernels_seen"]:
        assert 0 < p["busy_ms_per_step"] <= 1.2 * p["ms_per_step"], p
        assert p["idle_ms_per_step"] == pytest.approx(max(0.0, p["ms_per_step"] - p["busy_ms_per_step"]))
        assert p["top"][0]["ms_per_step"] > 0 and 0 < sum(k["share"] for k in p["top"]) <= 1 + 1e-9


def test_flops_device_cuda_times_the_forward(cli):
    out = cli.json("flops", "resnet50", "--device", "cuda", "-b", "32")
    t = out["models"][0]["timing"]
    assert t["images_per_s"] > 0 and t["batch_size"] == 32 and out["failed"] == []


@pytest.mark.parametrize("compiled", ["off", "on"])
def test_one_process_nccl_run_under_torchrun(tmp_path, gpu_smoke, ckpts, compiled):
    """NCCL with DDP, eagerly and compiled (DDP's module under torch.compile, its optimizer on the bucket hooks)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
           "-m", "resnet_cli", "train", *gpu_smoke, "--epochs", "1", "--run-dir", str(tmp_path), "--name", "nccl",
           "--set", f"train.compile={compiled}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "torchrun: 1 process(es), nccl" in result.stdout  # it really joined an NCCL group
    assert f"compile {compiled}" in result.stdout and "torch.compile failed" not in result.stdout
    rows = ckpts.rows(tmp_path / "nccl")
    assert [r["epoch"] for r in rows] == ["1"] and 0 <= float(rows[-1]["test_top1"]) <= 1


def test_sigterm_mid_epoch_on_cuda_saves_and_resumes(tmp_path, proc, gpu_smoke, ckpts):
    """The CUDA defaults stopped by SIGTERM at a step: exit 143 and last.pt at that step, then the resume finishes
    the run with the same number of steps as an uninterrupted one."""
    args = ["train", *gpu_smoke, "--epochs", "2", "--set", "train.log_interval=1", "--run-dir", tmp_path,
            "--name", "t"]
    started = proc.start(*args)
    for line in started.stdout:
        if "epoch 1/2 step 3/" in line:
            started.send_signal(signal.SIGTERM)
            break
    _, err = started.communicate(timeout=300)
    assert started.returncode == 143, err
    saved = ckpts.load(tmp_path / "t" / "last.pt")
    assert saved["epoch"] == 0 and saved["partial"]["batch"] >= 3 and "resume with" in err
    resumed = proc.run("train", "--resume", tmp_path / "t", "--json")
    assert resumed.returncode == 0, resumed.stderr
    out = last_json(resumed.stdout)
    assert out["epochs"] == 2 and out["steps"] == 32 and out["final"]["test_top1"] > 0.2


def test_cuda_init_from_a_run_and_freeze(cli, tmp_path, gpu_smoke, ckpts, cuda_run):
    """--init from a CUDA-trained run's weights, with stages frozen, under the CUDA defaults: the frozen stem
    stays exactly the initial weights."""
    tuned = cli("train", *gpu_smoke, "--epochs", "1", "--run-dir", tmp_path, "--name", "b", "--init",
                cuda_run, "--freeze", "conv1,conv2_x", "--json")
    assert tuned.exit_code == 0, tuned.output
    a, b = ckpts.weights(cuda_run / "last.pt"), ckpts.weights(tmp_path / "b" / "last.pt")
    assert torch.equal(a["conv1.weight"], b["conv1.weight"]) and torch.equal(a["bn1.running_mean"],
                                                                              b["bn1.running_mean"])
    assert not torch.equal(a["fc.weight"], b["fc.weight"])


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory):
    """A run trained on CUDA with the defaults of a long run (bf16, channels_last, compiled), 2 epochs."""
    from conftest import smoke
    from typer.testing import CliRunner

    from resnet_cli.cli import app

    root = tmp_path_factory.mktemp("cuda_run")
    args = [*smoke("cuda", 512, 256, "train.compile_min_steps=1"), "--epochs", "2", "--run-dir", str(root),
            "--name", "r"]
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    return root / "r"


@pytest.mark.parametrize("fmt, suffix", [("export", ".pt2"), ("onnx", ".onnx")])
def test_export_of_a_cuda_trained_run_matches_pytorch(cli, cuda_run, tmp_path, fmt, suffix):
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
        pytest.importorskip("onnxruntime")
    out = cli.json("export", cuda_run, "-o", tmp_path / f"m{suffix}", "--format", fmt)
    assert out["ok"] and out["max_abs_diff"] < 1e-3 and out["input_size"] == [32, 32], out


def test_predict_and_eval_of_a_cuda_trained_run(cli, cuda_run, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(5):
        pixels = torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(images / f"{i}.png")
    pred = cli.json("predict", cuda_run, images, "--device", "cuda", "--topk", "3")
    assert len(pred["predictions"]) == 5
    for row in pred["predictions"]:
        probs = [t["prob"] for t in row["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    ev = cli.json("eval", cuda_run, "--device", "cuda")
    cpu = cli.json("eval", cuda_run, "--device", "cpu")
    assert ev["count"] == cpu["count"] == 256 and ev["top1"] == pytest.approx(cpu["top1"], abs=0.02)


def test_accumulation_under_cuda_graphs_matches_eager():
    """train.accum_steps > 1 with compile_mode reduce-overhead: each micro-batch replays the same CUDA graphs, so
    their outputs and gradients must not overwrite the previous micro-batch's. The weights after three steps
    match the eager step's."""
    from resnet_cli.config import TrainConfig
    from resnet_cli.models import build_model
    from resnet_cli.speed import Speed
    from resnet_cli.train.step import TrainStep, make_optimizer

    cuda = torch.device("cuda")
    g = torch.Generator(device=cuda).manual_seed(0)
    batches = [(torch.randn(64, 3, 32, 32, device=cuda, generator=g),
                torch.randint(0, 10, (64,), device=cuda, generator=g)) for _ in range(3)]
    weights = {}
    for mode in ("eager", "reduce-overhead"):
        torch.manual_seed(0)
        model = build_model("resnet20").to(cuda)
        speed = Speed("fp32", False, mode != "eager", "default" if mode == "eager" else mode)
        step = TrainStep(model, make_optimizer(model, TrainConfig(), cuda), speed, cuda, accum_steps=4)
        losses = [step(x, y, 0.1).loss.item() for x, y in batches]
        weights[mode] = ({k: v.detach().clone() for k, v in model.state_dict().items()}, losses)
    (a, la), (b, lb) = weights["eager"], weights["reduce-overhead"]
    assert la == pytest.approx(lb, rel=1e-3)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-3), k


def test_evaluation_never_waits_for_the_gpu_inside_its_loop():
    """Evaluation sums on the device: no host sync per batch (torch.bincount synced twice per batch)."""
    from resnet_cli.models import build_model
    from resnet_cli.train.evaluate import evaluate

    cuda = torch.device("cuda")

    class Batches:
        def __init__(self):
            g = torch.Generator(device=cuda).manual_seed(0)
            self.data = [(torch.randn(128, 3, 32, 32, device=cuda, generator=g),
                          torch.randint(0, 10, (128,), device=cuda, generator=g)) for _ in range(4)]

        def batches(self):
            torch.cuda.set_sync_debug_mode("error")  # any sync inside the loop raises
            try:
                yield from self.data
            finally:
                torch.cuda.set_sync_debug_mode("default")

    model = build_model("resnet20").to(cuda)
    loader = Batches()
    evaluate(model, type("Plain", (), {"batches": lambda self: iter(loader.data)})(), 10, cuda, "bf16")  # warm-up
    res = evaluate(model, loader, 10, cuda, "bf16")
    assert res.count == 512 and sum(res.class_counts) == 512 and 0 <= res.top1 <= 1




def test_the_training_augmentations_on_cuda_never_wait_for_the_gpu():
    """#34 item 7: RandAugment plans its ops on the host (one small upload), so the whole batch pipeline of the
    imagenet recipes (RandAugment, timm's or TrivialAugment, random erasing, mixup/cutmix) runs without a host sync; and
    its result on CUDA is the CPU's for the same ops and magnitudes."""
    from resnet_cli.data import augment as A

    cuda = torch.device("cuda")
    x = torch.randint(0, 256, (64, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    xc, y = x.to(cuda), torch.arange(64, device=cuda) % 10
    mean, std = torch.full((3,), 0.5, device=cuda), torch.full((3,), 0.25, device=cuda)
    for policy in (("rand", 2, 9), ("trivial", 1, 0), ("timm", 2, 9.0, 0.5, 10.0, True, 0.5)):
        aug = A.TrainAugment(policy=policy, erasing=0.25, mixup=0.2, cutmix=1.0, num_classes=10)
        aug(xc, y, mean, std, seed=1)  # warm-up: the magnitude tables, the kernels
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any sync raises
        try:
            out, target = aug(xc, y, mean, std, seed=2)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert out.shape == (64, 3, 64, 64) and target.shape == (64, 10)
    colour = [k for k, name in enumerate(A.OPS) if name not in A.GEOMETRIC]  # nearest sampling may round apart
    op = torch.tensor(colour)[torch.arange(64) % len(colour)]
    mag = {k: v[torch.full((64,), 12)] for k, v in A.magnitudes("rand", 64, 64).items()}
    on_gpu = A.apply_ops(xc.float(), op, {k: v.to(cuda) for k, v in mag.items()})
    on_cpu = A.apply_ops(x.float(), op, mag)
    assert (on_gpu.cpu() - on_cpu).abs().max() <= 1  # a rounding level

# ---------------------------------------------------------------- train.cuda_graphs (train/graphs.py)
def _steps(graphs: bool, batches, compile_: bool = False):
    from resnet_cli.config import TrainConfig
    from resnet_cli.models import build_model
    from resnet_cli.speed import Speed
    from resnet_cli.train.step import TrainStep, make_optimizer

    cuda = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model("resnet20").to(cuda, memory_format=torch.channels_last)
    speed = Speed("bf16", True, compile_, cuda_graphs=graphs)
    fallbacks = []
    step = TrainStep(model, make_optimizer(model, TrainConfig(), cuda), speed, cuda, on_graph_fallback=fallbacks.append)
    losses = [step(x, y, 0.1 * (1 - i / len(batches))).loss.float().item() for i, (x, y) in enumerate(batches)]
    return step, losses, fallbacks


def _batches(n: int, size: int = 128):
    cuda = torch.device("cuda")
    g = torch.Generator(device=cuda).manual_seed(0)
    centers = torch.randn(10, 3, 32, 32, device=cuda, generator=g)
    out = []
    for _ in range(n):
        y = torch.randint(0, 10, (size,), device=cuda, generator=g)
        x = centers[y] + torch.randn(size, 3, 32, 32, device=cuda, generator=g)
        out.append((x.contiguous(memory_format=torch.channels_last), y))
    return out


@pytest.mark.parametrize("compile_", [False, True])
def test_graphed_step_follows_the_eager_loss_curve(compile_):
    """50 steps replayed from a CUDA graph (eager kernels, and compiled ones) against the plain eager step, from the
    same weights on the same batches with a changing lr: the same loss curve within bf16 tolerance."""
    batches = _batches(50)
    graphed, lg, fallbacks = _steps(True, batches, compile_)
    _, le, _ = _steps(False, batches)
    assert fallbacks == [] and graphed.graph.graph is not None  # it really replayed
    assert le[-1] < 0.5 * le[0]  # it learnt
    assert max(abs(a - b) for a, b in zip(lg, le)) < 0.05 * le[0], (lg, le)


def test_the_strikes_back_step_is_captured_and_learns_as_the_eager_one():
    """timm's recipe pieces in one CUDA graph: LAMB (its step counts, norms, trust ratios and lr on the device),
    BCE with a target threshold, and stochastic depth (its per-image masks drawn from the graph's own random
    offsets, a new draw every replay). It captures, replays, and learns as the eager step does; the masks differ
    between the two, so the curves agree within noise, not bit for bit. LAMB's step never waits for the GPU."""
    from resnet_cli.config import TrainConfig
    from resnet_cli.models import build_model
    from resnet_cli.speed import Speed
    from resnet_cli.train.graphs import WARMUP
    from resnet_cli.train.losses import BinaryCrossEntropy
    from resnet_cli.train.step import TrainStep, make_optimizer

    cuda, batches = torch.device("cuda"), _batches(60)
    t = TrainConfig(optimizer="lamb", lr=5e-3, weight_decay=0.02, no_wd_bn_bias=True)

    def run(graphs: bool):
        torch.manual_seed(0)
        model = build_model("resnet20", num_classes=10, drop_path=0.1).to(cuda, memory_format=torch.channels_last)
        fallbacks = []
        step = TrainStep(model, make_optimizer(model, t, cuda), Speed("bf16", True, False, cuda_graphs=graphs), cuda,
                         BinaryCrossEntropy(0.0, 0.2), on_graph_fallback=fallbacks.append)
        losses = [step(x, y, 5e-3 * (1 - i / len(batches))).loss.float().item() for i, (x, y) in enumerate(batches)]
        return step, losses, fallbacks

    graphed, lg, fallbacks = run(True)
    eager, le, _ = run(False)
    assert fallbacks == [] and graphed.graph.graph is not None and graphed.graph.replays == len(batches) - WARMUP
    assert le[-1] < 0.5 * le[0] and lg[-1] < 0.5 * lg[0], (lg, le)
    tail_g, tail_e = sum(lg[-10:]) / 10, sum(le[-10:]) / 10
    assert abs(tail_g - tail_e) < 0.25 * tail_e, (lg, le)
    assert all(s["step"].is_cuda for s in eager.optimizer.state.values())
    x, y = batches[0]
    eager.backward(eager.forward_loss(x, y)[0])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync in LAMB's step raises
    try:
        eager.optimizer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_batch_of_another_shape_runs_the_plain_step_beside_the_graph():
    batches = _batches(6)
    step, _, fallbacks = _steps(True, batches)
    captured = step.graph.graph
    x, y = _batches(1, 48)[0]
    out = step(x, y, 0.05)
    assert out.logits.shape == (48, 10) and torch.isfinite(out.loss)
    again = step(*batches[0], 0.05)
    assert again.logits.shape == (128, 10) and step.graph.graph is captured and fallbacks == []


def test_the_step_is_captured_beside_a_thread_that_keeps_pinning_memory():
    """#34 item 1: a DataLoader's pin-memory thread pins the next batches while the main thread captures the step.
    In the default "global" capture mode its cudaHostAlloc invalidates the capture and the thread's own call fails;
    in "thread_local" mode both go on: the step is captured and replays, and the pinning thread saw no error."""
    import threading

    from resnet_cli.train import graphs

    stop, errors, pinned = threading.Event(), [], [0]

    def pin():  # what torch.utils.data's pin-memory thread does with each batch a worker hands it
        try:
            while not stop.is_set():
                torch.empty((1 << 18) + 65536 * (pinned[0] % 7)).pin_memory()  # cudaHostAlloc, event queries
                pinned[0] += 1
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    thread = threading.Thread(target=pin, daemon=True)
    thread.start()
    try:
        step, losses, fallbacks = _steps(True, _batches(graphs.WARMUP + 8))
    finally:
        stop.set()
        thread.join(timeout=30)
    assert fallbacks == [] and errors == [] and pinned[0] > 0
    assert step.graph.graph is not None and step.graph.replays == 8


def test_uploads_ahead_on_a_side_stream_hand_out_every_batch_intact():
    """#34 item 3: batches copied on a side stream one ahead of a busy compute stream arrive whole and in order
    (the compute stream waits for each batch's copy; the allocator keeps them until the step that reads them)."""
    from resnet_cli.data.imagefolder import uploads

    host = [(torch.full((64, 3, 336, 336), i, dtype=torch.uint8).pin_memory(), torch.full((64,), i)) for i in range(6)]
    busy = torch.randn(4096, 4096, device="cuda")
    for ahead in (True, False):
        seen = []
        for x, y in uploads(iter(host), torch.device("cuda"), ahead):
            assert x.is_cuda and y.is_cuda
            for _ in range(4):  # a step's worth of work queued before the batch is read
                busy = (busy @ busy).tanh_()
            seen.append((x.float().mean(), x.float().std(), y.float().mean()))
        assert [tuple(float(v) for v in s) for s in seen] == [(i, 0.0, i) for i in range(6)], ahead


def test_an_image_folder_run_with_workers_replays_its_graph(cli, tmp_path):
    """#34 item 1 end to end: one epoch on a 64-image folder, decoded by two workers into pinned memory, with the
    CUDA defaults (graphs on; compile off, as for any run under 20,000 steps): the capture succeeds beside the
    pin-memory thread, the log says that the step replays, and every step after the warm-up did."""
    from test_crops import write_folder

    write_folder(tmp_path / "f" / "train", classes=("a", "b"), per_class=32, size=(96, 80))
    write_folder(tmp_path / "f" / "val", classes=("a", "b"), per_class=4, size=(96, 80))
    run = cli("train", "--set", "data.dataset=imagefolder", "--data-dir", tmp_path / "f", "--model", "resnet18",
              "--set", "data.image_size=64", "--set", "data.workers=2", "--batch-size", "8", "--epochs", "1",
              "--device", "cuda", "--run-dir", tmp_path / "runs", "--json")
    assert run.exit_code == 0, run.output
    from resnet_cli.train.graphs import CAPTURED, WARMUP

    assert CAPTURED in run.stdout and "capture failed" not in run.stdout
    out = last_json(run.stdout)
    assert out["steps"] == 8 and out["cuda_graph_replays"] == 8 - WARMUP
    assert (out["precision"], out["compile"]) == ("bf16", False)
    # the paper's multi-scale test of it: a list of whole images per batch, pinned by the workers' DataLoader and
    # uploaded one ahead on the side stream, against the same views on the CPU
    scaled = [cli.json("eval", out["run_dir"], "--device", device, "--scales", "64,80") for device in ("cuda", "cpu")]
    assert [(r["count"], r["crops"], r["device"][:4]) for r in scaled] == [(8, 4, "cuda"), (8, 4, "cpu")]
    assert scaled[0]["loss"] == pytest.approx(scaled[1]["loss"], rel=0.05, abs=0.02)  # bf16 beside fp32


def test_gradient_logging_replays_the_graph_and_reads_its_gradients():
    """#34 item 5: a step that logs gradient norms (train.log_grad_norms, the epoch's last step) replays the graph and
    reads its gradient buffers instead of running a plain step beside it (a second set of activations): the norms
    are those of an eager backward on the same weights and batch."""
    import copy

    from resnet_cli.train.graphs import WARMUP
    from resnet_cli.train.loop import stage_grad_norms

    batches = _batches(WARMUP + 3)
    step, _, fallbacks = _steps(True, batches)
    replays = step.graph.replays
    twin = copy.deepcopy(step.model)
    x, y = batches[0]
    norms = {}
    step(x, y, 0.05, after_backward=lambda: norms.update(stage_grad_norms(step.model)))
    assert step.graph.replays == replays + 1 and fallbacks == []
    twin.zero_grad(set_to_none=True)
    with torch.autocast("cuda", torch.bfloat16):
        torch.nn.functional.cross_entropy(twin(x), y).backward()
    expected = stage_grad_norms(twin)
    assert norms.keys() == expected.keys() and len(norms) >= 4
    assert all(norms[k] == pytest.approx(expected[k], rel=0.05) for k in norms), (norms, expected)


def test_a_graphed_run_reserves_about_what_an_eager_one_does():
    """#34 item 5: the capture returns the warm-up's cached activations before it takes its own pool, so a graphed
    run's reserved memory stays near the eager run's peak (a plain step beside the graph would need the pool's
    bytes more, which bench reports as cuda_graph_pool_bytes)."""
    batches = _batches(10, 512)
    peaks = {}
    for graphed in (False, True):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        step, _, fallbacks = _steps(graphed, batches)
        torch.cuda.synchronize()
        peaks[graphed] = torch.cuda.max_memory_reserved()
        assert fallbacks == []
        if graphed:
            pool = step.graph.pool_bytes
        del step
    print(f"reserved peak: eager {peaks[False] / 2**20:.0f} MiB, graphed {peaks[True] / 2**20:.0f} MiB, "
          f"pool {pool / 2**20:.0f} MiB")
    assert pool > 0 and peaks[True] <= 1.25 * peaks[False], peaks


def test_resume_of_a_graphed_run(cli, tmp_path, gpu_smoke, ckpts):
    """The CUDA defaults replay the step from a graph; a run stopped after its first epoch resumes (a new capture)
    and ends where an uninterrupted one does, within bf16 noise."""
    part = cli("train", *gpu_smoke, "--epochs", "3", "--run-dir", tmp_path, "--name", "p",
               "--set", "run.stop_after_epochs=1")
    assert part.exit_code == 0, part.output
    assert "CUDA graphs on" in part.stdout and "capture failed" not in part.stdout
    resumed = cli("train", "--resume", tmp_path / "p", "--set", "run.stop_after_epochs=0", "--json")
    assert resumed.exit_code == 0, resumed.output
    a = last_json(resumed.stdout)
    assert a["epochs"] == 3 and a["steps"] == 48 and "capture failed" not in resumed.stdout
    assert a["final"]["test_top1"] > 0.3 and a["final"]["test_top1"] >= a["best"]["test_top1"] - 0.1


def test_gradflow_on_cuda_matches_cpu(cli):
    """`gradflow --device cuda`: the same weights and batch as on the CPU, so the same norms within fp32 noise."""
    cpu = cli.json("gradflow", "plain20", "resnet20", "--device", "cpu")
    gpu = cli.json("gradflow", "plain20", "resnet20", "--device", "cuda")
    assert gpu["device"] == "cuda"
    for a, b in zip(cpu["models"], gpu["models"]):
        assert a["first_over_last"] == pytest.approx(b["first_over_last"], rel=1e-2)


def test_export_traced_on_cuda_runs_there(cli, cuda_run, tmp_path):
    """`export --device cuda`: the .pt2 is traced and checked on the GPU, and its program runs on CUDA inputs."""
    out = cli.json("export", cuda_run, "-o", tmp_path / "m.pt2", "--device", "cuda", "--batch-size", "4")
    assert out["ok"] and out["device"].startswith("cuda") and out["max_abs_diff"] < 1e-3, out
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    logits = program(torch.randn(4, 3, 32, 32, device="cuda"))
    assert logits.is_cuda and logits.shape == (4, 10)


def test_summary_measures_a_training_steps_peak_on_cuda(cli):
    """`summary --device cuda`: one fp32 SGD step's measured peak sits near the estimate (weights, gradients,
    momentum, activations) and grows with the batch."""
    small = cli.json("summary", "resnet50", "--batch-size", "8", "--device", "cuda")["memory_bytes"]
    big = cli.json("summary", "resnet50", "--batch-size", "32", "--device", "cuda")["memory_bytes"]
    for mem in (small, big):
        assert 0.5 * mem["training_estimate"] < mem["measured_training_peak"] < 2.5 * mem["training_estimate"], mem
    assert big["measured_training_peak"] > small["measured_training_peak"] + 2 * small["forward_activations"]


def test_the_device_resize_of_image_folder_crops_on_cuda_matches_the_cpu():
    """data/crops.py's batch resize (one grid_sample) gives the CPU's pixels on CUDA, within a rounding level."""
    from resnet_cli.data.crops import resize_crops

    g = torch.Generator().manual_seed(0)
    canvases = torch.randint(0, 256, (16, 3, 336, 336), generator=g, dtype=torch.uint8)
    sizes = torch.tensor([[100 + 13 * i, 336 - 11 * i, i % 2] for i in range(16)], dtype=torch.int32)
    cpu = resize_crops(canvases, sizes, 224)
    gpu = resize_crops(canvases.cuda(), sizes.cuda(), 224)
    assert gpu.is_cuda and (gpu.cpu().int() - cpu.int()).abs().max() <= 1


def test_data_bench_on_cuda_times_the_devices_share(cli, tmp_path):
    from test_crops import write_folder

    write_folder(tmp_path / "f" / "train", classes=("a", "b"), per_class=32, size=(160, 120))
    write_folder(tmp_path / "f" / "val", classes=("a", "b"), per_class=2, size=(160, 120))
    out = cli.json("data", "bench", tmp_path / "f", "--image-size", "64", "--batch-size", "16", "--workers", "2",
                   "--batches", "2", "--device", "cuda", "--model", "resnet18", "--set", "train.compile=off")
    assert out["device"] and out["stages_ms_per_image"]["device"] > 0 and out["model"]["img_per_s"] > 0
    assert out["bound"] in ("input", "model")
