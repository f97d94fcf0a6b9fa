#!/usr/bin/env bash
# The GPU side of the default ImageNet path (#34 items 1, 3, 5, 6, 7) in one call, about 5 minutes on one H100:
#
#   bash benchmarks/gpu_pipeline.sh [LOG_DIR]
#
# 1. the CUDA tests of that issue (graph capture beside a pinning thread and beside a folder run's workers; uploads
#    one batch ahead on a side stream; gradient logging and memory under graphs; the augmentations without a host
#    sync; a CPU AdamW run resumed on CUDA);
# 2. `benchmarks/uploads.py`: `resnet train` images/s on a generated folder of 10,240 JPEGs with data.prefetch off
#    (the copy on the compute stream: the code before item 3) and on, alternating, ResNet-50 v1.5 and ResNet-18;
# 3. `benchmarks/randaugment.py`: RandAugment and TrivialAugment on 256 x 224 px against a ResNet-50 step;
# 4. `benchmarks/antialias.py --device cuda`: the device time of the crop resize with and without antialiasing.
# Each step's output goes to LOG_DIR (default $OUT, else gpu_pipeline_logs/); the end is a summary of the figures
# and `gpu_pipeline: PASS` or `FAIL`. Wheels the image lacks come from $WHEELS (default .gpu/whl/, made by
# gpu_prepare.sh), as in gpu_check.sh.
# Without CUDA it fails at once; DRY=1 runs the same commands on this machine's CPU at tiny sizes (the CUDA tests
# are collected and skip), so that a GPU call is not spent on a broken command (tests/test_bench.py runs it).
set -u
cd "$(dirname "$0")/.."
source benchmarks/gpu_common.sh
logs=${1:-${OUT:-gpu_pipeline_logs}}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
# the GPU's settings; DRY=1 cuts each to what checks the command on a CPU in seconds
device=cuda uploads=(--images 10240 --repeats 1 --models resnet50-v1.5,resnet18) aug=(--batch-size 256 --repeats 5)
boxes=100
if [ "${DRY:-0}" = 1 ]; then
    device=cpu boxes=5 aug=(--batch-size 4 --size 64 --repeats 1)
    uploads=(--images 64 --repeats 1 --models resnet18 --side 64 --image-size 64 --batch-size 8 --epochs 1 --workers 1
             --dir "${WORK:-/tmp/gpu_pipeline}/jpegs")
fi
begin_script gpu_pipeline "$logs" "tiny sizes; the CUDA tests skip"
start=$SECONDS
failed=()
step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit; limit=$(capped "$2"); shift 2
    local t0=$SECONDS
    if [ "$limit" = 0 ]; then echo "== $name: skipped (BUDGET=$BUDGET s is spent)"; failed+=("$name"); return; fi
    echo "== $name: $*"
    timeout "$limit" "$@" >"$logs/$name.txt" 2>&1 || failed+=("$name")
    echo "   $((SECONDS - t0)) s; last lines:"
    tail -n 4 "$logs/$name.txt" | cut -c1-160 | sed 's/^/   | /'
}

step tests 150 $py -m pytest -q -ra -p no:cacheprovider tests/test_gpu.py -k \
    "pinning or workers_replays or uploads_ahead or gradient_logging or reserves or never_wait_for_the_gpu or adamw"
# a check that ran nothing fails: all seven tests passed (on a CPU, all seven were found and skipped)
outcome=$([ "${DRY:-0}" = 1 ] && echo skipped || echo passed)
tail -n 1 "$logs/tests.txt" | grep -Eq "^7 $outcome( in|,)" ||  # seven selected: "7 passed" is all of them
    { [[ " ${failed[*]} " == *" tests "* ]] || failed+=(tests); echo "   tests: not all 7 $outcome"; }
step uploads 240 $py benchmarks/uploads.py --device $device "${uploads[@]}"
step randaugment 60 $py benchmarks/randaugment.py --device $device "${aug[@]}"
step antialias 60 $py benchmarks/antialias.py --device $device --boxes $boxes

echo
for name in tests uploads randaugment antialias; do
    echo "-- $name"
    tail -n 12 "$logs/$name.txt" 2>/dev/null | cut -c1-118
done | tee "$logs/summary.txt"
if [ ${#failed[@]} -eq 0 ]; then
    if [ "${DRY:-0}" = 1 ]; then echo "gpu_pipeline: dry run done, every command ran (nothing measured, no GPU test run)"
    else echo "gpu_pipeline: PASS (wall $((SECONDS - start)) s)"; fi
    exit 0
fi
echo "gpu_pipeline: FAIL (${failed[*]}; wall $((SECONDS - start)) s)"
exit 1
