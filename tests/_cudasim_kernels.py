"""``kernels/cuda`` against the NumPy twins, under Numba's CUDA simulator.

Run by ``tests/test_cuda_kernels.py`` in its own process with
``NUMBA_ENABLE_CUDASIM=1`` (it must be set before Numba is imported). Every
device kernel is compared with its twin in ``kernels/_reference.py`` on small
inputs: float32/float64/complex64/complex128 values, int32/int64 indices,
empty rows, unsorted rows with duplicates, rectangular shapes, n = 0 and 1,
one and three columns, the ``conj`` flag, a real matrix applied to a complex
block, and three launch configurations (one thread per row; lane groups per
row; tiny blocks and a capped grid, so that the grid-stride loops and the
per-block atomics of the reductions run over several blocks).

Prints one line ``RESULTS <json>``: for every kernel, the number of checks and
the failures (a description each). The simulator is slow (a Python thread per
GPU thread): sizes are small and the launch blocks tiny.
"""

import json
import os
import sys
import traceback

import numpy as np

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run with NUMBA_ENABLE_CUDASIM=1"

from sparsediff.kernels import _reference as ref  # noqa: E402
from sparsediff.kernels import cuda as K  # noqa: E402

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
INDEX = [np.int32, np.int64]
CHECKS = {}
FAILS = {}
CONFIG = "default"


def randn(rng, shape, dtype):
    out = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        out = out + 1j * rng.standard_normal(shape)
    return out.astype(dtype)


def tol(dtype):
    return 2e-5 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-12


def acc(dtype):
    return np.complex128 if np.dtype(dtype).kind == "c" else np.float64


def make_csr(rng, shape, idx, long_rows=False):
    """CSR arrays with empty rows and unsorted rows holding a duplicate."""
    nr, nc = shape
    rows = []
    for i in range(nr):
        if nr > 2 and i % 3 == 1:
            rows.append(np.zeros(0, int))
            continue
        c = (nc if long_rows else rng.integers(0, nc + 1)) if nc else 0
        cols = rng.choice(nc, size=c, replace=False) if c else np.zeros(0, int)
        if c > 1:
            cols = np.concatenate([cols, cols[:1]])
        rows.append(cols)
    indptr = np.zeros(nr + 1, dtype=idx)
    if nr:
        np.cumsum([len(r) for r in rows], out=indptr[1:])
    indices = (np.concatenate(rows) if rows else np.zeros(0, int)).astype(idx)
    return indptr, indices


def check(name, got, want, dtype, what):
    CHECKS[name] = CHECKS.get(name, 0) + 1
    got, want = np.asarray(got), np.asarray(want)
    t = tol(dtype)
    ok = got.shape == want.shape and np.allclose(got, want, rtol=t, atol=t)
    if not ok:
        err = (np.max(np.abs(got - want)) if got.shape == want.shape and got.size
               else "shape " + str(got.shape))
        FAILS.setdefault(name, []).append(f"[{CONFIG}] {what}: max error {err}")


def same_inputs(name, before, after, what):
    """Inputs a kernel must not write stay as they were."""
    for b, a in zip(before, after):
        if not np.array_equal(b, a, equal_nan=True):
            FAILS.setdefault(name, []).append(f"[{CONFIG}] {what}: an input changed")


