#!/usr/bin/env bash
# The paper's degradation experiment (Fig. 1 / Fig. 6) on Fashion-MNIST, with one recipe for all four nets:
# plain20, plain56, resnet20, resnet56 (presets/degradation.yaml), then the figure and the gradient-flow table.
#   bash benchmarks/degradation.sh [DATA_DIR] [RUN_DIR]
set -euo pipefail
data=${1:-../shared/data/fashion-mnist}
runs=${2:-bench_runs/degradation}
mkdir -p "$runs" docs
for m in plain20 plain56 resnet20 resnet56; do
    resnet train --preset degradation --model "$m" --data-dir "$data" --run-dir "$runs" --name "deg-$m"
done
resnet plot "$runs"/deg-plain20 "$runs"/deg-plain56 "$runs"/deg-resnet20 "$runs"/deg-resnet56 \
    -o docs/degradation.png --metric error
resnet gradflow plain56 resnet56 --dataset fashion-mnist --data-dir "$data" -o docs/gradflow.png
