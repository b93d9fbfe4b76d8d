"""Preconditioners: adjoint/transpose correctness, flags, updates, bad input."""

import hashlib
import importlib.util
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from sparsediff._errors import NonFiniteInputError, SingularMatrixError
from sparsediff._validation import as_matrix
from sparsediff.precond import (
    AMG,
    ILU,
    Jacobi,
    Preconditioner,
    UserPreconditioner,
    make_preconditioner,
)

FUNC = "sparsediff.solve"
BUILTIN = ("jacobi", "ilu", "amg")


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


# ---------------------------------------------------------------------------
# Test matrices
# ---------------------------------------------------------------------------


def poisson(N):
    eye = sp.eye(N, format="csr")
    d2 = sp.diags_array([-1.0, 2.0, -1.0], offsets=[-1, 0, 1], shape=(N, N))
    return sp.csr_array(sp.kron(eye, d2) + sp.kron(d2, eye))


def convection_diffusion(N, pe):
    """Upwind −Δu + β·∇u on N² points: non-symmetric, nonzero diagonal."""
    h = 1.0 / (N + 1)
    eye = sp.eye(N, format="csr")
    d2 = sp.diags_array([-1.0, 2.0, -1.0], offsets=[-1, 0, 1], shape=(N, N)) / h**2
    d1 = sp.diags_array([-1.0, 1.0], offsets=[-1, 0], shape=(N, N)) / h
    bx, by = pe * np.cos(0.3), pe * np.sin(0.3)
    return sp.csr_array(sp.kron(eye, d2) + sp.kron(d2, eye)
                        + bx * sp.kron(eye, d1) + by * sp.kron(d1, eye))


def magnetic_laplacian(N, seed=0):
    """Complex Hermitian positive definite: Poisson with phases on the edges."""
    A = poisson(N)
    upper = sp.triu(A, k=1).tocoo()
    phase = np.exp(1j * np.random.default_rng(seed).uniform(0.0, 0.6, upper.nnz))
    U = sp.csr_array((upper.data * phase, (upper.row, upper.col)), shape=A.shape)
    return sp.csr_array(U + U.conj().T + sp.diags_array(A.diagonal() + 0.05 + 0j))


def matrix(kind, N=16):
    if kind == "spd":
        return poisson(N)
    if kind == "nonsym":
        return convection_diffusion(N, 50.0)
    if kind == "hermitian":
        return magnetic_laplacian(N)
    if kind == "complex_nonsym":
        A = convection_diffusion(N, 50.0)
        return sp.csr_array(A * (1.0 + 0.3j) + 2j * sp.eye(A.shape[0]))
    raise AssertionError(kind)


KINDS = ("spd", "nonsym", "hermitian", "complex_nonsym")


def build(name, A, **options):
    mat = as_matrix(A, FUNC)
    M = name if not options else (name, options)
    return make_preconditioner(M, mat, FUNC)


def rand(rng, shape, complex_=True):
    x = rng.standard_normal(shape)
    if complex_:
        x = x + 1j * rng.standard_normal(shape)
    return x


def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def gmres_its(A, b, apply_m=None):
    n = A.shape[0]
    M = None if apply_m is None else spla.LinearOperator(
        (n, n), matvec=apply_m, dtype=np.result_type(A.dtype, b.dtype))
    count = [0]

    def cb(_):
        count[0] += 1

    x, info = spla.gmres(A, b, M=M, rtol=1e-8, atol=0.0, restart=50, maxiter=10,
                         callback=cb, callback_type="pr_norm")
    return count[0], info


