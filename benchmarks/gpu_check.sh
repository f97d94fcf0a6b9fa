#!/usr/bin/env bash
# Check a GPU machine before a change to training, data, bench or speed settings lands (CI has no GPU).
# About 5 minutes on one H100, so that a 15-minute GPU lease has room to fix something and run it again.
#
#   bash benchmarks/gpu_check.sh [FASHION_MNIST_DIR] [LOG_DIR]
#
# Runs only what differs on CUDA (CI runs the CPU suite): the tests marked `cuda` or `default_device`, the
# fashion-mnist preset to 93% test top-1 (train.stop_at_target: its time and epochs), three `resnet bench`
# figures with few repeats (resnet50 eagerly), and `flops --device cuda`. Every step's whole output goes to LOG_DIR (default: $OUT
# when set, else gpu_check_logs/); the end of the output is a summary table and `gpu_check: PASS (...)` or
# `gpu_check: FAIL (...)`, and the exit code is 0 or 1. Without a CUDA device it fails at once.
#
# Packages the GPU image lacks (fvcore, webdataset) are installed from wheels in $WHEELS (default .gpu/whl/) into a
# private folder; `bash benchmarks/gpu_prepare.sh` makes them, and the Fashion-MNIST copy, in .gpu/ (carry it).
set -u
cd "$(dirname "$0")/.."
source benchmarks/gpu_common.sh
data=$(find_fashion "${1:-}")
logs=${2:-${OUT:-gpu_check_logs}}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}  # the interpreter to use: $PYTHON, else python3 on PATH
start=$SECONDS

machine_line "$logs" "NO CUDA DEVICE"
prepare_gpu gpu_check "$logs"

rows=()  # name|status|seconds
passed=() failed=()
step() {  # step NAME LIMIT_S COMMAND...: run it under a time limit, keep its output, record the outcome
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS status
    echo "== $name: $*"
    if timeout "$limit" "$@" >"$logs/$name.txt" 2>&1; then passed+=("$name"); status=ok
    else failed+=("$name"); status=FAILED; fi
    rows+=("$name|$status|$((SECONDS - t0))")
    echo "   $status in $((SECONDS - t0)) s (log: $logs/$name.txt)"
    tail -n 2 "$logs/$name.txt" | cut -c1-160 | sed 's/^/   | /'
}

# four pytest processes side by side: the GPU tests wait on compilation and process start-up, not on the GPU.
# With pytest-xdist (from $WHEELS) the next test goes to whichever worker is free, a shared fixture's tests kept on
# one worker (conftest marks them xdist_group); without it, four fixed shards (--shard I/N, dealt round-robin).
if $py -c "import xdist" 2>/dev/null; then
    step pytest_cuda 200 $py -m pytest -n 4 --dist loadgroup -q -ra -p no:cacheprovider --durations=10 \
        -m "cuda or default_device" tests
else
    step pytest_cuda 200 $py benchmarks/pytest_shards.py 4 "$logs/pytest_cuda" -q -ra -p no:cacheprovider \
        --durations=5 -m "cuda or default_device" tests
fi
if [ -n "$data" ]; then
    step fashion_to_93 150 $py -m resnet_cli train --preset fashion-mnist --data-dir "$data" --device cuda \
        --run-dir /tmp/gpu_check_runs --name fashion --set train.target_top1=0.93 --set train.stop_at_target=true \
        --json
else
    echo "== fashion_to_93: skipped (no Fashion-MNIST found; pass its folder as the first argument)"
    failed+=("fashion_to_93(no data)")
fi
# resnet20 compiled, as a long run trains it (a bench is too short for compile auto)
step bench_r20 60 $py -m resnet_cli bench resnet20 --device cuda -b 512 --compile --repeats 3 --json
# resnet50 eagerly (its compilation alone takes about a minute; gpu_speed.sh measures it compiled)
step bench_r50v15_train 60 $py -m resnet_cli bench resnet50-v1.5 --mode train --device cuda -b 256 \
    --precision bf16 --no-compile --warmup 5 --iters 5 --repeats 3 --json
step bench_r50_infer 45 $py -m resnet_cli bench resnet50 --mode infer --device cuda -b 256 --precision bf16 \
    --no-compile --warmup 3 --iters 5 --repeats 3 --json
step flops_cuda 60 $py -m resnet_cli flops --device cuda -b 64

echo
$py - "$logs" "$((SECONDS - start))" "${rows[@]}" <<'PY' | tee "$logs/summary.txt"
import pathlib
import sys
logs, wall, rows = pathlib.Path(sys.argv[1]), sys.argv[2], [r.split("|") for r in sys.argv[3:]]

sys.path.insert(0, "benchmarks")
from gpu_logs import doc as read_doc  # noqa: E402


def doc(name):
    return read_doc(logs, name)

def figure(name):
    try:
        if name == "pytest_cuda":
            return (logs / "pytest_cuda.txt").read_text().strip().splitlines()[-1]
        out = doc(name)
        if name == "fashion_to_93":
            t = out.get("target") or {}
            got = f"{t['seconds']:.1f} s, epoch {t['epoch']}" if t else "not reached"
            return f"93%: {got}; final {out['final']['test_top1']:.2%}"
        if name.startswith("bench"):
            return "; ".join(f"{r['mode']} {r['images_per_s']:,.0f} img/s" for r in out["results"])
        return ""
    except (LookupError, TypeError, ValueError, OSError):
        return "(no figure: see the log)"

print(f"{'step':<20} {'status':<7} {'s':>4}  figure")
for name, status, secs in rows:
    print(f"{name:<20} {status:<7} {secs:>4}  {figure(name)}"[:118])
print(f"wall {wall} s; logs in {logs}")
PY
summary="${#passed[@]} passed; wall $((SECONDS - start)) s"
if [ ${#failed[@]} -eq 0 ]; then
    echo "gpu_check: PASS ($summary)"
    exit 0
fi
echo "gpu_check: FAIL (${#failed[@]} failed: ${failed[*]}; $summary)"
exit 1