def csr_cases(rng, shape, idx, dtype, ms, long_rows=False, data_dtype=None):
    indptr, indices = make_csr(rng, shape, idx, long_rows)
    nnz = indices.shape[0]
    data = randn(rng, (nnz,), data_dtype or dtype)
    nr, nc = shape
    what = (f"{np.dtype(dtype).name}/{np.dtype(data.dtype).name}-"
            f"{np.dtype(idx).name} {shape}")
    for m in ms:
        w = f"{what} m={m}"
        x = randn(rng, (nc, m), dtype)
        keep = [indptr.copy(), indices.copy(), data.copy(), x.copy()]
        got = K.csr_matvec(indptr, indices, data, x, np.full((nr, m), np.nan, dtype))
        want = ref.csr_matvec(indptr, indices, data, x, np.empty((nr, m), dtype))
        check("csr_matvec", got, want, dtype, w)
        same_inputs("csr_matvec", keep, [indptr, indices, data, x], w)
        y = randn(rng, (nr, m), dtype)
        for conj in (False, True):
            got = K.csr_rmatvec(indptr, indices, data, y,
                                np.full((nc, m), np.nan, dtype), conj)
            want = ref.csr_rmatvec(indptr, indices, data, y, np.empty((nc, m), dtype),
                                   conj)
            check("csr_rmatvec", got, want, dtype, f"{w} conj={conj}")
        if data_dtype is not None:
            continue
        u, v = randn(rng, (nr, m), dtype), randn(rng, (nc, m), dtype)
        alpha = np.dtype(dtype).type(-0.75 + (0.5j if np.dtype(dtype).kind == "c"
                                              else 0))
        got = K.sparse_outer(indptr, indices, u, v, alpha, np.full(nnz, np.nan, dtype))
        want = ref.sparse_outer(indptr, indices, u, v, alpha, np.empty(nnz, dtype))
        check("sparse_outer", got, want, dtype, w)
        if nr == nc:
            o1, d1 = np.full((nr, m), np.nan, dtype), np.full(m, np.nan, acc(dtype))
            o2, d2 = np.empty((nr, m), dtype), np.empty(m, acc(dtype))
            K.csr_matvec_dot(indptr, indices, data, x, o1, d1)
            ref.csr_matvec_dot(indptr, indices, data, x, o2, d2)
            check("csr_matvec_dot", o1, o2, dtype, w)
            check("csr_matvec_dot", d1, d2, dtype, w + " dots")
            if m == 1:
                o1, d1 = np.full(nr, np.nan, dtype), np.full(1, np.nan, acc(dtype))
                o2, d2 = np.empty(nr, dtype), np.empty(1, acc(dtype))
                K.csr_matvec_dot1(indptr, indices, data, x[:, 0].copy(), o1, d1)
                ref.csr_matvec_dot1(indptr, indices, data, x[:, 0].copy(), o2, d2)
                check("csr_matvec_dot1", o1, o2, dtype, w)
                check("csr_matvec_dot1", d1, d2, dtype, w + " dots")
    if nr == nc and data_dtype is None:
        o1, o2 = np.full(nr, np.nan, dtype), np.full(nr, np.nan, dtype)
        K.csr_diagonal(indptr, indices, data, o1)
        ref.csr_diagonal(indptr, indices, data, o2)
        check("csr_diagonal", o1, o2, dtype, what)


def segment_cases(rng, dtype, idx):
    for starts, nv in (([0, 1, 4, 5, 11], 12), ([0], 1), ([], 0), ([0, 2], 3)):
        values = randn(rng, nv, dtype)
        starts = np.array(starts, dtype=idx)
        o1 = np.full(starts.shape[0], np.nan, dtype)
        o2 = np.full(starts.shape[0], np.nan, dtype)
        K.segment_sum(values, starts, o1)
        ref.segment_sum(values, starts, o2)
        check("segment_sum", o1, o2, dtype, f"{np.dtype(dtype).name} {starts.tolist()}")


def krylov_cases(rng, shape, dtype):
    what = f"{np.dtype(dtype).name} {shape}"
    m = shape[1]
    a, b = randn(rng, shape, dtype), randn(rng, shape, dtype)
    check("col_dot", K.col_dot(a, b, np.full(m, np.nan, acc(dtype))),
          ref.col_dot(a, b, np.empty(m, acc(dtype))), dtype, what)
    check("col_sqnorm", K.col_sqnorm(a, np.full(m, np.nan)),
          ref.col_sqnorm(a, np.empty(m)), dtype, what)

    x, r, p, q = (randn(rng, shape, dtype) for _ in range(4))
    alpha = rng.standard_normal(m)  # CG's step sizes are real
    x2, r2 = x.copy(), r.copy()
    o1, o2 = np.full(m, np.nan), np.empty(m)
    K.cg_step(x, r, p, q, alpha, o1)
    ref.cg_step(x2, r2, p, q, alpha, o2)
    check("cg_step", x, x2, dtype, what + " x")
    check("cg_step", r, r2, dtype, what + " r")
    check("cg_step", o1, o2, dtype, what + " norms")

    z = randn(rng, shape, dtype)
    beta = rng.standard_normal(m)
    p2 = p.copy()
    check("xpby", K.xpby(z, beta, p), ref.xpby(z, beta, p2), dtype, what)

    sc = acc(dtype)  # BiCGSTAB's scalars: float64 or complex128
    r, v, p, shat, phat, x = (randn(rng, shape, dtype) for _ in range(6))
    al, be, om = (randn(rng, m, sc) for _ in range(3))
    out1, out2 = np.full(shape, np.nan, dtype), np.empty(shape, dtype)
    n1, n2 = np.full(m, np.nan), np.empty(m)
    K.sub_scaled(out1, r, al, v, n1)
    ref.sub_scaled(out2, r, al, v, n2)
    check("sub_scaled", out1, out2, dtype, what)
    check("sub_scaled", n1, n2, dtype, what + " norms")
    p2 = p.copy()
    check("bicgstab_p", K.bicgstab_p(p, r, v, be, om), ref.bicgstab_p(p2, r, v, be, om),
          dtype, what)
    x2 = x.copy()
    check("bicgstab_x", K.bicgstab_x(x, al, phat, om, shat),
          ref.bicgstab_x(x2, al, phat, om, shat), dtype, what)