# ---------------------------------------------------------------------------
# Adjoint and transpose: ⟨M u, v⟩ = ⟨u, Mᴴ v⟩ and ⟨M u, v⟩_T = ⟨u, Mᵀ v⟩
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", BUILTIN)
def test_adjoint_and_transpose_identities(name, kind, rng):
    A = matrix(kind)
    # a small coarsest level, so that the AMG cycle has several levels to transpose
    P = build(name, A, max_coarse=10) if name == "amg" else build(name, A)
    assert isinstance(P, Preconditioner) and P.name == name and P.has_adjoint
    if name == "amg":
        assert P.levels >= 3
    n = A.shape[0]
    u, v = rand(rng, (n, 3)), rand(rng, (n, 3))
    Mu = P.matvec(u)
    scale = np.linalg.norm(Mu) * np.linalg.norm(v)
    # sesquilinear: the adjoint used by solves with Aᴴ
    assert abs(np.vdot(Mu, v) - np.vdot(u, P.rmatvec(v))) <= 1e-12 * scale
    # bilinear: the transpose used by solves with Aᵀ
    assert abs(np.sum(Mu * v) - np.sum(u * P.tmatvec(v))) <= 1e-12 * scale
    np.testing.assert_allclose(P.tmatvec(v), np.conj(P.rmatvec(np.conj(v))),
                               rtol=1e-12, atol=1e-12 * np.abs(P.tmatvec(v)).max())
    # apply() dispatches to the same three operators
    np.testing.assert_array_equal(P.apply(v, "H"), P.rmatvec(v))
    np.testing.assert_array_equal(P.apply(v, "T"), P.tmatvec(v))


@pytest.mark.parametrize("name", BUILTIN)
def test_adjoint_real_vectors_float64(name, rng):
    A = matrix("nonsym")
    P = build(name, A)
    n = A.shape[0]
    u, v = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    Mu = P.matvec(u)
    assert Mu.dtype == np.float64
    lhs, rhs = np.sum(Mu * v), np.sum(u * P.rmatvec(v))
    assert abs(lhs - rhs) <= 1e-12 * np.linalg.norm(Mu) * np.linalg.norm(v)
    np.testing.assert_array_equal(P.tmatvec(v), P.rmatvec(v))


@pytest.mark.parametrize("name", BUILTIN)
def test_matches_dense_operator(name, rng):
    """The N, T and H applications are one linear operator and its (conj) transpose."""
    A = matrix("complex_nonsym", N=7)
    P = build(name, A)
    n = A.shape[0]
    E = np.eye(n)
    Mden = P.matvec(E)
    np.testing.assert_allclose(P.rmatvec(E), Mden.conj().T, atol=1e-12 * abs(Mden).max())
    np.testing.assert_allclose(P.tmatvec(E), Mden.T, atol=1e-12 * abs(Mden).max())
    x = rand(rng, (n, 2))
    np.testing.assert_allclose(P.matvec(x), Mden @ x, atol=1e-12 * abs(Mden).max() * n)


# ---------------------------------------------------------------------------
# Hermitian flags
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind,expected", [("spd", True), ("hermitian", True),
                                           ("nonsym", False), ("complex_nonsym", False)])
def test_amg_hermitian_flag(kind, expected, rng):
    A = matrix(kind)
    P = build("amg", A, max_coarse=10)
    assert P.hermitian is expected
    n = A.shape[0]
    v = rand(rng, (n, 2))
    if expected:
        np.testing.assert_array_equal(P.rmatvec(v), P.matvec(v))
        # an SPD/HPD preconditioner (needed by CG): ⟨u, M u⟩ real and positive
        q = np.einsum("ij,ij->j", v.conj(), P.matvec(v))
        assert np.all(q.real > 0) and np.all(np.abs(q.imag) <= 1e-12 * q.real)
        assert P.levels >= 3
    else:
        assert not np.allclose(P.rmatvec(v), P.matvec(v))


def test_amg_nearly_hermitian_is_symmetrized(rng):
    A = poisson(16)
    noise = sp.csr_array((A.data * (1 + 1e-16 * rng.standard_normal(A.nnz)),
                          A.indices, A.indptr), shape=A.shape)
    assert abs(noise - noise.T).max() > 0
    assert build("amg", noise).hermitian
    assert not build("amg", noise, symmetry="nonsymmetric").hermitian
    # forcing Hermitian on a non-symmetric A builds from (A + Aᴴ)/2
    assert build("amg", matrix("nonsym"), symmetry="hermitian").hermitian


