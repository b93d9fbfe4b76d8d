"""Which AMG adjoint preconditions the adjoint solve better?

For a non-symmetric ``A`` the adjoint solve ``Aᴴ λ = g`` needs a preconditioner
for ``Aᴴ``. Two candidates:

(a) a second smoothed-aggregation hierarchy built for ``Aᴴ`` (a second setup);
(b) the exact adjoint ``Mᴴ`` of the forward V-cycle: the same hierarchy run
    conjugate-transposed (what ``sparsediff.precond.AMG.rmatvec`` does).

Problem: 2-D convection–diffusion ``−Δu + β·∇u`` on the unit square, N² interior
points, first-order upwind convection, ``β = Pe (cos 0.3, sin 0.3)`` (global
Péclet number ``Pe = |β| L / ε`` with ``L = ε = 1``). Restarted GMRES(30) from
SciPy to ``rtol = 1e-8``, right-hand sides of unit norm, left preconditioning
(SciPy's convention); iterations are inner iterations.

Also measured: the cost of ``AMG.update`` (aggregates kept) against a full setup.

Run ``python benchmarks/bench_amg_transpose.py [N]`` (default N = 128).
"""

import os

# pyamg's setup does many tiny dense eigenvalue problems; on a small shared
# machine multi-threaded BLAS makes them 10-30x slower and the timings noise
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import scipy.sparse.linalg as spla  # noqa: E402

from sparsediff._validation import as_matrix  # noqa: E402
from sparsediff.precond import AMG  # noqa: E402


def convection_diffusion(N, pe):
    h = 1.0 / (N + 1)
    eye = sp.eye(N, format="csr")
    d2 = sp.diags_array([-1.0, 2.0, -1.0], offsets=[-1, 0, 1], shape=(N, N)) / h**2
    d1 = sp.diags_array([-1.0, 1.0], offsets=[-1, 0], shape=(N, N)) / h  # upwind, β > 0
    bx, by = pe * np.cos(0.3), pe * np.sin(0.3)
    A = sp.kron(eye, d2) + sp.kron(d2, eye) + bx * sp.kron(eye, d1) + by * sp.kron(d1, eye)
    return sp.csr_array(A)


def poisson(N):
    eye = sp.eye(N, format="csr")
    d2 = sp.diags_array([-1.0, 2.0, -1.0], offsets=[-1, 0, 1], shape=(N, N))
    return sp.csr_array(sp.kron(eye, d2) + sp.kron(d2, eye))


def gmres_iterations(A, b, apply_m=None, maxiter=600):
    n = A.shape[0]
    M = None if apply_m is None else spla.LinearOperator((n, n), matvec=apply_m,
                                                         dtype=A.dtype)
    count = [0]

    def cb(_):
        count[0] += 1

    t0 = time.perf_counter()
    x, info = spla.gmres(A, b, M=M, rtol=1e-8, atol=0.0, restart=30,
                         maxiter=maxiter // 30, callback=cb, callback_type="pr_norm")
    elapsed = time.perf_counter() - t0
    rel = np.linalg.norm(b - A @ x) / np.linalg.norm(b)
    return count[0], rel, elapsed, info


def median_time(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(N=128):
    rng = np.random.default_rng(0)
    n = N * N
    print(f"# AMG adjoint: convection-diffusion {N}x{N} (n = {n}), GMRES(30), rtol 1e-8\n")
    print("| Pe | forward M | adjoint (b) exact Mᴴ | adjoint (a) new hierarchy "
          "| adjoint, none | setup (b) s | extra setup (a) s | apply M ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for pe in (10.0, 100.0, 1000.0, 10000.0):
        A = convection_diffusion(N, pe)
        AH = sp.csr_array(A.conj().T)
        b = rng.standard_normal(n)
        b /= np.linalg.norm(b)
        g = rng.standard_normal(n)
        g /= np.linalg.norm(g)
        mat = as_matrix(A, "bench")
        M = AMG(mat)
        assert not M.hermitian
        MH = AMG(as_matrix(AH, "bench"))  # option (a)
        it_f, rel_f, _, _ = gmres_iterations(A, b, M.matvec)
        it_b, rel_b, _, _ = gmres_iterations(AH, g, M.rmatvec)
        it_a, rel_a, _, _ = gmres_iterations(AH, g, MH.matvec)
        it_0, rel_0, _, info0 = gmres_iterations(AH, g, None)
        none = f"{it_0}" if info0 == 0 else f">{it_0} (rel {rel_0:.0e})"
        t_apply = median_time(lambda M=M, b=b: M.matvec(b)) * 1e3
        print(f"| {pe:g} | {it_f} | {it_b} | {it_a} | {none} | {M.setup_time:.3f} "
              f"| {MH.setup_time:.3f} | {t_apply:.2f} |")
        assert max(rel_f, rel_b, rel_a) <= 1e-8 * 1.01, (rel_f, rel_b, rel_a)

    print("\n# AMG.update (aggregates kept) vs full setup, median of 5\n")
    print("| matrix | n | full setup s | update s | ratio | GMRES its full / update |")
    print("|---|---:|---:|---:|---:|---:|")
    cases = [("Poisson 2-D", poisson(2 * N)),
             ("conv-diff Pe=100", convection_diffusion(N, 100.0))]
    for label, A in cases:
        mat = as_matrix(A, "bench")
        M0 = AMG(mat)
        # new values on the same pattern: scale rows by a smooth positive field
        s = 1.0 + 0.5 * np.sin(np.linspace(0.0, 3.0, A.shape[0]))
        mat2 = as_matrix(sp.csr_array(sp.diags_array(s) @ A), "bench")
        t_full = median_time(lambda mat2=mat2: AMG(mat2))
        t_upd = median_time(lambda M0=M0, mat2=mat2: M0.update(mat2))
        A2 = mat2.to_scipy()
        b = rng.standard_normal(A.shape[0])
        it_full = gmres_iterations(A2, b, AMG(mat2).matvec)[0]
        it_upd = gmres_iterations(A2, b, M0.update(mat2).matvec)[0]
        print(f"| {label} | {A.shape[0]} | {t_full:.3f} | {t_upd:.3f} "
              f"| {t_upd / t_full:.2f} | {it_full} / {it_upd} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 128)
