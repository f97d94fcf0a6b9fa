#!/usr/bin/env bash
# Start-up of `resnet eval` and `resnet predict`, and channel_stats on CIFAR-10's shape: the commit REV against
# this checkout, alternating, each command in a fresh process (PYTHONPATH names the checkout):
#
#   bash benchmarks/startup.sh REV RUN_FOLDER IMAGE_FOLDER [ROUNDS]
#
# e.g. after `resnet train --preset smoke` and a few 32 px images in samples/:
#   bash benchmarks/startup.sh 1e756fe runs/resnet20-synthetic samples 4
# With $FASHION_MNIST_DIR set, also idx.load of Fashion-MNIST from it (after one untimed load).
set -u
rev=$1 run=$(realpath "$2") images=$(realpath "$3") rounds=${4:-4}
here=$(cd "$(dirname "$0")/.." && pwd)
old=$(mktemp -d "${TMPDIR:-/tmp}/startup.XXXXXX")
trap 'git -C "$here" worktree remove --force "$old" >/dev/null 2>&1; rm -rf "$old"' EXIT
git -C "$here" worktree add -f --detach "$old" "$rev" >/dev/null 2>&1 || { echo "cannot check out $rev"; exit 2; }
label() { [ "$1" = "$here" ] && echo now || echo "$rev"; }  # label DIR: what a checkout is called
seconds() { local t0; t0=$(date +%s.%N); "$@" >/dev/null 2>&1 || echo "failed: $*" >&2; echo "$(date +%s.%N) - $t0" | bc; }
for _ in $(seq "$rounds"); do
    for src in "$old" "$here"; do
        name=$(label "$src")
        e=$(PYTHONPATH=$src seconds python3 -m resnet_cli eval "$run" --device cpu --json)
        p=$(PYTHONPATH=$src seconds python3 -m resnet_cli predict "$run" "$images" --device cpu --json)
        printf '%-8s eval %5.2f s  predict %5.2f s\n' "$name" "$e" "$p"
    done
done
for src in "$old" "$here"; do
    name=$(label "$src")
    PYTHONPATH=$src python3 - "$name" <<'PY'
import os
import sys
import time
from pathlib import Path

import torch

from resnet_cli.data.loading import channel_stats

x = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
times = []
for _ in range(3):
    t = time.perf_counter()
    channel_stats(x)
    times.append(time.perf_counter() - t)
print(f"{sys.argv[1]:<8} channel_stats 50,000 x 3 x 32 x 32: " + " ".join(f"{t:.2f}" for t in times) + " s")
fashion = os.environ.get("FASHION_MNIST_DIR")
if fashion:
    from resnet_cli.data import idx

    idx.load("fashion-mnist", Path(fashion), False)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        idx.load("fashion-mnist", Path(fashion), False)
        times.append(time.perf_counter() - t)
    print(f"{sys.argv[1]:<8} idx.load fashion-mnist: " + " ".join(f"{t:.2f}" for t in times) + " s")
PY
done