def test_jacobi_hermitian_flag():
    assert build("jacobi", matrix("nonsym")).hermitian  # real diagonal: D⁻¹ = D⁻ᴴ
    assert build("jacobi", matrix("hermitian")).hermitian
    P = build("jacobi", matrix("complex_nonsym"))
    assert not P.hermitian
    A = matrix("complex_nonsym")
    d = A.diagonal()
    x = np.ones((A.shape[0], 1))
    np.testing.assert_allclose(P.matvec(x)[:, 0], 1 / d, rtol=1e-15)
    np.testing.assert_allclose(P.rmatvec(x)[:, 0], 1 / np.conj(d), rtol=1e-15)
    assert build("jacobi", matrix("spd")).positive
    assert not build("jacobi", -matrix("spd")).positive


@pytest.mark.parametrize("kind", KINDS)
def test_ilu_is_never_hermitian(kind):
    assert build("ilu", matrix(kind)).hermitian is False


# ---------------------------------------------------------------------------
# AMG: the exact adjoint is a good preconditioner for Aᴴ; linear; robust layout
# ---------------------------------------------------------------------------


def test_amg_adjoint_preconditions_adjoint_system(rng):
    A = convection_diffusion(24, 100.0)
    P = build("amg", A)
    assert not P.hermitian
    AH = sp.csr_array(A.conj().T)
    g = rng.standard_normal(A.shape[0])
    its_none, _ = gmres_its(AH, g)
    its_adj, info = gmres_its(AH, g, lambda x: P.rmatvec(x))
    its_fwd, info_f = gmres_its(A, g, lambda x: P.matvec(x))
    assert info == 0 and info_f == 0
    assert its_adj < its_none / 5
    # Mᴴ Aᴴ is the adjoint of A M: the same spectrum, about the same iterations
    assert abs(its_adj - its_fwd) <= 2


def test_amg_is_linear_and_columnwise(rng):
    P = build("amg", matrix("complex_nonsym"))
    n = P.shape[0]
    X = rand(rng, (n, 3))
    a, b = 0.7 - 0.2j, -1.3
    Y = P.matvec(X)
    np.testing.assert_allclose(P.matvec(a * X[:, 0] + b * X[:, 1]),
                               a * Y[:, 0] + b * Y[:, 1], rtol=1e-12, atol=1e-12)
    for j in range(3):
        np.testing.assert_array_equal(P.matvec(X[:, j]), Y[:, j])
        np.testing.assert_array_equal(P.rmatvec(X[:, j]), P.rmatvec(X)[:, j])


@pytest.mark.parametrize("name", BUILTIN)
def test_layout_of_x_does_not_matter(name, rng):
    """Strided, Fortran-ordered and read-only blocks give the same result."""
    A = matrix("nonsym")
    P = build(name, A)
    n = A.shape[0]
    big = rng.standard_normal((n, 6))
    X = np.ascontiguousarray(big[:, ::2])
    ref = P.matvec(X)
    ro = X.copy()
    ro.setflags(write=False)
    for Xv in (big[:, ::2], np.asfortranarray(X), ro, big[::-1][::-1, ::2]):
        np.testing.assert_array_equal(P.matvec(Xv), ref)
        np.testing.assert_array_equal(P.rmatvec(Xv), P.rmatvec(X))


def test_amg_warnings_are_surfaced(monkeypatch):
    import pyamg

    real = pyamg.smoothed_aggregation_solver

    def noisy(*args, **kwargs):
        warnings.warn("weak coarsening", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pyamg, "smoothed_aggregation_solver", noisy)
    with pytest.warns(UserWarning, match=r"`sparsediff\.solve`: pyamg setup: weak"):
        build("amg", matrix("spd"))


def test_amg_single_level_is_exact_inverse(rng):
    A = poisson(5)  # n = 25 < max_coarse: one level, dense pseudo-inverse
    P = build("amg", A)
    assert P.levels == 1
    x = rng.standard_normal((25, 2))
    np.testing.assert_allclose(A @ P.matvec(x), x, atol=1e-12)


