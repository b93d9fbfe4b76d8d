"""Forward behaviour of the Krylov solvers: the matrix family, refusals, edge cases."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import sparsediff as sd
from sparsediff.solvers.cg import cg
from sparsediff.solvers.gmres import gmres

# every test runs on the CPU backend and on the reference backend (NumPy twins,
# Krylov flags read every 8 iterations): tests/conftest.py::backend
pytestmark = pytest.mark.usefixtures("backend")

METHODS = ("cg", "minres", "gmres", "bicgstab")


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def _available(name):
    import sparsediff.precond as pc

    return name is None or name in getattr(pc, "PRECONDITIONERS", {})


# ---------------------------------------------------------------------------
# the §(b) matrix family (scipy's IterativeParams, extended)
# ---------------------------------------------------------------------------


def _poisson1d(n=40, dtype=np.float64):
    return sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr",
                    dtype=dtype)


def _family():
    rng = np.random.default_rng(1234)
    fam = {}
    fam["poisson1d"] = _poisson1d()
    fam["poisson1d-F"] = _poisson1d(dtype=np.float32)
    fam["neg-poisson1d"] = -_poisson1d()
    p = _poisson1d(8)
    eye = sp.eye(8)
    fam["poisson2d"] = (sp.kron(p, eye) + sp.kron(eye, p)).tocsr()
    fam["rand-diag"] = sp.diags([6.0, -5, 2, 7, -1, 10, 4, -3, -8, 9], format="csr")
    a = rng.standard_normal((4, 4)) + 4 * np.eye(4)
    fam["rand"] = sp.csr_array(a)
    s = rng.standard_normal((6, 6))
    fam["rand-sym"] = sp.csr_array(s + s.T)
    q = rng.standard_normal((9, 9))
    fam["rand-sym-pd"] = sp.csr_array(q @ q.T + 9 * np.eye(9))
    c = rng.standard_normal((5, 5)) + 1j * rng.standard_normal((5, 5))
    fam["rand-cmplx"] = sp.csr_array(c + 5 * np.eye(5))
    fam["rand-cmplx-herm"] = sp.csr_array(c + c.conj().T)
    fam["rand-cmplx-sym-pd"] = sp.csr_array(c @ c.conj().T + 5 * np.eye(5))
    fam["nonsymposdef"] = sp.csr_array(np.eye(10) + np.diag(np.ones(9), 1))
    fam["cmplx-sym"] = sp.csr_array(c + c.T + 6 * np.eye(5))
    row = np.logspace(-8, 8, 10)
    fam["row-scaled"] = sp.csr_array(row[:, None] * (np.diag(np.full(10, 4.0))
                                                     + np.diag(np.ones(9), 1)))
    rows, cols = [0, 0, 1, 1, 1, 2, 2], [0, 1, 0, 1, 2, 1, 2]
    zm = sp.csr_array(([0.0, 1, 1, 0, 1, 1, 3], (rows, cols)), shape=(3, 3))
    fam["zero-diag"] = zm
    return fam


FAMILY = _family()

# which methods must converge on which family (scipy's table plus ours)
CONVERGE = {
    "poisson1d": METHODS,
    "poisson1d-F": ("cg", "gmres", "bicgstab"),
    "neg-poisson1d": ("minres", "gmres", "bicgstab"),
    "poisson2d": METHODS,
    "rand-diag": ("minres", "gmres", "bicgstab"),
    "rand": ("gmres", "bicgstab"),
    "rand-sym": ("minres", "gmres"),
    "rand-sym-pd": METHODS,
    "rand-cmplx": ("gmres", "bicgstab"),
    "rand-cmplx-herm": ("minres", "gmres"),
    "rand-cmplx-sym-pd": METHODS,
    "nonsymposdef": ("gmres", "bicgstab"),
    "cmplx-sym": ("gmres", "bicgstab"),
    "row-scaled": ("gmres", "bicgstab"),
    "zero-diag": ("gmres",),
}


def _preconds(fam, method):
    A = FAMILY[fam]
    d = A.diagonal()
    out = [None]
    hermitian_method = method in ("cg", "minres")
    if np.all(d.real > 0) or (not hermitian_method and np.all(d != 0)):
        out.append("jacobi")
    if not hermitian_method and np.all(d != 0):
        out.append("ilu")
    if fam in ("poisson1d", "poisson2d", "rand-sym-pd"):
        out.append("amg")
    return out


CASES = [(fam, meth, M) for fam, meths in CONVERGE.items() for meth in meths
         for M in _preconds(fam, meth)]


@pytest.mark.parametrize("fam, method, M", CASES,
                         ids=[f"{f}-{m}-{p}" for f, m, p in CASES])
def test_family_converges(fam, method, M, rng):
    if not _available(M):
        pytest.skip(f"preconditioner {M!r} not available")
    A = FAMILY[fam]
    n = A.shape[0]
    single = A.dtype == np.float32
    rtol = 1e-4 if single else 1e-10
    b = rng.standard_normal(n).astype(A.dtype)
    if A.dtype.kind == "c":
        b = b + 1j * rng.standard_normal(n)
    sol = sd.solve(A, b, method=method, M=M, rtol=rtol, maxiter=50 * n)
    assert sol.info.converged and sol.info.reason == "converged"
    assert sol.info.method == method + (f"+{M}" if M else "")
    res = np.linalg.norm(b - A @ sol.x)
    assert res <= rtol * np.linalg.norm(b) * (1 + 1e-6)
    # the reported residual is the recomputed true one; at rounding level the
    # two products may differ by their summation (NumPy's complex products fuse)
    eps = np.finfo(A.dtype).eps
    slack = float(8 * eps * (sp.linalg.norm(A) * np.linalg.norm(sol.x)
                             + np.linalg.norm(b)))
    assert sol.info.residual_norm == pytest.approx(res, rel=1e-3 if single else 1e-6,
                                                   abs=slack)
    ref = np.linalg.solve(A.toarray().astype(np.complex128), b)
    cond = np.linalg.cond(A.toarray())
    assert np.linalg.norm(sol.x - ref) <= 10 * cond * rtol * np.linalg.norm(ref)


def test_family_exercises_every_method():
    for method in METHODS:
        assert sum(method in v for v in CONVERGE.values()) >= 5


# ---------------------------------------------------------------------------
# refusals (A18, B3, B4)
# ---------------------------------------------------------------------------


def test_cg_minres_refuse_nonhermitian():
    A = sp.csr_array(np.array([[1.0, 1.0, 0], [0, 1.0, 0], [0, 0, 1.0]]))  # gh-9745
    for method in ("cg", "minres"):
        with pytest.raises(ValueError, match=rf"method='{method}' needs a Hermitian"):
            sd.solve(A, np.ones(3), method=method)
        with pytest.raises(ValueError, match="gmres"):
            sd.Solver(A, method=method)
    # complex symmetric is not Hermitian
    C = FAMILY["cmplx-sym"]
    with pytest.raises(ValueError, match="Hermitian"):
        sd.solve(C, np.ones(5), method="cg")


@pytest.mark.parametrize("method", ["cg", "minres"])
def test_nonhermitian_preconditioner_refused(method):
    if not _available("ilu"):
        pytest.skip("ilu not available")
    with pytest.raises(ValueError, match="Hermitian preconditioner"):
        sd.solve(_poisson1d(), np.ones(40), method=method, M="ilu")


def test_cg_indefinite_diagonal():
    A = sp.diags([1.0, -1, 2, -2, 3], format="csr")
    with pytest.raises(sd.ConvergenceError, match="indefinite"):
        sd.solve(A, np.ones(5), method="cg")
    with pytest.warns(sd.ConvergenceWarning):
        sol = sd.solve(A, np.ones(5), method="cg", on_failure="warn")
    assert sol.info.reason == "indefinite" and not sol.info.converged
    assert np.isfinite(sol.x).all()


def test_cg_indefinite_curvature():
    # positive diagonal, eigenvalues 3 and -1: pᴴ A p < 0 at the first step
    A = sp.csr_array(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.warns(sd.ConvergenceWarning):
        sol = sd.solve(A, np.array([1.0, -1.0]), method="cg", on_failure="warn")
    assert sol.info.reason == "indefinite"
    assert np.isfinite(sol.x).all()


# ---------------------------------------------------------------------------
# B6 scaling, B7 zero rhs, B8 exact x0, B9 breakdown, B12 multi-rhs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scale", [1e-10, 1e10])
def test_relative_stopping_test(method, scale, rng):
    A = _poisson1d()
    b = scale * rng.standard_normal(40)
    sol = sd.solve(A, b, method=method, rtol=1e-9)
    assert sol.info.converged
    assert np.linalg.norm(b - A @ sol.x) <= 1e-9 * np.linalg.norm(b)


@pytest.mark.parametrize("method", METHODS)
def test_zero_rhs(method, rng):
    A = _poisson1d()
    for x0 in (None, np.ones(40)):
        for rtol, atol in ((1e-8, 0.0), (0.0, 0.0)):
            b = np.zeros(40)
            sol = sd.solve(A, b, method=method, x0=x0, rtol=rtol, atol=atol,
                           maxiter=100)
            assert np.all(sol.x == 0) and sol.info.converged
            assert sol.info.iterations == 0
            assert not np.shares_memory(sol.x, b)
    B = rng.standard_normal((40, 3))
    B[:, 1] = 0
    sol = sd.solve(A, B, method=method, rtol=1e-10, maxiter=5000)
    assert np.all(sol.x[:, 1] == 0)
    assert sol.info.column_converged.all()
    assert sol.info.column_iterations[1] == 0
    g = rng.standard_normal(40)
    zero = sd.solve(A, np.zeros(40), method=method, rtol=1e-12, maxiter=5000)
    grad_A, grad_b = zero.vjp(g)
    assert np.all(grad_A.data == 0)
    np.testing.assert_allclose(grad_b, np.linalg.solve(A.toarray().T, g), rtol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_exact_x0(method, rng):
    A = FAMILY["rand-sym-pd"]
    xs = rng.standard_normal(9)
    b = A @ xs
    x0 = np.linalg.solve(A.toarray(), b)
    calls = []
    sol = sd.solve(A, b, method=method, x0=x0, callback=calls.append)
    assert sol.info.iterations == 0 and sol.info.converged and calls == []
    np.testing.assert_array_equal(sol.x, x0)
    assert not np.shares_memory(sol.x, x0)


class _Diag:
    """A caller's preconditioner with a defective diagonal."""

    def __init__(self, d):
        self.d = np.asarray(d, dtype=float)
        self.shape = (len(d), len(d))
        self.dtype = np.dtype(float)

    def matvec(self, x):
        return self.d * x

    def rmatvec(self, x):
        return self.d * x


