#!/usr/bin/env bash
# The prepared GPU check (`make bench-gpu`): the GPU-marked tests, the trainer against a plain
# PyTorch loop (bench/cifar10.py), the GPU-hours of the CIFAR-10 searches at the rate it
# measured (bench/gpu_hours.py) and children packed on one GPU (bench/packing.py), in under
# 8 minutes on one GPU machine. Nothing here needs Ray, which a GPU machine may not have. The
# CIFAR-10 archive is read from bench/data/ (git-ignored; make bench-gpu copies it there from
# ../shared/data when that exists), so that it travels with a checkout copied to the machine.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
ARCHIVE=${NASPS_CIFAR10_ARCHIVE:-bench/data/cifar10-jpeg.tar.gz}
failed=0
step() {
    echo "== $*"
    local start=$SECONDS
    "$@" || { echo "== failed (exit $?): $*"; failed=1; }
    echo "== $((SECONDS - start)) s"
}
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
step timeout 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_image_child.py tests/test_language_child.py
cifar_log=$(mktemp)
step timeout 170 "$PY" bench/cifar10.py --epochs 2 --archive "$ARCHIVE" > "$cifar_log" 2>&1
cat "$cifar_log"
# The GPU-hours of the CIFAR-10 searches at the share of the peak the 15-layer child reached.
mfu=$(sed -n 's/.*MFU \([0-9.]*\)%.*/\1/p' "$cifar_log")
[ -n "$mfu" ] && step timeout 10 "$PY" bench/gpu_hours.py --samples 4 --mfu "$(awk "BEGIN {print $mfu / 100}")"
step timeout 150 "$PY" bench/packing.py --epochs 1 --archive "$ARCHIVE"
exit $failed