# ---------------------------------------------------------------------------
# Exact inverse as a user preconditioner
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", ["superlu", "linear_operator"])
def test_exact_inverse_user_preconditioner(wrap, rng):
    A = matrix("complex_nonsym", N=8)
    lu = spla.splu(sp.csc_array(A))
    n = A.shape[0]
    if wrap == "superlu":
        M = lu
    else:
        M = spla.LinearOperator((n, n), matvec=lu.solve,
                                rmatvec=lambda x: lu.solve(x, trans="H"), dtype=A.dtype)
    P = make_preconditioner(M, as_matrix(A, FUNC), FUNC)
    assert P.name == "user" and P.has_adjoint
    X = rand(rng, (n, 2))
    np.testing.assert_allclose(A @ P.matvec(X), X, atol=1e-10)
    np.testing.assert_allclose(A.conj().T @ P.rmatvec(X), X, atol=1e-10)
    np.testing.assert_allclose(A.T @ P.tmatvec(X), X, atol=1e-10)


@pytest.mark.skipif(importlib.util.find_spec("sparsediff.solvers.cg") is None,
                    reason="Krylov solvers not available yet")
@pytest.mark.parametrize("method", ["cg", "gmres"])
def test_exact_inverse_converges_at_once(method, rng):
    import sparsediff as sd

    A = poisson(12)
    lu = spla.splu(sp.csc_array(A))
    n = A.shape[0]
    M = spla.LinearOperator((n, n), matvec=lu.solve,
                            rmatvec=lambda x: lu.solve(x, trans="T"), dtype=A.dtype)
    M.hermitian = True
    b = rng.standard_normal(n)
    try:
        sol = sd.solve(A, b, method=method, M=M, rtol=1e-10)
    except NotImplementedError:
        pytest.skip(f"method={method!r} is not wired into sparsediff.solve yet")
    assert sol.info.converged
    assert sol.info.iterations <= 3
    np.testing.assert_allclose(A @ sol.x, b, atol=1e-8)


# ---------------------------------------------------------------------------
# Inputs never modified, outputs never alias
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN)
def test_inputs_untouched(name, rng):
    A = convection_diffusion(14, 20.0)
    # the caller's COO: shuffled entries and one entry split into a duplicate
    coo = A.tocoo()
    perm = rng.permutation(coo.nnz)
    rows = np.concatenate([coo.row[perm], coo.row[perm][:1]])
    cols = np.concatenate([coo.col[perm], coo.col[perm][:1]])
    vals = np.concatenate([coo.data[perm], coo.data[perm][:1] * 0.5])
    vals[0] *= 0.5
    B = sp.coo_array((vals, (rows, cols)), shape=A.shape)
    before = digest(B.data, B.row, B.col)
    mat = as_matrix(B, FUNC)
    mat_before = digest(mat.data, mat.indices, mat.indptr)
    P = make_preconditioner(name, mat, FUNC)
    X = rng.standard_normal((A.shape[0], 2))
    X.setflags(write=False)
    x_before = digest(X)
    for op in (P.matvec, P.rmatvec, P.tmatvec):
        Y = op(X)
        assert not np.shares_memory(Y, X)
    P2 = P.update(mat.with_data(mat.data * 2.0))
    P2.matvec(X)
    assert digest(B.data, B.row, B.col) == before
    assert digest(X) == x_before
    assert digest(mat.data, mat.indices, mat.indptr) == mat_before


def test_user_inputs_untouched_and_no_alias(rng):
    A = poisson(6)
    n = A.shape[0]
    Mdense = rng.standard_normal((n, n))
    Msp = sp.csr_array(Mdense)
    snap = digest(Mdense, Msp.data, Msp.indices, Msp.indptr)

    class Identity:
        shape = (n, n)

        def matvec(self, x):
            x *= 1.0  # a careless operator that writes into its argument
            return x

        def rmatvec(self, x):
            return x

    X = rng.standard_normal((n, 2))
    x_snap = digest(X)
    for M in (Mdense, Msp, Identity()):
        P = make_preconditioner(M, as_matrix(A, FUNC), FUNC)
        for op in (P.matvec, P.rmatvec, P.tmatvec):
            Y = op(X)
            assert not np.shares_memory(Y, X)
    assert digest(Mdense, Msp.data, Msp.indices, Msp.indptr) == snap
    assert digest(X) == x_snap
    # a copy of an explicit matrix is kept: later edits by the caller do not leak
    P = make_preconditioner(Mdense, as_matrix(A, FUNC), FUNC)
    before = P.matvec(X)
    Mdense[0, 0] += 1.0
    np.testing.assert_array_equal(P.matvec(X), before)


