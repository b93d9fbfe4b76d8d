"""Compile every device kernel of ``kernels/cuda`` to PTX (no GPU needed).

Numba's CUDA simulator runs the kernels as Python and checks no types; this
script runs the real numba.cuda pipeline (typing, lowering, NVVM) for the
argument types the host functions pass, for compute capability 9.0 (H100 /
H200). It needs libNVVM (a CUDA toolkit) but no driver or device. Run by
``tests/test_cuda_kernels.py`` in its own process (NUMBA_ENABLE_CUDASIM must
be unset); prints one ``OK``/``FAIL`` line per signature and ``DONE``, or
``NO NVVM`` where libNVVM cannot be loaded.

Usage: ``python tests/_cudasim_ptx.py [full]`` (``full``: every value and
index dtype; default: complex64 with int32 and float64 with int64).
"""

import sys
import traceback

from numba import cuda, types
from numba.cuda import cuda_paths, dispatcher
from numba.cuda.cudadrv import nvrtc


class _FakeDevice:
    """Device functions are compiled for the current device's capability:
    give them one without a driver."""

    compute_capability = (9, 0)


dispatcher.get_current_device = lambda: _FakeDevice()
# The list of architectures is asked of NVRTC, which a bare toolkit may lack;
# only NVVM is needed to make PTX.
nvrtc.get_supported_ccs = lambda: ((7, 5), (8, 0), (8, 6), (8, 9), (9, 0))
cuda_paths._get_nvrtc_path = lambda: ("absent", None)

from sparsediff.kernels.cuda import _device as dv  # noqa: E402

CC = (9, 0)
F32, F64, C64, C128 = types.float32, types.float64, types.complex64, types.complex128
I32, I64 = types.int32, types.int64


def arr(t, nd):
    return types.Array(t, nd, "C")


def real_of(t):
    return {C64: F32, C128: F64}.get(t, t)


def acc_of(t):
    return C128 if t in (C64, C128) else F64


def signatures(full):
    if full:
        combos = [(v, i) for v in (F32, F64, C64, C128) for i in (I32, I64)]
    else:  # complex64 (float32 views) with int32; int64 indices with float64
        combos = [(C64, I32), (F64, I64)]
    indexed = {"spmv_n", "spmv_n_dot", "spmv_t", "sparse_outer", "csr_diagonal",
               "segment_sum"}
    out = []
    for val, idx in combos:
        fv = arr(real_of(val), 2)
        f1 = arr(real_of(val), 1)
        accf = arr(F64, 1)
        b = types.boolean
        sc = arr(acc_of(val), 1)  # per-column scalars: float64 / complex128
        out += [
            ("spmv_n", (arr(idx, 1), arr(idx, 1), arr(val, 1), arr(val, 2), fv,
                        I64, I64)),
            ("spmv_n_dot", (arr(idx, 1), arr(idx, 1), arr(val, 1), arr(val, 2), fv,
                            I64, I64, accf)),
            ("spmv_t", (arr(idx, 1), arr(idx, 1), arr(val, 1), arr(val, 2), fv,
                        I64, I64, b)),
            ("sparse_outer", (arr(idx, 1), arr(idx, 1), arr(val, 2), arr(val, 2),
                              F64, F64, f1, I64)),
            ("csr_diagonal", (arr(idx, 1), arr(idx, 1), arr(val, 1), f1, I64)),
            ("segment_sum", (arr(val, 1), arr(idx, 1), f1, I64)),
            ("col_dot", (arr(val, 2), arr(val, 2), accf, I64)),
            ("col_sqnorm", (arr(val, 2), accf)),
            ("cg_step", (arr(val, 2),) * 4 + (arr(F64, 1), accf)),
            ("sub_scaled", (arr(val, 2), arr(val, 2), sc, arr(val, 2), accf)),
            ("xpby", (arr(val, 2), arr(F64, 1), arr(val, 2))),
            ("bicgstab_p", (arr(val, 2),) * 3 + (sc, sc)),
            ("bicgstab_x", (arr(val, 2), sc, arr(val, 2), sc, arr(val, 2))),
            ("fill_zero", (f1,)),
        ]
        if val in (C64, C128):  # a real matrix applied to a complex block
            rv = real_of(val)
            out += [
                ("spmv_n_dot", (arr(idx, 1), arr(idx, 1), arr(rv, 1), arr(val, 2), fv,
                                I64, I64, accf)),
                ("spmv_t", (arr(idx, 1), arr(idx, 1), arr(rv, 1), arr(val, 2), fv,
                            I64, I64, b)),
            ]
    if not full:  # float64 / int64: only the kernels that take indices
        out = [(name, sig) for name, sig in out
               if name in indexed or sig[0].dtype is not F64]
    return out


def main():
    full = "full" in sys.argv[1:]
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
    except Exception as exc:  # no CUDA toolkit here
        print("NO NVVM", type(exc).__name__)
        return 0
    failed = 0
    for name, sig in signatures(full):
        try:
            cuda.compile_ptx(getattr(dv, name).py_func, sig, cc=CC)
            print("OK", name, sig, flush=True)
        except Exception:
            failed += 1
            print("FAIL", name, sig, flush=True)
            traceback.print_exc(limit=-3)
    print("DONE", failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
