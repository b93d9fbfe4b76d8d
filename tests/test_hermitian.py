"""Hermitian to rounding: assembled matrices, the tolerance, gradients, `auto`.

Matrices from real codes are Hermitian only to rounding (duplicates summed in
storage order, element contributions added in different orders). They must
be accepted by CG, MINRES, AMG and ``method="auto"``; the refusal of a truly
non-Hermitian matrix reports the measured asymmetry; and gradients stay exact
for the matrix as given (the adjoint solve applies Aᴴ of that matrix).
"""

import numpy as np
import pytest
import scipy.sparse as sp

import sparsediff as sd
from sparsediff._symmetry import HERMITIAN_RTOL_ULPS, measure_symmetry
from sparsediff._validation import as_matrix

EPS = np.finfo(np.float64).eps


def _fem_laplacian(rng, nx=12, reverse_transpose=True):
    """P1 stiffness matrix of a perturbed triangulated square, assembled as COO.

    Element contributions to (i, j) come in element order, those to (j, i) in
    reverse element order, so their sums round differently: the matrix is
    symmetric only to rounding, as in finite-element codes.
    """
    xs, ys = np.meshgrid(np.linspace(0, 1, nx), np.linspace(0, 1, nx))
    pts = np.column_stack([xs.ravel(), ys.ravel()])
    interior = (pts > 0).all(1) & (pts < 1).all(1)
    pts[interior] += 0.2 / nx * rng.uniform(-1, 1, (interior.sum(), 2))
    tris = []
    for j in range(nx - 1):
        for i in range(nx - 1):
            a, b, c, d = j * nx + i, j * nx + i + 1, (j + 1) * nx + i, (j + 1) * nx + i + 1
            tris += [(a, b, d), (a, d, c)]
    upper, lower, diag = [], [], []
    for t in tris:
        P = pts[list(t)]
        G = np.linalg.inv(np.column_stack([np.ones(3), P]))[1:]  # gradients of P1
        area = 0.5 * abs(np.linalg.det(np.column_stack([np.ones(3), P])))
        # a coefficient sampled at three quadrature points, each point's
        # contribution added on its own (as quadrature loops do)
        for w in rng.uniform(0.5, 2.0, 3) / 3:
            K = w * area * (G.T @ G)
            for p in range(3):
                diag.append((t[p], t[p], K[p, p]))
                for q in range(p + 1, 3):
                    upper.append((t[p], t[q], K[p, q]))
                    lower.append((t[q], t[p], K[q, p]))
    if reverse_transpose:
        lower = lower[::-1]
    entries = diag + upper + lower
    n = nx * nx
    r, c, v = (np.array(z) for z in zip(*entries))
    A = sp.coo_array((v, (r.astype(np.int64), c.astype(np.int64))), shape=(n, n))
    A = A.tocsr()  # duplicates summed in storage order
    # Dirichlet on the boundary by a shifted diagonal keeps it SPD
    A = A + sp.diags_array(np.where(interior, 0.0, 1.0), format="csr")
    return sp.csr_array(A)


def _perturb_upper(A, ulps):
    """``A`` with its strictly upper entries moved by ``ulps`` relative ulps."""
    A = sp.csr_array(A, copy=True)
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    up = A.indices > rows
    A.data[up] *= 1.0 + ulps * EPS
    return A


def _poisson2d(m):
    T = sp.diags_array([-np.ones(m - 1), 2 * np.ones(m), -np.ones(m - 1)],
                       offsets=[-1, 0, 1])
    return sp.csr_array(sp.kronsum(T, T, format="csr"))


def test_assembled_matrix_is_symmetric_only_to_rounding(rng):
    A = _fem_laplacian(rng)
    assert abs(A - A.T).max() > 0          # the premise: not bitwise symmetric
    sym = as_matrix(A, "test").symmetry
    assert not sym.exact
    assert sym.hermitian
    assert sym.asymmetry < 10 * EPS