# ---------------------------------------------------------------------------
# update() equals a fresh build
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["spd", "nonsym", "hermitian"])
@pytest.mark.parametrize("name", BUILTIN)
def test_update_equals_fresh_build(name, kind, rng):
    A = matrix(kind)
    mat = as_matrix(A, FUNC)
    P = make_preconditioner(name, mat, FUNC)
    n = A.shape[0]
    # new values on the same pattern (row scaling by a smooth positive field)
    s = 1.0 + 0.5 * np.sin(np.linspace(0.0, 3.0, n))
    mat2 = mat.with_data(mat.data * s[mat.rows])
    fresh = make_preconditioner(name, mat2, FUNC)
    upd = P.update(mat2)
    assert type(upd) is type(fresh) and upd.hermitian == fresh.hermitian
    X = rand(rng, (n, 2))
    if name != "amg":
        np.testing.assert_array_equal(upd.matvec(X), fresh.matvec(X))
        np.testing.assert_array_equal(upd.rmatvec(X), fresh.rmatvec(X))
    else:
        # the aggregates are kept, so compare with a fresh build on them ...
        same_aggs = AMG(mat2, func=FUNC, aggregates=P._aggregates)
        np.testing.assert_allclose(upd.matvec(X), same_aggs.matvec(X), rtol=1e-13,
                                   atol=1e-13 * abs(same_aggs.matvec(X)).max())
        # ... and with the same values, a fresh build from scratch
        np.testing.assert_allclose(P.update(mat).matvec(X), P.matvec(X), rtol=1e-10,
                                   atol=1e-10 * abs(P.matvec(X)).max())
        nofresh = AMG(mat, func=FUNC, reuse="none")
        np.testing.assert_allclose(nofresh.update(mat2).matvec(X), fresh.matvec(X),
                                   rtol=1e-13, atol=1e-13 * abs(fresh.matvec(X)).max())
        # the updated one is a valid preconditioner for the new matrix
        A2 = mat2.to_scipy()
        b = rng.standard_normal(n)
        its_upd, info = gmres_its(A2, b, upd.matvec)
        its_fresh, _ = gmres_its(A2, b, fresh.matvec)
        assert info == 0 and its_upd <= its_fresh + 2


def test_update_of_user_preconditioner_is_itself():
    A = poisson(4)
    P = make_preconditioner(sp.eye(16, format="csr"), as_matrix(A, FUNC), FUNC)
    assert P.update(as_matrix(A * 2, FUNC)) is P


# ---------------------------------------------------------------------------
# dtypes: promotion, complex right-hand sides, float32
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN)
def test_real_preconditioner_complex_block(name, rng):
    A = matrix("nonsym")
    P = build(name, A)
    n = A.shape[0]
    x, y = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    for op in (P.matvec, P.rmatvec, P.tmatvec):
        Z = op(x + 1j * y)
        assert Z.dtype == np.complex128
        np.testing.assert_allclose(Z, op(x) + 1j * op(y), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", BUILTIN)
def test_float32_matrix_promotes(name, rng):
    A = matrix("nonsym").astype(np.float32)
    P = build(name, A)
    assert P.dtype == np.float32
    n = A.shape[0]
    x32 = rng.standard_normal((n, 2)).astype(np.float32)
    assert P.matvec(x32).dtype == np.float32
    y64 = P.matvec(x32.astype(np.float64))
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, P.matvec(x32), rtol=1e-4,
                               atol=1e-4 * abs(y64).max())
    assert P.matvec(x32.astype(np.complex64)).dtype == np.complex64
    u, v = rng.standard_normal((n, 1)), rng.standard_normal((n, 1))
    lhs, rhs = np.vdot(P.matvec(u), v), np.vdot(u, P.rmatvec(v))
    assert abs(lhs - rhs) <= 1e-12 * np.linalg.norm(P.matvec(u)) * np.linalg.norm(v)


