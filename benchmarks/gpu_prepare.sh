#!/usr/bin/env bash
# Make what a GPU call carries, here, before the lease starts (no device time): .gpu/ in the repository root,
# ignored by git, holding
#   .gpu/whl/                  the wheels the GPU image lacks (its package list: ../.library/device/KINDS.md):
#                              fvcore and its needs (`bench` TFLOP/s, `flops`), webdataset and braceexpand
#                              (`data convert`, imagenet_path.py); all pure Python, so any Python 3 builds them
#   .gpu/data/fashion-mnist/   the four Fashion-MNIST files (the ../shared beside a checkout does not travel)
#
#   bash benchmarks/gpu_prepare.sh [FASHION_MNIST_DIR]
#
# The GPU scripts find both there by default ($WHEELS and their first argument name others). Then one call runs,
# e.g., `bash benchmarks/gpu_check.sh` with carry [".gpu"]. Already-made parts are kept; the end prints the size
# that travels (the limit is 64 MiB for the whole working tree).
set -eu
cd "$(dirname "$0")/.."
source benchmarks/gpu_common.sh
py=${PYTHON:-python3}
src=$(find_fashion "${1:-../shared/data/fashion-mnist}")  # the copy in .gpu/ is made from it, never read by it
[ -n "$src" ] && [ -e "$src/train-images-idx3-ubyte.gz" ] || {
    echo "gpu_prepare: no Fashion-MNIST folder with the four .gz files (give it as the first argument)"; exit 2; }
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >>.git/info/exclude; }
mkdir -p "$GPU_WHEELS" .gpu/data/fashion-mnist
if ! ls "$GPU_WHEELS"/fvcore-*.whl "$GPU_WHEELS"/webdataset-*.whl >/dev/null 2>&1; then
    $py -m pip wheel -q --no-deps -w "$GPU_WHEELS" fvcore iopath yacs termcolor webdataset braceexpand
fi
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
    [ "$(realpath "$src/$f")" = "$(realpath -m .gpu/data/fashion-mnist/$f)" ] || cp -p "$src/$f" .gpu/data/fashion-mnist/
done
echo "gpu_prepare: $(ls "$GPU_WHEELS" | wc -l) wheels in $GPU_WHEELS, Fashion-MNIST in .gpu/data/fashion-mnist;" \
     "$(du -sm .gpu | cut -f1) MiB to carry (carry: [\".gpu\"])"
