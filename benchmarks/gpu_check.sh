#!/usr/bin/env bash
# Check a GPU machine before a change to training, data, bench or speed settings lands (CI has no GPU).
#
#   bash benchmarks/gpu_check.sh [FASHION_MNIST_DIR] [LOG_DIR]
#
# Runs, in order: the whole test suite (the GPU tests included), a smoke training, the fashion-mnist
# preset with the defaults (wall time and final test top-1), and the `resnet bench` commands quoted in
# BENCHMARKS.md. Every step's output goes to LOG_DIR (default: gpu_check_logs/, or $OUT when set);
# the last line is `gpu_check: PASS (...)` or `gpu_check: FAIL (...)`, and the exit code is 0 or 1.
#
# Missing Python packages (fvcore is not on every GPU image) are installed from wheels in $WHEELS
# (default .whl/) when that folder exists: `pip wheel --no-deps fvcore iopath yacs termcolor -w .whl`.
set -u
cd "$(dirname "$0")/.."
data=${1:-}
if [ -z "$data" ]; then
    for d in ../shared/data/fashion-mnist .data/fashion-mnist /usr/share/datasets/fashion-mnist; do
        [ -e "$d/train-images-idx3-ubyte.gz" ] || [ -e "$d/train-images-idx3-ubyte" ] && { data=$d; break; }
    done
fi
logs=${2:-${OUT:-gpu_check_logs}}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
py=python3

$py - <<'PY' | tee "$logs/machine.txt"
import platform, torch
print(f"device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA DEVICE'}; "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}; Python {platform.python_version()}")
PY
$py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "gpu_check: FAIL (no CUDA device visible)"; exit 1; }

wheels=${WHEELS:-.whl}
if ! $py -c "import fvcore" 2>/dev/null && [ -d "$wheels" ]; then
    $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu_check_site "$wheels"/*.whl \
        && export PYTHONPATH=/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}
fi
# the console script (torchrun tests call `resnet`), without touching the image's packages
$py -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || \
    $py -m pip install -q --no-deps -e . >"$logs/install.txt" 2>&1

passed=() failed=()
step() {  # step NAME COMMAND...: run it, keep its output, record the outcome
    local name=$1; shift
    local t0=$SECONDS
    echo "== $name: $*"
    if "$@" >"$logs/$name.txt" 2>&1; then passed+=("$name"); status=ok; else failed+=("$name"); status=FAILED; fi
    echo "   $status in $((SECONDS - t0)) s (log: $logs/$name.txt)"
    tail -n 3 "$logs/$name.txt" | sed 's/^/   | /'
}

step pytest $py -m pytest -q -ra
step smoke $py -m resnet_cli train --preset smoke --device cuda --run-dir /tmp/gpu_check_runs --name smoke
if [ -n "$data" ]; then
    t0=$SECONDS
    step fashion_mnist $py -m resnet_cli train --preset fashion-mnist --data-dir "$data" --device cuda \
        --run-dir /tmp/gpu_check_runs --name fashion --json
    wall=$((SECONDS - t0))
    $py - "$logs/fashion_mnist.txt" "$wall" <<'PY' | tee "$logs/fashion_mnist_summary.txt"
import json, sys
lines = [ln for ln in open(sys.argv[1]).read().splitlines() if ln.startswith('{"event": "result"')]
try:
    out = json.loads(lines[-1])  # train --json is JSON Lines: the result comes last
    print(f"fashion-mnist preset: final test top-1 {out['final']['test_top1']:.2%}, best "
          f"{out['best']['test_top1']:.2%}, {out['epochs']} epochs, wall {sys.argv[2]} s (process start to end)")
except (ValueError, IndexError, KeyError):
    print("fashion-mnist preset: no result (see its log)")
PY
else
    echo "== fashion_mnist: skipped (no Fashion-MNIST found; pass its folder as the first argument)"
    failed+=("fashion_mnist(no data)")
fi
step bench_r20 $py -m resnet_cli bench resnet20 --device cuda -b 512 --json
step bench_r50v15_train $py -m resnet_cli bench resnet50-v1.5 --mode train --device cuda -b 256 --precision bf16 --json
step bench_r50_infer $py -m resnet_cli bench resnet50 --mode infer --device cuda -b 256 --precision bf16 --json
step flops_cuda $py -m resnet_cli flops --device cuda -b 64

summary="${#passed[@]} passed: ${passed[*]:-none}"
if [ ${#failed[@]} -eq 0 ]; then
    echo "gpu_check: PASS ($summary)"
    exit 0
fi
echo "gpu_check: FAIL (${#failed[@]} failed: ${failed[*]}; $summary)"
exit 1