@pytest.mark.parametrize("method", ["gmres", "bicgstab"])
def test_breakdown_cases_stay_finite(method):
    # defective preconditioner (scipy test_defective_precond_breakdown)
    A = sp.csr_array(np.eye(3))
    b = np.array([1.0, 2.0, 3.0])
    cases = [(A, b, _Diag([1.0, 1.0, 0.0])),
             # defective matrix (scipy test_defective_matrix_breakdown)
             (sp.csr_array(np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 0]])),
              np.array([1.0, 0.0, 1.0]), None)]
    for A, b, M in cases:
        sol = sd.solve(A, b, method=method, M=M, maxiter=20, on_failure="nan")
        if sol.info.converged:
            assert np.linalg.norm(b - A @ sol.x) <= 1e-8 * np.linalg.norm(b)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sd.ConvergenceWarning)
            sol = sd.solve(A, b, method=method, M=M, maxiter=20, on_failure="warn")
        assert np.isfinite(sol.x).all()
        assert sol.info.reason in ("breakdown", "stagnation", "maxiter", "converged")
        if sol.info.converged:
            assert np.linalg.norm(b - A @ sol.x) <= 1e-8 * np.linalg.norm(b)


def test_bicgstab_breakdown_reason():
    A = sp.csr_array(np.array([[0.0, 1.0], [1.0, 0.0]]))
    with pytest.warns(sd.ConvergenceWarning):
        sol = sd.solve(A, np.array([1.0, 0.0]), method="bicgstab", on_failure="warn")
    assert sol.info.reason == "breakdown" and np.isfinite(sol.x).all()


