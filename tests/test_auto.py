"""``method="auto"``: the size threshold and the choice by symmetry."""

import numpy as np
import pytest
import scipy.sparse as sp

import sparsediff as sd
import sparsediff.solvers as solvers


@pytest.fixture
def rng():
    return np.random.default_rng(99)


def _poisson2d(k):
    p = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(k, k))
    eye = sp.eye(k)
    return (sp.kron(p, eye) + sp.kron(eye, p)).tocsr()


def _convection(k, peclet=0.5):
    p = sp.diags([-1.0 - peclet, 2.0, -1.0 + peclet], [-1, 0, 1], shape=(k, k))
    eye = sp.eye(k)
    return (sp.kron(p, eye) + sp.kron(eye, p)).tocsr()


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(solvers, "AUTO_DIRECT_MAX_N", 10)
    monkeypatch.setattr(solvers, "AUTO_DIRECT_MAX_N_SPD", 10)


def test_direct_below_threshold(rng):
    A = _poisson2d(8)
    sol = sd.solve(A, rng.standard_normal(64))
    assert sol.info.method == "direct"
    assert solvers.AUTO_DIRECT_MAX_N_SPD >= 10_000
    assert solvers.AUTO_DIRECT_MAX_N >= solvers.AUTO_DIRECT_MAX_N_SPD


def _available(name):
    import sparsediff.precond as pc

    return name in getattr(pc, "PRECONDITIONERS", {})


@pytest.mark.usefixtures("small_threshold")
@pytest.mark.parametrize("kind, expect", [
    ("spd", "cg+amg"), ("herm-indef", "minres"), ("nonsym", "gmres+ilu"),
])
def test_choice_above_threshold(kind, expect, rng):
    need = expect.partition("+")[2]
    if need and not _available(need):
        pytest.skip(f"{need} not available")
    A = {"spd": _poisson2d(8),
         "herm-indef": (_poisson2d(8) - 0.5 * sp.eye(64)).tocsr() * -1,
         "nonsym": _convection(8)}[kind]
    b = rng.standard_normal(64)
    solver = sd.Solver(A, rtol=1e-10)
    assert solver.method == expect
    sol = solver.solve(b)
    assert sol.info.converged and sol.info.method == expect
    np.testing.assert_allclose(A @ sol.x, b, atol=1e-8 * np.linalg.norm(b))
    g = rng.standard_normal(64)
    _, grad_b = sol.vjp(g)
    np.testing.assert_allclose(grad_b, np.linalg.solve(A.toarray().T, g), rtol=1e-7)


@pytest.mark.usefixtures("small_threshold")
def test_auto_with_preconditioner(rng):
    if not _available("jacobi"):
        pytest.skip("jacobi not available")
    assert sd.Solver(_poisson2d(8), M="jacobi").method == "cg+jacobi"
    assert sd.Solver(_convection(8), M="jacobi").method == "gmres+jacobi"


def test_auto_with_preconditioner_iterates_at_any_size():
    if not _available("jacobi"):
        pytest.skip("jacobi not available")
    assert sd.Solver(_poisson2d(4), M="jacobi").method == "cg+jacobi"


def test_auto_rejects_options():
    with pytest.raises(ValueError, match="takes no options"):
        sd.Solver(_poisson2d(4), method=("auto", {"restart": 3}))


def test_spd_iterates_earlier_than_the_rest(monkeypatch):
    """Between the two thresholds: CG + AMG for the SPD heuristic, direct else."""
    if not _available("amg"):
        pytest.skip("amg not available")
    monkeypatch.setattr(solvers, "AUTO_DIRECT_MAX_N_SPD", 10)
    monkeypatch.setattr(solvers, "AUTO_DIRECT_MAX_N", 1000)
    assert sd.Solver(_poisson2d(8)).method == "cg+amg"
    assert sd.Solver(_convection(8)).method == "direct"
    herm_indef = (_poisson2d(8) - 0.5 * sp.eye(64)).tocsr() * -1
    assert sd.Solver(herm_indef).method == "direct"


def test_2d_spd_with_cholmod_stays_direct_to_a_million_unknowns():
    """Measured (benchmarks/results_direct.md, `--iterative-2d`): on 2-D
    Poisson, CHOLMOD's setup + forward + gradient beats CG + AMG at 512², 768²
    and 1024² (n = 1,048,576), so ``auto`` keeps a 2-D Hermitian matrix with
    CHOLMOD direct up to there (it went CG + AMG past 300,000 before), while a
    3-D graph of the same kind past ``AUTO_CHOLMOD_MAX_N_3D`` still iterates."""
    import sparsediff.solvers.direct as direct
    from sparsediff._validation import as_matrix
    from sparsediff.backend import get_backend

    def validated(A):
        A = sp.csr_array(A)
        return as_matrix(A, "test", backend=get_backend(A, func="test"))

    mat = validated(_poisson2d(600))          # n = 360,000: past the old 300,000
    if "cholmod" not in mat.backend.direct_libraries():
        pytest.skip("CHOLMOD is not installed (pip install sparsediff[direct])")
    assert direct.AUTO_CHOLMOD_MAX_N_2D >= 1024 ** 2
    assert solvers._auto_class(mat, None) is solvers.DirectEngine
    k = 30                                              # 3-D, n = 27,000
    p = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(k, k))
    eye = sp.eye(k)
    A3 = sp.kron(sp.kron(p, eye), eye) + sp.kron(sp.kron(eye, p), eye) \
        + sp.kron(sp.kron(eye, eye), p)
    assert solvers._auto_class(validated(A3), None) is not solvers.DirectEngine
