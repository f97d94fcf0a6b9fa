#!/usr/bin/env bash
# Issue 25's GPU measurements, prepared as one run (about 8 minutes on one H100 for `all`; PART picks a half):
#
#   bash benchmarks/gpu_reproduce.sh [FASHION_MNIST_DIR] [LOG_DIR] [parallel|table6|all]
#
# parallel  Do two small runs side by side on one GPU train faster than one after the other? `resnet reproduce
#           table6 --depths 20 --seeds 2 --steps $SHORT` (default 6,400: a tenth of the paper's length), with -j 1
#           and with -j 2, each in a fresh folder: the wall time of each and their ratio. --parallel's default on
#           one GPU is chosen from it.
# table6    `resnet reproduce table6 --dataset fashion-mnist --depths 20,56 --seeds 1` at the paper's length (64k
#           iterations a run), one run after the other: each run's training time and test error, and the whole
#           Table 6 at 3 seeds extrapolated from them (linear in depth: every run has the same steps and batch).
#
# Every command's output is kept in LOG_DIR (default $OUT, else gpu_reproduce_logs/), with each folder's
# report.md and results.json; the end of the output is a summary. Packages the GPU image lacks come from wheels in
# $WHEELS (default .gpu/whl/, made by gpu_prepare.sh), as in gpu_check.sh. Without CUDA it fails at once; DRY=1
# runs the same commands on this machine's CPU at a few iterations, to check the script before GPU time is spent
# on it.
set -u
cd "$(dirname "$0")/.."
source benchmarks/gpu_common.sh
data=$(find_fashion "${1:-}")
logs=${2:-${OUT:-gpu_reproduce_logs}}
part=${3:-all}
short=${SHORT:-6400}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}  # the interpreter to use: $PYTHON, else python3 on PATH
case $part in parallel|table6|all) ;; *) echo "gpu_reproduce: PART must be parallel, table6 or all"; exit 2;; esac
[ -n "$data" ] || { echo "gpu_reproduce: FAIL (no Fashion-MNIST folder; give it as the first argument)"; exit 1; }
install_wheels "$logs/wheels.txt"
device=cuda paper=() small=()
if [ "${DRY:-0}" = 1 ]; then
    device=cpu short=4 paper=(--steps 4) small=(--set data.train_limit=1024 --set data.val_split=256 --set data.test_limit=256)
    echo "gpu_reproduce: dry run on the CPU (4 iterations a run, 1,024 images); no figure below is a measurement"
else
    $py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu_reproduce: FAIL (no CUDA device visible)"; exit 1; }
fi
machine_line "$logs"
work=/tmp/gpu_reproduce
rm -rf "$work"
repro() {  # repro NAME LIMIT_S ARGS...: one `resnet reproduce` in $work/NAME, its wall time in $logs/NAME.seconds
    local name=$1 limit; limit=$(capped "$2"); shift 2
    local t0 t1
    if [ "$limit" = 0 ]; then echo "$name: skipped (BUDGET=$BUDGET s is spent)"; return; fi
    t0=$(date +%s.%N)
    timeout "$limit" $py -m resnet_cli reproduce table6 --dataset fashion-mnist --data-dir "$data" --device $device \
        --out "$work/$name" --json "${small[@]}" "$@" >"$logs/$name.txt" 2>&1 || echo "   $name: exit $? (see $logs/$name.txt)"
    t1=$(date +%s.%N)
    echo "$t0 $t1" | awk '{printf "%.1f\n", $2 - $1}' >"$logs/$name.seconds"
    cp "$work/$name/report.md" "$logs/$name.report.md" 2>/dev/null
    echo "$name $(cat "$logs/$name.seconds") s"
}
if [ "$part" != table6 ]; then
    repro parallel_j1 200 --depths 20 --seeds 2 --steps "$short" --parallel 1
    repro parallel_j2 200 --depths 20 --seeds 2 --steps "$short" --parallel 2
fi
if [ "$part" != parallel ]; then
    repro table6_paper 560 --depths 20,56 --seeds 1 "${paper[@]}"
fi

echo
$py - "$logs" <<'PY' | tee "$logs/summary.txt"
import json
import pathlib
import sys

logs = pathlib.Path(sys.argv[1])


def result(name):
    path = logs / f"{name}.txt"
    try:
        text = path.read_text()
        return json.loads(text[text.index("{"):])
    except (OSError, ValueError):
        return None


def seconds(name):
    path = logs / f"{name}.seconds"
    return float(path.read_text()) if path.exists() else None


print((logs / "machine.txt").read_text().strip())
one, two = seconds("parallel_j1"), seconds("parallel_j2")
if one and two and result("parallel_j1") and result("parallel_j2"):
    steps = result("parallel_j1")["steps_per_run"]
    print(f"two resnet20 runs of {steps:,} iterations: one after the other {one:.1f} s, side by side {two:.1f} s: "
          f"-j 2 gives {one / two:.2f}x the throughput")
t6 = result("table6_paper")
if t6:
    rows = {r["model"]: r for r in t6["table6"]}
    print(f"table6 ({t6['steps_per_run']:,} iterations a run{'' if t6['paper_length'] else ', NOT the paper length'}):")
    for model, r in rows.items():
        print(f"  {model}: test error {r['error_mean']:.2f}% (paper, CIFAR-10: {r['paper']:.2f}%), "
              f"training time {r['wall_seconds_per_run'] or 0:.0f} s")
    if {"resnet20", "resnet56"} <= rows.keys():
        t20, t56 = rows["resnet20"]["wall_seconds_per_run"], rows["resnet56"]["wall_seconds_per_run"]
        slope = (t56 - t20) / 36
        table = 3 * sum(t20 + slope * (d - 20) for d in (20, 32, 44, 56, 110))
        print(f"  the whole Table 6 at 3 seeds, one run at a time (extrapolated linearly in depth from these two): "
              f"{table / 60:.0f} min")
    for f in t6["failed"]:
        print(f"  FAILED {f['run']}: {f['error']}")
PY
