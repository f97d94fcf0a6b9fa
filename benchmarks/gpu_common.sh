# Sourced by the GPU scripts (gpu_check.sh, gpu_speed.sh, gpu_pipeline.sh, gpu_reproduce.sh), from the repository root.

GPU_WHEELS=${WHEELS:-.gpu/whl}  # the wheels the GPU image lacks, made by gpu_prepare.sh
# Seconds a script may take in all (a device call allows 600 at most; give less when less is left): each step's
# limit is cut to what is left of it, less 15 s for the summary, and a step with under 10 s left is skipped, so
# the summary is always printed and the call is never cut off before it. $SECONDS counts from the script's start.
BUDGET=${BUDGET:-570}

capped() {  # capped LIMIT_S: LIMIT_S, or what is left of $BUDGET when that is less; 0: skip the step
    local left=$((BUDGET - SECONDS - 15))
    if [ "$left" -lt 10 ]; then echo 0; elif [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}

find_fashion() {  # find_fashion [DIR]: DIR, or the first Fashion-MNIST folder found; "" when none
    if [ -n "${1:-}" ]; then echo "$1"; return; fi
    for d in .gpu/data/fashion-mnist ../shared/data/fashion-mnist .data/fashion-mnist /usr/share/datasets/fashion-mnist; do
        if [ -e "$d/train-images-idx3-ubyte.gz" ] || [ -e "$d/train-images-idx3-ubyte" ]; then echo "$d"; return; fi
    done
}

machine_line() {  # machine_line LOG_DIR [TEXT]: the device, versions and date, shown and kept in LOG_DIR/machine.txt;
    # TEXT names the device when CUDA sees none (default: a dry run's)
    ${PYTHON:-python3} - "${2:-no CUDA device (dry run)}" <<'PY' | tee "$1/machine.txt"
import datetime, platform, sys, torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else sys.argv[1]
print(f"device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}; Python {platform.python_version()}; "
      f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
PY
}

install_wheels() {  # install_wheels LOG: the wheels in $GPU_WHEELS into a private folder on PYTHONPATH, all at
    # once, or each on its own when one does not fit this machine; the image's own packages are left alone
    local wheels=$GPU_WHEELS log=$1 site=/tmp/gpu_check_site
    if [ -d "$wheels" ] && [ ! -d $site ]; then
        ${PYTHON:-python3} -m pip install -q --no-index --no-deps --no-compile --target $site "$wheels"/*.whl >"$log" 2>&1 ||
            for w in "$wheels"/*.whl; do
                ${PYTHON:-python3} -m pip install -q --no-index --no-deps --no-compile --upgrade --target $site "$w" >>"$log" 2>&1
            done
    fi
    [ -d $site ] && export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
    ${PYTHON:-python3} -c "import fvcore" 2>/dev/null || echo "note: fvcore is missing (see $log)"
}

prepare_gpu() {  # prepare_gpu NAME LOG_DIR: fail as NAME without a CUDA device; else the wheels, the console script
    # (torchrun tests call `resnet`) installed without touching the image's packages, and this checkout on PYTHONPATH
    local name=$1 logs=$2 py=${PYTHON:-python3}
    $py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "$name: FAIL (no CUDA device visible)"; exit 1; }
    install_wheels "$logs/wheels.txt"
    $py -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || \
        $py -m pip install -q --no-deps -e . >"$logs/install.txt" 2>&1
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
}

begin_script() {  # begin_script NAME LOG_DIR DRY_NOTE: under DRY=1 the dry run's notice, the machine line and the
    # wheels (this CPU runs the commands); else the machine line, then fail as NAME without CUDA, or prepare_gpu
    if [ "${DRY:-0}" = 1 ]; then
        echo "$1: dry run on the CPU ($3); no figure below is a measurement"
        machine_line "$2"
        install_wheels "$2/wheels.txt"
        export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    else
        machine_line "$2" "NO CUDA DEVICE"
        prepare_gpu "$1" "$2"
    fi
}
