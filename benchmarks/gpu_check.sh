#!/usr/bin/env bash
# Check a GPU machine before a change to training, data, bench or speed settings lands (CI has no GPU).
# About 5 minutes on one H100, so that a 15-minute GPU lease has room to fix something and run it again.
#
#   bash benchmarks/gpu_check.sh [FASHION_MNIST_DIR] [LOG_DIR]
#
# Runs only what differs on CUDA (CI runs the CPU suite): the tests marked `cuda` or `default_device`, the
# fashion-mnist preset to 93% test top-1 (train.stop_at_target: its time and epochs), three `resnet bench`
# figures with few repeats (resnet50 eagerly), and `flops --device cuda`. Every step's whole output goes to
# LOG_DIR (default: $OUT when set, else gpu_check_logs/); the end of the output is a summary table and
# `gpu_check: PASS (...)` or `gpu_check: FAIL (...)`, and the exit code is 0 or 1. Without a CUDA device it fails
# at once.
#
# Packages the GPU image lacks (fvcore, webdataset) are installed from wheels in $WHEELS (default .gpu/whl/) into a
# private folder; `bash benchmarks/gpu_prepare.sh` makes them, and the Fashion-MNIST copy, in .gpu/ (carry it).
#
# DRY=1 runs the same commands on this machine's CPU (the CUDA tests skip; the fashion run a few steps to a target
# it reaches, so the summary reads a reached target; bench and flops at tiny sizes, compile a no-op through
# TORCHDYNAMO_DISABLE=1), so that the first call of a GPU lease is not spent on a broken command
# (tests/test_bench.py runs it). Run folders go under $WORK (default /tmp/gpu_check), made afresh.
set -u
cd "$(dirname "$0")/.."
source benchmarks/gpu_common.sh
data=$(find_fashion "${1:-}")
logs=${2:-${OUT:-gpu_check_logs}}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}  # the interpreter to use: $PYTHON, else python3 on PATH
start=$SECONDS
# the GPU's settings; DRY=1 cuts each to what checks the command on a CPU in seconds
device=cuda goal=0.93 short=() b20=(-b 512 --repeats 3) b50=(-b 256) iters=(--iters 5 --repeats 3) bflops=64
if [ "${DRY:-0}" = 1 ]; then
    device=cpu goal=0.001 b20=(-b 16 --warmup 1 --iters 2 --repeats 1) b50=(-b 2 --input-size 64)
    iters=(--iters 2 --repeats 1) bflops=2
    short=(--set train.steps=4 --set data.train_limit=512 --set data.test_limit=256)
    export TORCHDYNAMO_DISABLE=1
fi
begin_script gpu_check "$logs" "the CUDA tests skip; a few steps a run, compile a no-op"
work=${WORK:-/tmp/gpu_check}  # run folders, made afresh: nothing left from an earlier run is read
rm -rf "$work/runs"  # only what this script makes there

rows=()  # name|status|seconds
passed=() failed=()
step() {  # step NAME LIMIT_S COMMAND...: run it under a time limit, keep its output, record the outcome
    local name=$1 limit; limit=$(capped "$2"); shift 2
    local t0=$SECONDS status
    if [ "$limit" = 0 ]; then
        echo "== $name: skipped (BUDGET=$BUDGET s is spent)"; failed+=("$name(budget)"); rows+=("$name|skipped|0")
        return
    fi
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
    step fashion_to_93 150 $py -m resnet_cli train --preset fashion-mnist --data-dir "$data" --device $device \
        --run-dir "$work/runs" --name fashion --set train.target_top1=$goal --set train.stop_at_target=true \
        "${short[@]}" --json
else
    echo "== fashion_to_93: skipped (no Fashion-MNIST found; pass its folder as the first argument)"
    failed+=("fashion_to_93(no data)")
fi
# resnet20 compiled, as a long run trains it (a bench is too short for compile auto)
step bench_r20 60 $py -m resnet_cli bench resnet20 --device $device "${b20[@]}" --compile --json
# resnet50 eagerly (its compilation alone takes about a minute; gpu_speed.sh measures it compiled)
step bench_r50v15_train 60 $py -m resnet_cli bench resnet50-v1.5 --mode train --device $device "${b50[@]}" \
    --precision bf16 --no-compile --warmup 5 "${iters[@]}" --json
step bench_r50_infer 45 $py -m resnet_cli bench resnet50 --mode infer --device $device "${b50[@]}" --precision bf16 \
    --no-compile --warmup 3 "${iters[@]}" --json
step flops_cuda 60 $py -m resnet_cli flops --device $device -b $bflops --json

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
            got = f"{t['top1']:.1%} in {t['seconds']:.1f} s, epoch {t['epoch']}" if t else "target not reached"
            return f"{got}; final {out['final']['test_top1']:.2%}"
        if name.startswith("bench"):
            return "; ".join(f"{r['mode']} {r['images_per_s']:,.0f} img/s" for r in out["results"])
        if name == "flops_cuda":  # every model checked; the forward pass of the largest and smallest timed
            ok = "check ok" if out["check"] and not out["failed"] else f"check FAILED: {out['failed']}"
            timed = [m for m in out["models"] if m.get("timing")]
            return "; ".join([ok] + [f"{m['model']} forward {m['timing']['tflops']:.1f} TFLOP/s"
                                     for m in timed[:1] + timed[-1:]])
        return ""
    except (LookupError, TypeError, ValueError, OSError):
        return "(no figure: see the log)"

print(f"{'step':<20} {'status':<7} {'s':>4}  figure")
for name, status, secs in rows:
    shown = "(the budget was spent)" if status == "skipped" else figure(name)
    print(f"{name:<20} {status:<7} {secs:>4}  {shown}"[:118])
print(f"wall {wall} s; logs in {logs}")
PY
summary="${#passed[@]} passed; wall $((SECONDS - start)) s"
if [ "${DRY:-0}" = 1 ]; then
    if [ ${#failed[@]} -eq 0 ]; then echo "gpu_check: dry run done, every command ran ($summary; nothing measured)"
        exit 0; fi
    echo "gpu_check: dry run FAILED (${#failed[@]} failed: ${failed[*]}; $summary)"
    exit 1
fi
if [ ${#failed[@]} -eq 0 ]; then
    echo "gpu_check: PASS ($summary)"
    exit 0
fi
echo "gpu_check: FAIL (${#failed[@]} failed: ${failed[*]}; $summary)"
exit 1
