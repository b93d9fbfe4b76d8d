"""Resource limits: memory of the backward pass, solver history, running out of
memory, many right-hand sides, default iteration limits.

* F1: the backward pass is O(nnz) in memory, never the dense ``λ xᵀ`` (n = 10⁶:
  a dense n×n would be 8 TB), and its traced peak is a small multiple of the
  forward solve's;
* F2: an iterative solve saves O(1) state in its iteration count (no Krylov
  history), so the gradient's memory does not grow with the forward's iterations;
* F4: SuperLU running out of memory gives a ``MemoryError`` that says what did
  not fit and what to do, and leaves no half-built factorization behind;
* F5: many right-hand sides, k ∈ {1, 2, n, n + 2} (SciPy's SuperLU smoke shapes),
  solved and differentiated column by column, against dense oracles;
* F6: budgets: the default ``maxiter`` is 10·n, and GMRES's memory grows
  linearly in ``restart``.

Memory is measured with :mod:`tracemalloc` (NumPy reports its buffers to it);
bounds are on sizes and their growth, never on timings. Allocations made inside
SuperLU itself (the L and U factors) are not traced.
"""

import gc
import tracemalloc
import types

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import sparsediff as sd
from sparsediff.solvers.direct import DirectEngine

MiB = 2.0**20


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def laplacian_1d(n, shift):
    """Tridiagonal ``tridiag(−1, 2 + shift, −1)``, canonical CSR float64."""
    return sp.diags_array([-np.ones(n - 1), (2.0 + shift) * np.ones(n), -np.ones(n - 1)],
                          offsets=[-1, 0, 1], format="csr")


def laplacian_2d(m, shift):
    """5-point Laplacian on an m×m grid plus ``shift·I`` (n = m², SPD), CSR float64."""
    T = sp.diags_array([-np.ones(m - 1), 2.0 * np.ones(m), -np.ones(m - 1)],
                       offsets=[-1, 0, 1])
    eye = sp.eye_array(m)
    A = sp.kron(T, eye) + sp.kron(eye, T) + shift * sp.eye_array(m * m)
    return sp.csr_array(A)


def entries(A):
    """Row and column of every stored entry of a CSR matrix, in ``A.data`` order."""
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    return rows, A.indices


class Traced:
    """``tracemalloc`` over a ``with`` block; :meth:`peak_since_mark` per phase."""

    def __enter__(self):
        gc.collect()
        self._started = not tracemalloc.is_tracing()
        if self._started:
            tracemalloc.start()
        self.base = tracemalloc.get_traced_memory()[0]
        self.mark()
        return self

    def mark(self):
        """Start a phase: reset the peak, remember the current traced size."""
        tracemalloc.reset_peak()
        self._mark = tracemalloc.get_traced_memory()[0]

    def peak_since_mark(self):
        """Peak traced size since :meth:`mark`, above the size at the mark."""
        return tracemalloc.get_traced_memory()[1] - self._mark

    def peak_since_start(self):
        """Peak traced size since :meth:`mark`, above the size at ``__enter__``."""
        return tracemalloc.get_traced_memory()[1] - self.base

    def held(self):
        """Traced size now, above the size at ``__enter__``."""
        return tracemalloc.get_traced_memory()[0] - self.base

    def __exit__(self, *exc):
        if self._started:
            tracemalloc.stop()
        return False


_SKIP = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
         types.MethodType, str, bytes, int, float, complex, bool)