@pytest.mark.parametrize("method,M", [("cg", None), ("cg", "jacobi"), ("cg", "amg"),
                                      ("minres", None), ("minres", "jacobi")])
def test_cg_minres_accept_assembled_matrix(rng, method, M):
    A = _fem_laplacian(rng)
    b = rng.standard_normal(A.shape[0])
    sol = sd.solve(A, b, method=method, M=M, rtol=1e-10)
    assert sol.info.converged
    assert np.linalg.norm(A @ sol.x - b) <= 1e-10 * np.linalg.norm(b) * 1.0001
    x_ref = np.linalg.solve(A.toarray(), b)
    assert np.allclose(sol.x, x_ref, rtol=1e-7, atol=1e-9 * np.abs(x_ref).max())


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_complex_gram_matrix_is_hermitian(rng, dtype):
    """``C Cᴴ`` is Hermitian bitwise or not depending on the BLAS kernel."""
    C = (rng.standard_normal((30, 30)) + 1j * rng.standard_normal((30, 30)))
    D = (C @ C.conj().T + 30 * np.eye(30)).astype(dtype)
    # make the rounding asymmetry certain, whatever the BLAS did
    D[0, 1] *= 1 + 2 * np.finfo(dtype).eps
    A = sp.csr_array(D)
    b = (rng.standard_normal(30) + 1j * rng.standard_normal(30)).astype(dtype)
    for method, M in [("cg", None), ("cg", "jacobi"), ("minres", "jacobi")]:
        rtol = 1e-5 if dtype == np.complex64 else 1e-10
        sol = sd.solve(A, b, method=method, M=M, rtol=rtol)
        assert sol.info.converged, (method, M)


def test_refusal_reports_measured_asymmetry(rng):
    A = sp.csr_array(np.array([[4.0, 1.0, 0.0], [1.5, 4.0, 1.0], [0.0, 1.0, 4.0]]))
    with pytest.raises(ValueError, match=r"method='cg' needs a Hermitian.*"
                       r"max \|a_ij − conj\(a_ji\)\| / sqrt\(r_i·r_j\) = 0\.125 at "
                       r"\(i, j\) = \((0, 1|1, 0)\).*tolerance 2\.22e-14.*method='gmres'"):
        sd.solve(A, np.ones(3), method="cg")
    with pytest.raises(ValueError, match="method='minres' needs a Hermitian"):
        sd.Solver(A, method="minres")