def test_complex_matrix_real_block(rng):
    A = matrix("hermitian")
    for name in BUILTIN:
        P = build(name, A)
        x = rng.standard_normal((A.shape[0], 1))
        Y = P.matvec(x)
        assert Y.dtype == np.complex128
        np.testing.assert_allclose(Y, P.matvec(x.astype(complex)), rtol=1e-14)


def test_user_dtype_promotion(rng):
    A = poisson(4)
    n = 16
    M32 = sp.eye(n, format="csr", dtype=np.float32) * 0.5
    P = make_preconditioner(M32, as_matrix(A, FUNC), FUNC)
    assert P.matvec(np.ones(n)).dtype == np.float64
    assert P.matvec(np.ones(n, np.complex64)).dtype == np.complex64

    class NoDtype:
        def matvec(self, x):
            return (1 + 1j) * x  # complex output for a real input: kept

    P = make_preconditioner(NoDtype(), as_matrix(A, FUNC), FUNC)
    np.testing.assert_array_equal(P.matvec(np.ones((n, 2))), np.full((n, 2), 1 + 1j))
    assert not P.has_adjoint


# ---------------------------------------------------------------------------
# User objects
# ---------------------------------------------------------------------------


def test_user_vector_only_matvec_is_applied_per_column(rng):
    A = poisson(4)
    n = 16
    d = rng.uniform(1.0, 2.0, n)

    class Diag:
        shape = (n, n)
        dtype = np.float64
        calls = 0

        def matvec(self, x):
            assert x.ndim == 1
            Diag.calls += 1
            return d * x

    P = make_preconditioner(Diag(), as_matrix(A, FUNC), FUNC)
    X = rng.standard_normal((n, 3))
    np.testing.assert_allclose(P.matvec(X), d[:, None] * X)
    assert Diag.calls == 3
    assert not P.has_adjoint and not P.hermitian
    with pytest.raises(TypeError, match="has no adjoint"):
        P.rmatvec(X)
    # a promise of hermiticity gives the adjoint for free
    Diag.hermitian = True
    P = make_preconditioner(Diag(), as_matrix(A, FUNC), FUNC)
    assert P.hermitian and P.has_adjoint
    np.testing.assert_allclose(P.rmatvec(X), d[:, None] * X)


def test_user_transpose_only(rng):
    n = 16
    A = poisson(4)
    G = rand(rng, (n, n))

    class Op:
        shape = (n, n)
        dtype = np.complex128

        def __init__(self, m):
            self.m = m

        def matvec(self, x):
            return self.m @ x

        @property
        def T(self):
            return Op(self.m.T)

    P = make_preconditioner(Op(G), as_matrix(A, FUNC), FUNC)
    assert P.has_adjoint
    X = rand(rng, (n, 2))
    np.testing.assert_allclose(P.tmatvec(X), G.T @ X, rtol=1e-13)
    np.testing.assert_allclose(P.rmatvec(X), G.conj().T @ X, rtol=1e-13)


def test_user_linear_operator_adjoint_detection(rng):
    n = 16
    A = poisson(4)
    G = rng.standard_normal((n, n))
    with_adj = spla.aslinearoperator(G)
    P = make_preconditioner(with_adj, as_matrix(A, FUNC), FUNC)
    assert P.has_adjoint
    X = rng.standard_normal((n, 2))
    np.testing.assert_allclose(P.rmatvec(X), G.T @ X)
    fwd_only = spla.LinearOperator((n, n), matvec=lambda x: G @ x, dtype=float)
    P = make_preconditioner(fwd_only, as_matrix(A, FUNC), FUNC)
    assert not P.has_adjoint
    np.testing.assert_allclose(P.matvec(X), G @ X)