@pytest.mark.parametrize("method", METHODS)
def test_multi_rhs_per_column(method, rng):
    A = _poisson1d(60)
    Ad = A.toarray()
    w, V = np.linalg.eigh(Ad)
    B = np.column_stack([V[:, 0], rng.standard_normal(60),
                         V[:, :3] @ np.ones(3), np.zeros(60)])
    sol = sd.solve(A, B, method=method, rtol=1e-10, maxiter=5000)
    info = sol.info
    assert info.column_converged.shape == (4,) and info.column_converged.all()
    its = info.column_iterations
    assert its[0] <= 2 and its[3] == 0 and its[2] < its[1]
    res = np.linalg.norm(B - A @ sol.x, axis=0)
    np.testing.assert_allclose(info.residual_norm, res, rtol=1e-6, atol=1e-300)
    assert np.all(res <= 1e-10 * np.linalg.norm(B, axis=0) + 1e-300)
    # the same answer column by column
    for c in range(3):
        one = sd.solve(A, B[:, c], method=method, rtol=1e-10, maxiter=5000)
        np.testing.assert_allclose(sol.x[:, c], one.x, rtol=1e-7, atol=1e-12)


# ---------------------------------------------------------------------------
# §(c) non-convergence
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_maxiter_policy_and_callback(method, rng):
    A = _poisson1d(200)
    b = rng.standard_normal(200)
    with pytest.raises(sd.ConvergenceError, match="maxiter") as exc:
        sd.solve(A, b, method=method, maxiter=5)
    assert exc.value.args
    calls = []
    with pytest.warns(sd.ConvergenceWarning):
        sol = sd.solve(A, b, method=method, maxiter=5, on_failure="warn",
                       callback=lambda xk: calls.append(xk.copy()))
    assert not sol.info.converged and sol.info.reason == "maxiter"
    assert sol.info.iterations == 5 and len(calls) == 5
    assert calls[0].shape == (200,)
    np.testing.assert_array_equal(calls[-1], sol.x)
    nan = sd.solve(A, b, method=method, maxiter=5, on_failure="nan")
    assert np.isnan(nan.x).all()
    calls.clear()
    sd.solve(A, b, method=method, maxiter=1, on_failure="nan", callback=calls.append)
    assert len(calls) == 1


