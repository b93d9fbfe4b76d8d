"""The helpers the engines and preconditioners share, each written once.

``backend._csr.diagonal`` (diagonal without a row-index array),
``_dtypes.real_dtype``, ``_symmetry.is_exactly_hermitian`` (the bitwise test
for operators applied as given, beside the to-rounding test on ``A``) and the
matrix-free entry body of ``solvers._krylov``.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from sparsediff._dtypes import is_complex, real_dtype
from sparsediff._symmetry import is_exactly_hermitian, measure_symmetry
from sparsediff._validation import as_matrix
from sparsediff.backend._csr import diagonal
from sparsediff.precond import UserPreconditioner
from sparsediff.solvers.bicgstab import bicgstab
from sparsediff.solvers.cg import CGEngine, cg
from sparsediff.solvers.gmres import gmres
from sparsediff.solvers.minres import minres


def _random_csr(rng, n, dtype, density=0.3):
    A = sp.random(n, n, density=density, random_state=rng, format="csr")
    if np.dtype(dtype).kind == "c":
        A = A + 1j * sp.random(n, n, density=density, random_state=rng, format="csr")
    return sp.csr_array(A.astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_diagonal_matches_dense(rng, dtype):
    # random patterns leave some diagonal entries unstored: they read as 0
    A = _random_csr(rng, 17, dtype)
    mat = as_matrix(A, "t", "A")
    d = diagonal(mat)
    assert d.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(d, A.toarray().diagonal())
    assert (d == 0).any() and (d != 0).any()


def test_diagonal_builds_no_row_index_array(rng):
    # the diagonal (and the engines' positive-diagonal test, which used to
    # build and cache MatrixInput.rows) reads the CSR arrays only
    n = 30
    A = sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(n, n), format="csr")
    mat = as_matrix(A, "t", "A")
    diagonal(mat)
    assert mat._rows is None
    engine = CGEngine(mat, None, func="t")
    assert engine.positive_diagonal
    assert mat._rows is None


@pytest.mark.parametrize("dtype, real", [(np.float32, np.float32), (np.float64, np.float64),
                                         (np.complex64, np.float32),
                                         (np.complex128, np.float64)])
def test_real_dtype(dtype, real):
    assert real_dtype(dtype) == np.dtype(real)
    assert real_dtype(np.dtype(dtype)) == np.dtype(real)
    assert is_complex(dtype) == (np.dtype(dtype).kind == "c")


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_exact_and_rounding_hermitian_tests(rng, dtype):
    B = _random_csr(rng, 12, dtype) + sp.eye(12, dtype=dtype, format="csr")
    H = sp.csr_array(B + B.conj().T)
    assert is_exactly_hermitian(H)
    assert is_exactly_hermitian(H.toarray())
    # one entry one ulp off: Hermitian to rounding (the rule for A), not exactly
    P = H.copy()
    k = np.flatnonzero(P.indices != np.repeat(np.arange(12), np.diff(P.indptr)))[0]
    P.data[k] = np.nextafter(P.data[k].real, np.inf) + 1j * P.data[k].imag \
        if np.iscomplexobj(P.data) else np.nextafter(P.data[k], np.inf)
    sym = measure_symmetry(P.indptr, P.indices, P.data, P.shape)
    assert sym.hermitian and not sym.exact
    assert not is_exactly_hermitian(P)
    assert not is_exactly_hermitian(P.toarray())
    # explicit zeros do not count
    Z = H.copy()
    Z.data[Z.indices == 0] = 0
    Z = sp.csr_array(Z)
    assert is_exactly_hermitian(Z) == is_exactly_hermitian(Z.toarray())


def test_user_matrix_preconditioner_needs_exact_hermitian(rng):
    # a caller's M declared Hermitian is applied as M for Mᴴ: only a bitwise
    # Hermitian matrix may be, one Hermitian to rounding keeps its own adjoint
    n = 10
    B = rng.standard_normal((n, n))
    M = B @ B.T + n * np.eye(n)
    M = (M + M.T) / 2
    assert UserPreconditioner(M, n).hermitian
    assert UserPreconditioner(sp.csr_array(M), n).hermitian
    P = M.copy()
    P[0, 1] = np.nextafter(P[0, 1], np.inf)
    user = UserPreconditioner(P, n)
    assert not user.hermitian
    X = rng.standard_normal((n, 2))
    np.testing.assert_array_equal(user.rmatvec(X), P.T @ X)


class _Op:
    def __init__(self, A):
        self.A, self.shape, self.dtype = A, A.shape, A.dtype

    def matvec(self, X):
        return self.A @ X


@pytest.mark.parametrize("entry", [cg, minres, gmres, bicgstab])
def test_matrix_free_entry_points_share_checks(rng, entry):
    n = 8
    A = np.diag(np.arange(1.0, n + 1))
    op = _Op(A)
    name = entry.__name__
    with pytest.raises(ValueError,
                       match=rf"`{name}`: `b` must have shape \(n, m\) with n = 8"):
        entry(op, np.ones((7, 1)))
    with pytest.raises(ValueError, match=rf"`{name}`: `rtol` and `atol` must be >= 0"):
        entry(op, np.ones((n, 1)), rtol=-1.0)
    with pytest.raises(ValueError, match=rf"`{name}`: `x0` must have the shape of `b`"):
        entry(op, np.ones((n, 1)), x0=np.ones(n))
    with pytest.raises(ValueError,
                       match=rf"`{name}`: `M` must have the shape of the operator"):
        entry(op, np.ones((n, 1)), M=_Op(np.eye(n - 1)))
    b = rng.standard_normal((n, 2))
    x, info = entry(op, b, rtol=1e-12, M=_Op(np.diag(1.0 / np.arange(1.0, n + 1))))
    assert info.converged
    assert info.method == name + "+user"
    np.testing.assert_allclose(A @ x, b, rtol=1e-10, atol=1e-12)
