#!/usr/bin/env bash
# The GPU fast path measured side by side in one run (about 5 minutes on one H100); the end of the output is
# a compact table. Wheels the image lacks (fvcore...) come from $WHEELS (default .whl/), as in gpu_check.sh.
#
#   bash benchmarks/gpu_speed.sh [FASHION_MNIST_DIR] [LOG_DIR]
#
# 1. fashion-mnist preset to 94.0% test top-1 in a fresh process (train.stop_at_target), the defaults
#    (CUDA graphs on; compile off, since the run's 7,020 steps are under config.COMPILE_MIN_STEPS' 20,000 for
#    CUDA): wall time from the process start; one seed. Then the candidate recipe of BENCHMARKS.md (batch 256,
#    lr 0.2, 20 epochs), which decides whether the preset changes; then the preset with train.compile=on
#    (about 20 s of compiling, then faster kernels), which checks the compile threshold on this machine.
# 2. resnet20, batch 512, 32x32, training, five ways in one process each: eager, eager replayed from a CUDA
#    graph, compiled (default mode), compiled and replayed from a CUDA graph, torch.compile reduce-overhead.
# 3. resnet50-v1.5, batch 256, bf16, training: compiled against compiled and graphed.
# 4. resnet20, batch 128: the bare step (`bench`) against the training loop (`vs_reference.py`, which also
#    runs the usual DataLoader loop and the best hand-written loop in the same process).
# 5. `resnet data bench` on 2,000 generated ImageNet-sized JPEGs with the torchvision preset, 8 workers: the
#    device's share of the image-folder crops on this GPU (issue 24), against RN50's 5,500 img/s.
set -u
cd "$(dirname "$0")/.."
source benchmarks/gpu_common.sh
data=$(find_fashion "${1:-}")
logs=${2:-${OUT:-gpu_speed_logs}}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}  # the interpreter to use: $PYTHON, else python3 on PATH
install_wheels "${WHEELS:-.whl}" "$logs/wheels.txt"
$py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "gpu_speed: FAIL (no CUDA device visible)"; exit 1; }
start=$SECONDS

run() {  # run NAME LIMIT_S COMMAND...
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$logs/$name.txt" 2>&1 || echo "   $name: exit $? (see $logs/$name.txt)"
    echo "$name $((SECONDS - t0)) s"
}
to_94() {  # to_94 NAME [ARGS...]: the fashion-mnist preset, ARGS added, to 94.0% test top-1 in a fresh process
    local name=$1; shift
    run "$name" 120 $py -m resnet_cli train --preset fashion-mnist --data-dir "$data" --device cuda \
        --run-dir /tmp/gpu_speed_runs --name "$name" --set train.target_top1=0.94 --set train.stop_at_target=true \
        "$@" --json
}
if [ -n "$data" ]; then
    to_94 fashion_to_94
    # the candidate recipe (BENCHMARKS.md: batch 256, lr 0.2, 20 epochs, 4,680 steps; 94.38% and 94.10% on CPU)
    to_94 fashion_to_94_b256 --epochs 20 --batch-size 256 --set train.lr=0.2
    # the preset compiled (the graph replays compiled kernels): whether compiling would pay in this short run
    to_94 fashion_to_94_compiled --set train.compile=on
fi
b="$py -m resnet_cli bench --device cuda --mode train --warmup 5 --iters 20 --repeats 3 --json"
run r20_eager 60 $b resnet20 -b 512 --no-compile --no-cuda-graphs
run r20_eager_graph 60 $b resnet20 -b 512 --no-compile --cuda-graphs
run r20_compile 90 $b resnet20 -b 512 --compile --no-cuda-graphs
run r20_compile_graph 90 $b resnet20 -b 512 --compile --cuda-graphs
run r20_reduce_overhead 90 $b resnet20 -b 512 --compile --compile-mode reduce-overhead
run r20_b128_step 60 $b resnet20 -b 128 --compile  # as vs_reference.py trains: compiled, graphed
b50="$py -m resnet_cli bench resnet50-v1.5 --device cuda --mode train -b 256 --precision bf16 --warmup 5 --iters 5 --repeats 3 --json"
run r50_compile 120 $b50 --compile --no-cuda-graphs
run r50_compile_graph 120 $b50 --compile --cuda-graphs
run jpeg_folder 120 $py benchmarks/jpeg_pipeline.py --images 2000 --dir /tmp/gpu_jpegs --make-folder /tmp/gpu_jpeg_folder
run data_bench 120 $py -m resnet_cli data bench /tmp/gpu_jpeg_folder --preset torchvision --workers 8 -b 256 \
    --batches 5 --device cuda --target-img-s 5500 --json