def test_tolerance_edges():
    """Just inside the tolerance is Hermitian, just outside is not."""
    D = np.array([[2.0, -1.0], [-1.0, 2.0]])
    for ulps, expect in [(1, True), (HERMITIAN_RTOL_ULPS // 2, True),
                         (3 * HERMITIAN_RTOL_ULPS, False)]:
        E = D.copy()
        E[0, 1] = -1.0 - ulps * EPS
        sym = as_matrix(sp.csr_array(E), "test").symmetry
        assert sym.hermitian is expect, (ulps, sym)


def test_badly_scaled_matrix_is_judged_per_row():
    """A max|A|-relative test would call this Hermitian; its small block is not."""
    D = np.zeros((4, 4))
    D[:2, :2] = [[1e10, 1.0], [1.0, 1e10]]
    D[2:, 2:] = [[1e-10, 5e-11], [3e-11, 1e-10]]  # 40 % asymmetric
    sym = as_matrix(sp.csr_array(D), "test").symmetry
    assert np.max(np.abs(D - D.T)) <= 1e-14 * np.max(np.abs(D))  # normwise: "symmetric"
    assert not sym.hermitian
    assert sym.where in [(2, 3), (3, 2)]
    with pytest.raises(ValueError, match="not Hermitian to rounding"):
        sd.solve(sp.csr_array(D), np.ones(4), method="cg")


@pytest.mark.parametrize("scale", [1e-30, 1e-16, 1.0, 1e16, 1e30])
def test_verdict_is_scale_invariant(rng, scale):
    A = _fem_laplacian(rng, nx=6)
    assert as_matrix(scale * A, "test").symmetry.hermitian
    N = sp.csr_array(A.toarray() + np.triu(0.01 * np.ones(A.shape), 1) * (A.toarray() != 0))
    assert not as_matrix(scale * N, "test").symmetry.hermitian


def test_float32_tolerance():
    D = np.array([[2.0, -1.0], [-1.0, 2.0]], dtype=np.float32)
    D[0, 1] = np.float32(-1.0) * (1 + 4 * np.finfo(np.float32).eps)
    assert D[0, 1] != D[1, 0]
    assert as_matrix(sp.csr_array(D), "test").symmetry.hermitian
    sym = as_matrix(sp.csr_array(D), "test").symmetry
    assert sym.tol == pytest.approx(HERMITIAN_RTOL_ULPS * np.finfo(np.float32).eps)


def test_symmetry_measure_matches_dense_definition(rng):
    D = rng.standard_normal((7, 7)) * (rng.random((7, 7)) < 0.5)
    np.fill_diagonal(D, 5.0)
    A = sp.csr_array(D)
    sym = measure_symmetry(A.indptr, A.indices, A.data, A.shape)
    r = np.abs(D).max(axis=1)
    ratio = np.abs(D - D.T) / np.sqrt(np.outer(r, r))
    assert sym.asymmetry == pytest.approx(ratio.max())
    assert ratio[sym.where] == pytest.approx(ratio.max())


# ---------------------------------------------------------------------------
# gradients are exact for the matrix as given
# ---------------------------------------------------------------------------


def _near_hermitian_problem(rng, m=14, ulps=40):
    """SPD Poisson made asymmetric by ``ulps`` in its upper part (κ ≈ 100)."""
    A = _perturb_upper(_poisson2d(m), ulps)
    assert as_matrix(A, "test").symmetry.hermitian
    assert not as_matrix(A, "test").symmetry.exact
    n = A.shape[0]
    return A, rng.standard_normal(n), rng.standard_normal(n)


@pytest.mark.parametrize("method,M", [("cg", None), ("cg", "jacobi"), ("cg", "amg"),
                                      ("minres", None)])
def test_adjoint_solve_applies_the_conjugate_transpose_as_given(rng, method, M):
    """λ solves Aᴴ λ = g for the given A, not A λ = g (which differs here)."""
    A, b, g = _near_hermitian_problem(rng, ulps=90)
    sol = sd.solve(A, b, method=method, M=M, rtol=1e-14)
    grad_A, lam = sol.vjp(g)
    AT = A.T.tocsr()
    # A λ = g and Aᵀ λ = g differ at the level ‖A − Aᵀ‖ ‖λ‖ ≈ 1e-14·‖A‖‖λ‖;
    # the adjoint residual must be small for the transpose of the given A
    res_T = np.linalg.norm(AT @ lam - g) / np.linalg.norm(g)
    assert res_T <= 2e-14
    ref = sd.solve(A, b, method="direct")
    grad_ref, lam_ref = ref.vjp(g)
    assert np.allclose(lam, lam_ref, rtol=0, atol=1e-11 * np.abs(lam_ref).max())
    assert np.allclose(grad_A.data, grad_ref.data, rtol=0,
                       atol=1e-11 * np.abs(grad_ref.data).max())


@pytest.mark.parametrize("trans", ["T", "H"])
def test_transposed_solves_use_the_transpose_as_given(rng, trans):
    A, b, _ = _near_hermitian_problem(rng, ulps=90)
    x = sd.Solver(A, method="cg", M="jacobi", rtol=1e-14).solve(b, trans=trans).x
    assert np.linalg.norm(A.T @ x - b) <= 2e-14 * np.linalg.norm(b)


def test_gradient_finite_differences_and_dot_product(rng):
    A, b, g = _near_hermitian_problem(rng, m=8)
    solver = sd.Solver(A, method="cg", M="amg", rtol=1e-13)
    sol = solver.solve(b)
    grad_A, grad_b = sol.vjp(g)
    dA = rng.standard_normal(A.nnz)
    db = rng.standard_normal(A.shape[0])
    h = 1e-6

    def loss(data, bb):
        return g @ sd.solve(sp.csr_array((data, A.indices, A.indptr), shape=A.shape),
                            bb, method="direct").x

    fd = (loss(A.data + h * dA, b + h * db) - loss(A.data - h * dA, b - h * db)) / (2 * h)
    an = grad_A.data @ dA + grad_b @ db
    assert abs(fd - an) <= 1e-7 * abs(an)
    # dot-product test: ⟨J u, v⟩ = ⟨u, Jᵀ v⟩
    dx = sol.jvp(dA, db)
    assert abs(g @ dx - an) <= 1e-10 * abs(an)


# ---------------------------------------------------------------------------
# method="auto" on assembled matrices, and after `update`
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_spd():
    """2-D Poisson above the direct-solver threshold, symmetric to rounding."""
    A = _perturb_upper(_poisson2d(180), 3)   # n = 32,400 > 30,000
    assert A.shape[0] > sd.solvers.AUTO_DIRECT_MAX_N_SPD
    return A


def test_auto_picks_cg_amg_for_matrix_symmetric_to_rounding(big_spd):
    solver = sd.Solver(big_spd)
    assert solver.method == "cg+amg"


def test_auto_rechooses_on_update(big_spd, rng):
    A = big_spd
    solver = sd.Solver(A, rtol=1e-10)
    assert solver.method == "cg+amg"
    # non-symmetric values on the same pattern: CG no longer applies
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    data = A.data.copy()
    data[A.indices > rows] *= 0.7
    N = sp.csr_array((data, A.indices, A.indptr), shape=A.shape)
    solver.update(data)
    assert solver.method == "direct"
    b = rng.standard_normal(A.shape[0])
    sol = solver.solve(b)
    assert np.linalg.norm(N @ sol.x - b) <= 1e-10 * np.linalg.norm(b)
    _, lam = sol.vjp(b)
    assert np.linalg.norm(N.T @ lam - b) <= 1e-10 * np.linalg.norm(b)
    # SPD values again: back to CG + AMG
    solver.update(2.0 * A.data)
    assert solver.method == "cg+amg"
    sol = solver.solve(b)
    assert np.linalg.norm(2.0 * (A @ sol.x) - b) <= 1e-10 * np.linalg.norm(b) * 1.001


def test_auto_keeps_engine_when_method_still_applies(big_spd):
    solver = sd.Solver(big_spd)
    engine = solver._state.engine
    solver.update(1.5 * big_spd.data)
    new = solver._state.engine
    assert type(new) is type(engine) and new is not engine
    assert solver.method == "cg+amg"


def test_explicit_method_update_says_what_to_do(rng):
    A = _poisson2d(6)
    solver = sd.Solver(A, method="cg")
    data = A.data.copy()
    data[0:2] *= 1.5  # row 0 changes, its transposed entries do not
    with pytest.raises(ValueError, match=r"`Solver.update`: method='cg' needs a "
                       r"Hermitian.*max \|a_ij.*build a new Solver with "
                       r"method='gmres'.*method='auto' re-chooses"):
        solver.update(data)
    # the refused update left the solver as it was
    b = rng.standard_normal(A.shape[0])
    assert np.allclose(A @ solver.solve(b).x, b, atol=1e-7 * np.linalg.norm(b))


def test_check_cli_on_large_spd_matrix(big_spd, tmp_path, capsys):
    """`sparsediff check` above 30,000 unknowns (auto: CG + AMG) runs to the end."""
    import scipy.io

    from sparsediff.cli import main

    path = tmp_path / "poisson.mtx"
    scipy.io.mmwrite(str(path), sp.coo_matrix(big_spd))
    status = main(["check", str(path)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "cg" in out