def reachable_array_bytes(root):
    """Bytes of the NumPy buffers reachable from ``root`` (each buffer once).

    Follows containers and the attributes of sparsediff and SciPy objects (a
    ``Solution``, its engine, preconditioner, matrix copies, its ``Solver``).
    """
    seen, buffers, stack = set(), {}, [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            buffers[id(base)] = base.nbytes
            continue
        if isinstance(obj, _SKIP):
            continue
        if (isinstance(obj, (dict, list, tuple, set, frozenset))
                or type(obj).__module__.startswith(("sparsediff", "scipy"))):
            stack.extend(gc.get_referents(obj))
    return sum(buffers.values())


def warm_up(method, M=None):
    """A small solve and gradient first: imports, JIT compilation and caches are
    not counted in the measurements that follow."""
    A = laplacian_2d(8, 1.0)
    rng = np.random.default_rng(0)
    sd.solve(A, rng.standard_normal(64), method=method, M=M).vjp(rng.standard_normal(64))


# ---------------------------------------------------------------------------
# F1: backward memory is O(nnz), a small multiple of the forward's
# ---------------------------------------------------------------------------

F1_CASES = [
    # 1-D Laplacian + 0.5·I, n = 10⁶, nnz = 3·10⁶ (SuperLU: MMD_AT_PLUS_A ordering)
    pytest.param("direct", None, lambda: laplacian_1d(10**6, 0.5),
                 id="direct-tridiagonal-1e6", marks=pytest.mark.slow),
    # 2-D Laplacian on 1000² + 4·I (κ ≤ 3), n = 10⁶, nnz ≈ 5·10⁶: ~15 iterations
    pytest.param("cg", "jacobi", lambda: laplacian_2d(1000, 4.0),
                 id="cg-jacobi-poisson2d-1e6", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("method,M,build", F1_CASES)
def test_backward_memory_is_order_nnz(method, M, build):
    """F1: ``grad_A`` has A's pattern; the vjp's traced peak is ≤ 3× the forward's
    and ≤ 5·8·(nnz + n) bytes (measured: direct ≈ 0.6× / 3.3×, CG ≈ 0.5× / 3.5×)."""
    warm_up(method, M)
    A = build()
    n, nnz = A.shape[0], A.nnz
    rng = np.random.default_rng(61)
    b = rng.standard_normal(n)
    g = rng.standard_normal(n)
    with Traced() as t:
        sol = sd.solve(A, b, method=method, M=M)
        forward = t.peak_since_mark()
        t.mark()
        grad_A, grad_b = sol.vjp(g)
        backward = t.peak_since_mark()
    assert sol.info.converged and sol.info.method.startswith(method)
    assert sol.adjoint_info.converged
    # the structure of A, entry for entry: O(nnz), nothing dense
    assert sp.issparse(grad_A) and grad_A.format == "csr" and grad_A.shape == A.shape
    assert grad_A.nnz == nnz
    np.testing.assert_array_equal(grad_A.indptr, A.indptr)
    np.testing.assert_array_equal(grad_A.indices, A.indices)
    # the pattern gather −λ[i]·x[j] (λ = grad_b), checked in O(nnz)
    rows, cols = entries(A)
    want = -grad_b[rows] * sol.x[cols]
    np.testing.assert_allclose(grad_A.data, want, rtol=1e-12,
                               atol=1e-14 * np.abs(want).max())
    # memory: traced peaks of the two phases, each above the memory at its start
    unit = 8 * (nnz + n)  # one float64 per stored entry and per unknown
    assert forward > unit, f"forward peak {forward / MiB:.1f} MiB not traced?"
    assert backward <= 3 * forward, (
        f"vjp peak {backward / MiB:.1f} MiB > 3 × forward {forward / MiB:.1f} MiB")
    assert backward <= 5 * unit, (
        f"vjp peak {backward / MiB:.1f} MiB > 5 × 8·(nnz + n) = {5 * unit / MiB:.1f} MiB")


# ---------------------------------------------------------------------------
# F2: saved state is O(1) in the iteration count
# ---------------------------------------------------------------------------

def test_cg_saves_no_per_iteration_history():
    """F2: CG at rtol 1e-3 (81 iterations) and 1e-12 (358) keeps the same state
    (3.8 MiB traced, one iteration vector is 0.3 MiB) and the vjp peaks alike
    (10.2 MiB, including that state); a history would add ≥ 81 vectors."""
    warm_up("cg")
    A = laplacian_2d(200, 0.01)  # n = 40,000, κ ≈ 760
    n, nnz = A.shape[0], A.nnz
    rng = np.random.default_rng(62)
    b = rng.standard_normal(n)
    g = rng.standard_normal(n)
    runs = {}
    for rtol in (1e-3, 1e-12):
        with Traced() as t:
            sol = sd.solve(A, b, method="cg", rtol=rtol)
            held = t.held()  # the forward's temporaries are gone: the saved state
            reachable = reachable_array_bytes(sol)
            t.mark()
            sol.vjp(g)
            vjp_peak = t.peak_since_start()  # saved state + the vjp's own peak
        assert sol.info.converged and sol.adjoint_info.converged
        runs[rtol] = dict(iterations=sol.info.iterations, held=held,
                          reachable=reachable, vjp_peak=vjp_peak)
        del sol
    few, many = runs[1e-3], runs[1e-12]
    assert many["iterations"] >= 3 * few["iterations"], runs
    vector = 8 * n
    # a history of one vector per iteration would add ≥ 81 vectors (25 MiB)
    for key in ("held", "reachable", "vjp_peak"):
        lo, hi = sorted((few[key], many[key]))
        assert hi <= 1.2 * lo, (key, runs)
        assert hi - lo <= 4 * vector, (key, runs)
    # the walker does see the saved state: at least x and a copy of A's values
    assert few["reachable"] >= 8 * (n + nnz), runs
    # and the state is a few vectors and copies of A, not iterations' worth
    assert many["held"] <= 4 * 8 * (n + nnz), runs


# ---------------------------------------------------------------------------
# F5: many right-hand sides, k ∈ {1, 2, n, n + 2}
# ---------------------------------------------------------------------------

N5 = 12
K5 = [1, 2, N5, N5 + 2]


def assert_columns_close(actual, desired, rel):
    """Every column within ``rel`` times its own largest entry (columns differ in
    scale by up to 10¹²: a common tolerance would not test the small ones)."""
    err = np.abs(actual - desired).max(axis=0)
    scale = np.abs(desired).max(axis=0)
    assert np.all(err <= rel * scale), (err / scale)


def nonsymmetric_system(rng, n):
    """A random sparse, row-diagonally-dominant nonsymmetric matrix (κ ~ 10)."""
    mask = rng.random((n, n)) < 0.3
    np.fill_diagonal(mask, True)
    D = rng.standard_normal((n, n)) * mask
    D[np.diag_indices(n)] = np.abs(D).sum(axis=1) + 1.0
    return D


def spd_system(rng, n):
    """A random sparse symmetric, diagonally dominant matrix with positive diagonal."""
    mask = rng.random((n, n)) < 0.3
    mask |= mask.T
    np.fill_diagonal(mask, True)
    R = rng.standard_normal((n, n))
    D = (R + R.T) * mask
    D[np.diag_indices(n)] = np.abs(D).sum(axis=1) + 1.0
    return D


@pytest.mark.parametrize("k", K5)
@pytest.mark.parametrize("method,make", [("direct", nonsymmetric_system),
                                         ("gmres", nonsymmetric_system),
                                         ("cg", spd_system)])
def test_many_right_hand_sides(method, make, k):
    """F5: x, per-column info and gradients for ``b`` of shape ``(n, k)``."""
    rng = np.random.default_rng(65 + k)
    D = make(rng, N5)
    A = sp.csr_array(D)
    assert A.nnz == np.count_nonzero(D)
    # columns of very different scales: each must pass its *own* stopping test
    scales = 10.0 ** rng.uniform(-6, 6, k)
    B = rng.standard_normal((N5, k)) * scales
    G = rng.standard_normal((N5, k))
    rtol = 1e-12
    sol = sd.solve(A, B, method=method, rtol=rtol)
    x_want = np.linalg.solve(D, B)
    assert sol.x.shape == (N5, k)
    assert_columns_close(sol.x, x_want, 1e-9)
    info = sol.info
    assert info.converged and info.method == method
    for name in ("residual_norm", "rhs_norm", "column_converged", "column_iterations"):
        assert np.shape(getattr(info, name)) == (k,), name
    assert info.column_converged.all()
    np.testing.assert_allclose(info.rhs_norm, np.linalg.norm(B, axis=0), rtol=1e-12)
    # per column: ‖b_c − A x_c‖ ≤ rtol·‖b_c‖ (a test on all columns at once
    # would let the small columns fail by a factor of up to 10¹²)
    true = np.linalg.norm(B - D @ sol.x, axis=0)
    assert np.all(info.residual_norm <= 4 * rtol * info.rhs_norm), info
    np.testing.assert_allclose(info.residual_norm, true,
                               atol=1e-14 * np.linalg.norm(B, axis=0).max())
    if method == "direct":
        assert np.all(info.column_iterations == 0) and info.iterations == 0
    else:
        assert np.all(info.column_iterations >= 1)
        assert info.iterations == info.column_iterations.max()
    # gradients against the dense oracle (docs/design.md, several right-hand sides):
    # λ = A⁻ᵀ G, ∂L/∂b = λ, ∂L/∂A_ij = −Σ_m λ_im x_jm on the stored entries
    grad_A, grad_b = sol.vjp(G)
    lam = np.linalg.solve(D.T, G)
    rows, cols = entries(A)
    want_A = -np.einsum("em,em->e", lam[rows], x_want[cols])
    assert grad_b.shape == (N5, k) and grad_A.nnz == A.nnz
    np.testing.assert_array_equal(grad_A.indices, A.indices)
    assert_columns_close(grad_b, lam, 1e-9)
    np.testing.assert_allclose(grad_A.data, want_A, rtol=1e-9,
                               atol=1e-9 * np.abs(want_A).max())
    assert sol.adjoint_info.converged
    assert np.shape(sol.adjoint_info.residual_norm) == (k,)


# ---------------------------------------------------------------------------
# F4: out of memory in the factorization
# ---------------------------------------------------------------------------

def _out_of_memory(*args, **kwargs):
    raise MemoryError("Out of memory during gssv")  # what SciPy's SuperLU says


@pytest.mark.parametrize("symmetric,ordering", [(False, "COLAMD"),
                                                (True, "MMD_AT_PLUS_A")])
def test_factorization_out_of_memory_is_explained(monkeypatch, symmetric, ordering):
    """F4: a ``MemoryError`` naming the solver, n, nnz, the ordering, the fill-in
    and the alternatives, chained to SciPy's; the next call works again."""
    rng = np.random.default_rng(64)
    D = spd_system(rng, 10) if symmetric else nonsymmetric_system(rng, 10)
    A = sp.csr_array(D)
    b = rng.standard_normal(10)
    monkeypatch.setattr(spla, "splu", _out_of_memory)
    with pytest.raises(MemoryError) as e:
        sd.solve(A, b, method="direct")
    msg = str(e.value)
    for part in ("SuperLU", "n = 10", f"nnz = {A.nnz}", ordering, "fill-in",
                 "LU factors", "did not fit", "'cg'", "'gmres'", "'amg'", "'ilu'",
                 "Out of memory during gssv"):
        assert part in msg, (part, msg)
    assert isinstance(e.value.__cause__, MemoryError)
    assert str(e.value.__cause__) == "Out of memory during gssv"
    monkeypatch.undo()
    sol = sd.solve(A, b, method="direct")
    np.testing.assert_allclose(sol.x, np.linalg.solve(D, b), rtol=1e-12)


def test_factorization_out_of_memory_leaves_no_cache_entry(monkeypatch):
    """F4: a factorization that fails for lack of memory is not cached: the
    same engine tries again (and succeeds) on the next call."""
    rng = np.random.default_rng(640)
    D = nonsymmetric_system(rng, 10)
    A = sp.csr_array(D.astype(np.float32))
    b = rng.standard_normal(10)  # float64: needs a second, float64 factorization
    solver = sd.Solver(A, method="direct")
    engine = solver._state.engine
    assert isinstance(engine, DirectEngine)
    assert [np.dtype(d) for d in engine._factors] == [np.dtype(np.float32)]
    real = spla.splu
    calls = []

    def failing(*args, **kwargs):
        calls.append("fail")
        raise MemoryError

    monkeypatch.setattr(spla, "splu", failing)
    for _ in range(2):  # every call reaches splu again: nothing half-built
        with pytest.raises(MemoryError, match="did not fit"):
            solver.solve(b)
    assert calls == ["fail", "fail"]
    assert [np.dtype(d) for d in engine._factors] == [np.dtype(np.float32)]
    assert not engine.singular
    # float32 solves keep using the factor they have: splu is not called
    x32 = solver.solve(b.astype(np.float32)).x
    assert calls == ["fail", "fail"] and x32.dtype == np.float32

    def counting(*args, **kwargs):
        calls.append("ok")
        return real(*args, **kwargs)

    monkeypatch.setattr(spla, "splu", counting)
    sol = solver.solve(b)
    assert calls == ["fail", "fail", "ok"]
    assert sol.x.dtype == np.float64
    D64 = D.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(sol.x, np.linalg.solve(D64, b), rtol=1e-12)
    assert {np.dtype(d) for d in engine._factors} == {np.dtype(np.float32),
                                                       np.dtype(np.float64)}
    grad_A, grad_b = sol.vjp(np.ones(10))
    np.testing.assert_allclose(grad_b, np.linalg.solve(D64.T, np.ones(10)), rtol=1e-12)
    assert calls == ["fail", "fail", "ok"]  # the gradient reuses that factor


# ---------------------------------------------------------------------------
# F6: budgets
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", [40, 60])
@pytest.mark.parametrize("method", ["cg", "minres", "gmres", "bicgstab"])
def test_default_maxiter_is_ten_n(method, n):
    """F6: with no ``maxiter``, a solve that cannot converge stops after exactly
    10·n iterations (SciPy's and lineax's default)."""
    A = sp.diags_array(np.logspace(0, 12, n), format="csr")  # κ = 10¹²
    b = np.random.default_rng(66).standard_normal(n)
    with pytest.warns(sd.ConvergenceWarning, match="maxiter|converge"):
        sol = sd.solve(A, b, method=method, rtol=1e-10, on_failure="warn")
    assert not sol.info.converged and sol.info.reason == "maxiter"
    assert sol.info.iterations == 10 * n
    # (the relative residual is still ≥ 0.1 here: far from 1e-10, not borderline)
    assert sol.info.residual_norm > 1e-6 * np.linalg.norm(b)
    # an explicit budget is honoured exactly
    with pytest.warns(sd.ConvergenceWarning):
        sol = sd.solve(A, b, method=method, rtol=1e-10, maxiter=7, on_failure="warn")
    assert sol.info.iterations == 7 and sol.info.reason == "maxiter"


def test_gmres_memory_grows_linearly_with_restart():
    """F6: GMRES keeps ``restart + 1`` basis vectors: restart 80 against 10 adds
    70·n·8 bytes (10.7 MiB for n = 20,000; measured 9.1 MiB: 5.8 → 14.9 MiB)."""
    n = 20_000
    A = sp.diags_array([-1.2 * np.ones(n - 1), 4.0 * np.ones(n), -0.8 * np.ones(n - 1)],
                       offsets=[-1, 0, 1], format="csr")
    b = np.random.default_rng(67).standard_normal(n)
    sd.solve(A[:100, :100], b[:100], method="gmres")  # warm-up (JIT, imports)
    peaks = {}
    for restart in (10, 80, 10):
        with Traced() as t:
            sol = sd.solve(A, b, method=("gmres", {"restart": restart}))
            peaks.setdefault(restart, []).append(t.peak_since_start())
        assert sol.info.converged
        np.testing.assert_allclose(A @ sol.x, b, rtol=0,
                                   atol=1e-7 * np.linalg.norm(b))
    # reproducible: the same restart gives the same peak
    assert abs(peaks[10][0] - peaks[10][1]) <= 0.05 * peaks[10][0], peaks
    grown = peaks[80][0] - peaks[10][0]
    basis = 70 * n * 8
    assert 0.5 * basis <= grown <= 2.0 * basis, (grown / MiB, basis / MiB, peaks)
