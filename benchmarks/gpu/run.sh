#!/usr/bin/env bash
# The one GPU check: tests marked `gpu`, then the GPU benchmark; results under $OUT.
#
# Run from the repository root on a machine with a CUDA GPU, CuPy, numba-cuda,
# SciPy and pytest (what the lent H200 image has). Packages the image lacks
# (pyamg, which sparsediff imports on first AMG use only) come as wheels in
# ./.whl, prepared on a machine with network access:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#       -d .whl pyamg
#
# Budget: under 8 minutes in all (tests about 2, benchmark about 4).
set -uo pipefail
OUT=${OUT:-/tmp/sparsediff-gpu}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import cupy, numba, scipy, numpy; print('cupy', cupy.__version__, \
'numba', numba.__version__, 'scipy', scipy.__version__, 'numpy', numpy.__version__)"
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

timeout 180 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" \
    tests/test_device_contract.py tests/test_cuda_kernels.py 2>&1 | tee "$OUT/gpu_tests.log"

timeout 300 python3 benchmarks/gpu/bench_gpu.py --out "$OUT/results_gpu.md" 2>&1 \
    | tee "$OUT/bench.log"