@pytest.mark.parametrize("method", METHODS)
def test_callback_exception_propagates(method, rng):
    A = _poisson1d()
    solver = sd.Solver(A, method=method)
    b = rng.standard_normal(40)

    class Stop(Exception):
        pass

    err = Stop("from the callback")

    def cb(xk):
        if cb.n == 2:
            raise err
        cb.n += 1

    cb.n = 0
    with pytest.raises(Stop) as exc:
        solver.solve(b, callback=cb)
    assert exc.value is err
    sol = solver.solve(b)
    assert sol.info.converged


@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_mid_iteration(method, rng):
    A = _poisson1d()

    class Poison:
        shape, dtype, hermitian = (40, 40), np.dtype(float), True

        def __init__(self):
            self.calls = 0

        def matvec(self, x):
            self.calls += 1
            return x * (np.nan if self.calls > 3 else 1.0)

        rmatvec = matvec

    with pytest.warns(sd.ConvergenceWarning):
        sol = sd.solve(A, rng.standard_normal(40), method=method, M=Poison(),
                       on_failure="warn")
    assert sol.info.reason == "nonfinite" and sol.info.iterations <= 4


def test_minres_singular_inconsistent():
    A = sp.diags([1.0, 2.0, 3.0, 0.0], format="csr")
    with pytest.warns(sd.ConvergenceWarning):
        sol = sd.solve(A, np.ones(4), method="minres", on_failure="warn")
    assert not sol.info.converged
    assert sol.info.reason in ("singular", "breakdown", "stagnation")
    assert sol.info.iterations < 40


def test_gmres_stagnation():
    # GMRES(1) on a rotation makes no progress at all (A r ⟂ r)
    A = sp.csr_array(np.array([[0.0, 1.0], [-1.0, 0.0]]))
    with pytest.warns(sd.ConvergenceWarning):
        sol = sd.solve(A, np.array([1.0, 0.0]), method=("gmres", {"restart": 1}),
                       on_failure="warn")
    assert sol.info.reason == "stagnation" and sol.info.iterations < 20