def test_user_matrices_hermitian_detection(rng):
    n = 16
    A = poisson(4)
    G = rand(rng, (n, n))
    H = G + G.conj().T
    for M, expected in ((H, True), (sp.csr_array(H), True), (G, False),
                        (sp.csr_array(G), False), (poisson(4), True)):
        P = make_preconditioner(M, as_matrix(A, FUNC), FUNC)
        assert P.hermitian is expected and P.has_adjoint
        X = rand(rng, (n, 2))
        Md = M.toarray() if sp.issparse(M) else M
        np.testing.assert_allclose(P.matvec(X), Md @ X, rtol=1e-13)
        np.testing.assert_allclose(P.rmatvec(X), Md.conj().T @ X, rtol=1e-13)
        np.testing.assert_allclose(P.tmatvec(X), Md.T @ X, rtol=1e-13)


def test_prebuilt_preconditioner_and_options():
    A = matrix("nonsym")
    mat = as_matrix(A, FUNC)
    P = ILU(mat, drop_tol=1e-2)
    assert make_preconditioner(P, mat, FUNC) is P
    Q = make_preconditioner(("ilu", {"drop_tol": 1e-2, "fill_factor": 2}), mat, FUNC)
    assert Q.options["drop_tol"] == 1e-2 and Q.options["fill_factor"] == 2
    R = make_preconditioner(("amg", {"symmetry": "nonsymmetric"}), mat, FUNC)
    assert not R.hermitian
    assert make_preconditioner(None, mat, FUNC) is None
    assert make_preconditioner("JACOBI", mat, FUNC).name == "jacobi"


# ---------------------------------------------------------------------------
# Bad input and failures
# ---------------------------------------------------------------------------


def test_unknown_name_lists_choices():
    mat = as_matrix(poisson(3), FUNC)
    with pytest.raises(ValueError, match=r"`sparsediff\.solve`: `M` must be None, one "
                                         r"of \('jacobi', 'ilu', 'amg'\).*got 'ssor'"):
        make_preconditioner("ssor", mat, FUNC)


def test_wrong_shapes():
    mat = as_matrix(poisson(3), FUNC)
    with pytest.raises(ValueError, match=r"shape of `A`, \(9, 9\); got \(8, 8\)"):
        make_preconditioner(sp.eye(8, format="csr"), mat, FUNC)
    with pytest.raises(ValueError, match=r"\(9, 9\); got \(9, 4\)"):
        make_preconditioner(np.ones((9, 4)), mat, FUNC)
    with pytest.raises(ValueError, match=r"\(9, 9\); got \(16, 16\)"):
        make_preconditioner(spla.aslinearoperator(np.eye(16)), mat, FUNC)
    other = Jacobi(as_matrix(poisson(4), FUNC))
    with pytest.raises(ValueError, match=r"shape of `A`, \(9, 9\); got \(16, 16\)"):
        make_preconditioner(other, mat, FUNC)
    P = make_preconditioner("jacobi", mat, FUNC)
    with pytest.raises(ValueError,
                       match=r"shape \(n,\) or \(n, m\) with n = 9; got \(8, 2\)"):
        P.matvec(np.ones((8, 2)))

    class Bad:
        shape = (9, 9)

        def matvec(self, x):
            return x[:3]

    with pytest.raises(ValueError, match=r"`matvec` must return shape \(9,\); got \(3,\)"):
        make_preconditioner(Bad(), mat, FUNC).matvec(np.ones(9))


def test_wrong_types():
    mat = as_matrix(poisson(3), FUNC)
    with pytest.raises(TypeError, match=r"`M` must be None.*got builtins\.int"):
        make_preconditioner(3, mat, FUNC)
    with pytest.raises(TypeError, match="LinearOperator"):
        make_preconditioner(lambda x: x, mat, FUNC)
    with pytest.raises(TypeError, match="bad option"):
        make_preconditioner(("ilu", {"bogus": 1}), mat, FUNC)
    with pytest.raises(TypeError, match="must be a dict"):
        make_preconditioner(("ilu", 1e-3), mat, FUNC)
    with pytest.raises(TypeError, match="numeric dtype"):
        make_preconditioner(np.eye(9, dtype=bool), mat, FUNC)
    with pytest.raises(ValueError, match="`symmetry` must be one of"):
        make_preconditioner(("amg", {"symmetry": "skew"}), mat, FUNC)