run r20_b128_loop 120 $py benchmarks/vs_reference.py --device cuda --batch-size 128 --images 12800 --workers 8 \
    --repeats 3

echo
$py - "$logs" <<'PY' | tee "$logs/summary.txt"
import csv
import pathlib
import re
import sys
logs = pathlib.Path(sys.argv[1])

sys.path.insert(0, "benchmarks")
from gpu_logs import doc as read_doc  # noqa: E402


def doc(name):
    return read_doc(logs, name)

def ips(name):
    try:
        return doc(name)["results"][0]["images_per_s"]
    except (LookupError, TypeError):
        return None

def fmt(v):
    return "-" if v is None else f"{v:,.0f}"

print(f"{'workload':<46} {'img/s':>9}  note")
for name, label in (("fashion_to_94", "fashion-mnist to 94.0% (s, fresh process)"),
                    ("fashion_to_94_b256", "  batch 256, lr 0.2, 20 epochs (candidate)"),
                    ("fashion_to_94_compiled", "  the preset, compile on (graph of compiled)")):
    f = doc(name)
    if f:
        t = f.get("target") or {}
        rows = list(csv.DictReader(open(pathlib.Path(f["run_dir"]) / "metrics.csv")))
        train_s = sum(float(r["seconds"]) for r in rows)
        eval_s = sum(float(r["eval_seconds"] or 0) for r in rows)
        print(f"{label:<46} {t.get('seconds', '-')!s:>9}  "
              f"epoch {t.get('epoch', '-')}, final {f['final']['test_top1']:.2%}, wall {f['wall_seconds']:.1f} s "
              f"(training {train_s:.1f} s, evaluation {eval_s:.1f} s)")
base = ips("r20_eager")
for name in ("r20_eager", "r20_eager_graph", "r20_compile", "r20_compile_graph", "r20_reduce_overhead"):
    v = ips(name)
    w = doc(name).get("results", [{}])[0].get("warmup_s") if doc(name) else None
    ratio = f"{v / base:.2f}x eager" if v and base else ""
    print(f"{'resnet20 b512 train, ' + name[4:]:<46} {fmt(v):>9}  {ratio}, warm-up {w or 0:.1f} s")
c, g = ips("r50_compile"), ips("r50_compile_graph")
print(f"{'resnet50-v1.5 b256 bf16 train, compile':<46} {fmt(c):>9}")
print(f"{'resnet50-v1.5 b256 bf16 train, compile+graph':<46} {fmt(g):>9}  "
      + (f"{g / c:.2f}x compile" if c and g else ""))
step = ips("r20_b128_step")
text = (logs / "r20_b128_loop.txt").read_text(errors="replace") if (logs / "r20_b128_loop.txt").exists() else ""
m = {}
for line in text.splitlines():
    for key, prefix in (("ours", "resnet-cli ("), ("tuned", "tuned by hand ("), ("reference", "reference (")):
        found = re.search(r"([\d,]+) img/s", line)
        if line.startswith(prefix) and found:
            m[key] = float(found.group(1).replace(",", ""))
print(f"{'resnet20 b128 bare step (bench)':<46} {fmt(step):>9}")
for k in ("ours", "tuned", "reference"):
    if k in m:
        note = f"loop / bare step {m[k] / step:.2f}" if k == "ours" and step else ""
        print(f"{'resnet20 b128 loop: ' + k:<46} {fmt(m[k]):>9}  {note}")
PY
echo "gpu_speed: done in $((SECONDS - start)) s"