def test_gmres_restart_option(rng):
    A = FAMILY["nonsymposdef"]
    b = rng.standard_normal(10)
    full = sd.solve(A, b, method=("gmres", {"restart": 10}), rtol=1e-10)
    short = sd.solve(A, b, method=("gmres", {"restart": 2}), rtol=1e-10,
                     maxiter=2000)
    assert full.info.converged and short.info.converged
    assert full.info.iterations <= 10 < short.info.iterations


# ---------------------------------------------------------------------------
# trans, dtypes, matrix-free entry points
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_trans_and_promotion(method, trans, rng):
    herm = method in ("cg", "minres")
    A = FAMILY["rand-cmplx-sym-pd" if herm else "rand-cmplx"]
    Ad = A.toarray()
    op = {"N": Ad, "T": Ad.T, "H": Ad.conj().T}[trans]
    b = rng.standard_normal(5) + 1j * rng.standard_normal(5)
    x = sd.Solver(A, method=method, rtol=1e-11).solve(b, trans=trans).x
    np.testing.assert_allclose(op @ x, b, rtol=1e-9, atol=1e-9)
    # real float32 matrix, complex128 right-hand side: no downcast
    R = FAMILY["rand-sym-pd"].astype(np.float32)
    b = rng.standard_normal(9) + 1j * rng.standard_normal(9)
    sol = sd.Solver(R, method=method, rtol=1e-11).solve(b, trans=trans)
    assert sol.x.dtype == np.complex128
    np.testing.assert_allclose(R.toarray().astype(float) @ sol.x, b, rtol=1e-9,
                               atol=1e-9)


def test_matrix_free_entry_points(rng):
    A = _poisson1d()

    class Op:
        shape, dtype = A.shape, A.dtype

        def matvec(self, X):
            return A @ X

    B = rng.standard_normal((40, 2))
    for f in (cg, gmres):
        x, info = f(Op(), B, rtol=1e-10)
        assert info.converged and info.column_converged.shape == (2,)
        np.testing.assert_allclose(A @ x, B, atol=1e-8)
    from scipy.sparse.linalg import aslinearoperator

    x, info = gmres(aslinearoperator(A), B, restart=5, rtol=1e-10, maxiter=4000)
    assert info.converged
    with pytest.raises(ValueError, match="restart"):
        gmres(Op(), B, restart=0)
    with pytest.raises(ValueError, match="shape"):
        cg(Op(), B[:, 0])


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


def test_bad_input(rng):
    A = _poisson1d()
    b = np.ones(40)
    with pytest.raises(ValueError, match="`method` must be one of"):
        sd.solve(A, b, method="lgmres")
    with pytest.raises(ValueError, match="`restart` must be >= 1; got 0"):
        sd.solve(A, b, method=("gmres", {"restart": 0}))
    with pytest.raises(TypeError, match="`restart` must be an integer"):
        sd.solve(A, b, method=("gmres", {"restart": 2.5}))
    with pytest.raises(ValueError, match="unknown"):
        sd.solve(A, b, method=("cg", {"restart": 5}))
    with pytest.raises(ValueError, match="rtol"):
        sd.solve(A, b, method="cg", rtol=-1.0)
    with pytest.raises(ValueError, match="atol"):
        sd.solve(A, b, method="gmres", atol=-1.0)
    with pytest.raises(ValueError, match="shape"):
        sd.solve(A, b, method="gmres", M=sp.eye(39, format="csr"))
    with pytest.raises(ValueError, match="x0"):
        sd.solve(A, b, method="cg", x0=np.ones(39))
    with pytest.raises(ValueError, match="has no meaning"):
        sd.solve(A, b, method="direct", M="jacobi")


def test_solver_update_rechecks_symmetry(rng):
    A = _poisson1d()
    solver = sd.Solver(A, method="cg", M="jacobi" if _available("jacobi") else None)
    data = A.data.copy()
    data[1] += 0.5  # breaks the symmetry
    with pytest.raises(ValueError, match="Hermitian"):
        solver.update(data)
    solver.update(2 * A.data)
    b = rng.standard_normal(40)
    np.testing.assert_allclose(2 * A @ solver.solve(b).x, b, atol=1e-6)