def test_nonfinite_inputs():
    A = poisson(3).astype(float)
    A.data[2] = np.nan
    mat = as_matrix(A, FUNC)
    for name in BUILTIN:
        with pytest.raises(NonFiniteInputError, match="`A`"):
            make_preconditioner(name, mat, FUNC)
    M = np.eye(9)
    M[1, 1] = np.inf
    with pytest.raises(NonFiniteInputError, match="`M`"):
        make_preconditioner(M, as_matrix(poisson(3), FUNC), FUNC)


@pytest.mark.parametrize("name", ["jacobi", "amg"])
def test_zero_diagonal_names_the_row(name):
    A = sp.csr_array(np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 0.0]]))
    A2 = poisson(3).tolil()
    A2[4, 4] = 0.0  # a stored zero on the diagonal
    for M, row in ((A, 2), (sp.csr_array(A2), 4)):
        with pytest.raises(SingularMatrixError,
                           match=rf"A\[{row}, {row}\] = 0 \(row {row}\)"):
            make_preconditioner(name, as_matrix(M, FUNC), FUNC)
    # the error is also a ValueError (LinAlgError derives from it)
    with pytest.raises(ValueError):
        make_preconditioner(name, as_matrix(A, FUNC), FUNC)


@pytest.mark.parametrize("A", [
    np.array([[1.0, 1.0], [1.0, 1.0]]),
    np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]]),
    sp.csr_array((3, 3)),
], ids=["rank1", "rank2", "empty-pattern"])
def test_ilu_zero_pivot_raises(A):
    with pytest.raises(SingularMatrixError, match="'ilu'"):
        make_preconditioner("ilu", as_matrix(A, FUNC), FUNC)


def test_ilu_needs_pivoting_is_fine(rng):
    A = np.array([[0.0, 1.0], [1.0, 0.0]])
    P = make_preconditioner("ilu", as_matrix(A, FUNC), FUNC)
    np.testing.assert_allclose(A @ P.matvec(np.eye(2)), np.eye(2))


@pytest.mark.parametrize("name", BUILTIN)
def test_empty_system(name):
    mat = as_matrix(sp.csr_array((0, 0)), FUNC)
    P = make_preconditioner(name, mat, FUNC)
    for op in (P.matvec, P.rmatvec, P.tmatvec):
        Y = op(np.zeros((0, 2)))
        assert Y.shape == (0, 2) and Y.dtype == np.float64


@pytest.mark.parametrize("name", BUILTIN)
def test_setup_time_and_repr(name):
    P = build(name, matrix("spd"))
    assert 0.0 <= P.setup_time < 60.0
    assert name in repr(P)
    op = P.aslinearoperator()
    x = np.ones(P.shape[0])
    np.testing.assert_array_equal(op.matvec(x), P.matvec(x))
    np.testing.assert_array_equal(op.rmatvec(x), P.rmatvec(x))


def test_user_preconditioner_class_directly():
    P = UserPreconditioner(np.eye(4) * 2.0, 4)
    np.testing.assert_array_equal(P.matvec(np.ones(4)), np.full(4, 2.0))


def test_user_hermitian_promise_complex(rng):
    """A complex operator declared Hermitian: Mᴴ = M and Mᵀ = conj(M conj(·))."""
    n = 16
    G = rand(rng, (n, n))
    H = G + G.conj().T

    class Op:
        shape = (n, n)
        hermitian = True

        def matvec(self, x):
            return H @ x

    P = make_preconditioner(Op(), as_matrix(poisson(4), FUNC), FUNC)
    X = rand(rng, (n, 2))
    np.testing.assert_allclose(P.rmatvec(X), H @ X, rtol=1e-13)
    np.testing.assert_allclose(P.tmatvec(X), H.T @ X, rtol=1e-13)


def test_amg_setup_is_reproducible_and_keeps_global_random_state(rng):
    A = matrix("nonsym")
    np.random.seed(123)  # noqa: NPY002 - the caller's legacy global state
    expected = np.random.rand(3)  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    P1 = build("amg", A)
    P2 = build("amg", A)
    np.testing.assert_array_equal(np.random.rand(3), expected)  # noqa: NPY002
    X = rng.standard_normal((A.shape[0], 2))
    np.testing.assert_array_equal(P1.matvec(X), P2.matvec(X))