def overflow_cases():
    """float32 squares of 1e20 overflow; the device reductions use float64."""
    a = np.full((4, 1), 1e20, dtype=np.float32)
    want = [4 * float(a[0, 0]) ** 2]
    check("col_sqnorm", K.col_sqnorm(a, np.empty(1)), want, np.float64, "1e20 f32")
    check("col_dot", K.col_dot(a, a, np.empty(1)), want, np.float64, "1e20 f32")


def conj_really_conjugates():
    ip, ix = np.array([0, 1], np.int32), np.array([0], np.int32)
    data, x = np.array([1 + 2j]), np.array([[1.0 + 0j]])
    check("csr_rmatvec", K.csr_rmatvec(ip, ix, data, x, np.empty((1, 1), complex), False),
          [[1 + 2j]], np.complex128, "conj=False exact")
    check("csr_rmatvec", K.csr_rmatvec(ip, ix, data, x, np.empty((1, 1), complex), True),
          [[1 - 2j]], np.complex128, "conj=True exact")


def run_config(rng, name, threads, blocks_per_sm, group_min_avg, level):
    global CONFIG
    CONFIG = name
    K.THREADS, K.BLOCKS_PER_SM, K.GROUP_MIN_AVG = threads, blocks_per_sm, group_min_avg
    if level == "full":
        for dtype in DTYPES:
            for idx in INDEX:
                ms = (1,) if idx is np.int32 else (3,)
                csr_cases(rng, (7, 7), idx, dtype, ms)
                segment_cases(rng, dtype, idx)
            krylov_cases(rng, (17, 1), dtype)
            krylov_cases(rng, (9, 3), dtype)
        for shape in [(0, 1), (1, 1), (0, 3)]:
            krylov_cases(rng, shape, np.float64)
            krylov_cases(rng, shape, np.complex64)
        overflow_cases()
        conj_really_conjugates()
    if level in ("full", "csr"):
        for shape in [(0, 0), (1, 1), (1, 4), (9, 5), (3, 8)]:
            csr_cases(rng, shape, np.int64, np.complex128, (1, 2))
    if level == "csr":
        csr_cases(rng, (7, 7), np.int32, np.complex64, (1,))
        csr_cases(rng, (7, 7), np.int64, np.float32, (3,))
    # long rows (lane groups under the default thresholds) and a real matrix
    # applied to a complex block, in every configuration
    csr_cases(rng, (4, 40), np.int32, np.complex128, (1, 2), long_rows=True)
    csr_cases(rng, (4, 40), np.int64, np.float32, (1,), long_rows=True)
    csr_cases(rng, (7, 7), np.int32, np.complex64, (1, 2), data_dtype=np.float32)
    csr_cases(rng, (6, 6), np.int64, np.complex128, (1,), data_dtype=np.float64)


def main():
    rng = np.random.default_rng(20261201)
    configs = [
        # (name, THREADS, BLOCKS_PER_SM, GROUP_MIN_AVG, cases): tiny blocks
        # and a grid capped at 4 blocks (the simulator's device reports no
        # multiprocessor count: 4 are assumed), so loops stride over blocks
        ("row-per-thread", 4, 1, 1000, "full"),
        ("lane-groups", 8, 1, 0, "csr"),
        ("default-thresholds", 32, 1, K.GROUP_MIN_AVG, "long"),
    ]
    for cfg in configs:
        try:
            run_config(rng, *cfg)
        except Exception:
            FAILS.setdefault("crash", []).append(f"[{CONFIG}] " + traceback.format_exc())
    print("RESULTS " + json.dumps({"checks": CHECKS, "fails": FAILS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
